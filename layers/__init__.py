"""Recurrent layers: the Elman cell and its fused sequence layer."""

from layers.elman_cell import ElmanCell

__all__ = ["ElmanCell"]

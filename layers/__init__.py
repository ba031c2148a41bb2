"""Recurrent layers: the Elman cell and its sequence layer."""

from layers.elman_cell import ElmanCell
from layers.elman_rnn import ElmanRNN

__all__ = ["ElmanCell", "ElmanRNN"]

"""Recurrent layers: the Elman cell, its sequence layer and its
bidirectional wrapper."""

from layers.bidirectional import Bidirectional
from layers.elman_cell import ElmanCell
from layers.elman_rnn import ElmanRNN

__all__ = ["Bidirectional", "ElmanCell", "ElmanRNN"]

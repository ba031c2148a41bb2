"""Recurrent layers: the Elman cell, its sequence layer and its bidirectional wrapper."""

from layers.elman_bidirectional import ElmanBidirectional
from layers.elman_cell import ElmanCell
from layers.elman_rnn import ElmanRNN

__all__ = ["ElmanBidirectional", "ElmanCell", "ElmanRNN"]

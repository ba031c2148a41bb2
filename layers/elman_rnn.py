"""`ElmanRNN`: the sequence layer for `ElmanCell`.

PLACEHOLDER until the fused path lands (issue 6): for now every call takes
Keras' step loop, and `fused_reason` says so.
"""

import keras

from layers.elman_cell import ElmanCell


@keras.saving.register_keras_serializable(package="rnn_pipeline")
class ElmanRNN(keras.layers.RNN):
    """`keras.layers.RNN` for one `ElmanCell`; same arguments and outputs."""

    def __init__(self, cell, **kwargs):
        if not isinstance(cell, ElmanCell):
            raise TypeError(
                "Received an invalid value for argument `cell`, expected an "
                f"ElmanCell, got {type(cell).__name__}."
            )
        super().__init__(cell, **kwargs)

    @property
    def fused_reason(self):
        """Why the fused path is not taken (None when it is)."""
        return "the fused path is not implemented yet"

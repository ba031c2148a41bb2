"""`LogProbabilities`: the CTC output head's log-softmax, which ends the mask."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="rnn_pipeline")
class LogProbabilities(keras.layers.Layer):
    """Log-softmax over the last axis that stops the Keras mask here.

    CTC reads the true lengths (`frame_length`), never a mask; a mask
    reaching Keras' loss machinery is multiplied into the per-utterance CTC
    loss and fails on shape. This layer accepts the mask of the recurrent
    layers before it and attaches none to its output.

    Call arguments:
        inputs: Logits of shape `(batch, time, classes)`.

    Returns:
        Log-probabilities, shape `(batch, time, classes)`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return ops.log_softmax(inputs, axis=-1)

    def compute_mask(self, inputs, previous_mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return input_shape

"""`FrameStacking`: shorten a feature sequence by stacking neighbouring frames."""

import numbers

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="rnn_pipeline")
class FrameStacking(keras.layers.Layer):
    """Concatenate every `stack` consecutive frames into one, with stride `stack`.

    A 10 ms hop gives 100 frames per second, far more than the ~15
    characters per second of speech; stacking 3 frames (30 ms per step)
    divides the recurrent steps, and so the training time, by 3 while every
    input value still reaches the model. Frames past each utterance's length
    are zeroed and the sequence is zero-padded at the end to a multiple of
    `stack`, so the result does not depend on how much padding the batch
    had. The layer also returns the new lengths
    (`ceil(feature_length / stack)`) and the matching boolean mask, to pass
    to the recurrent layers so they skip the padding (the backward direction
    of a bidirectional layer then starts at each utterance's true last
    frame, not in the padding).

    Args:
        stack: Positive integer, frames per output step. 1 leaves the
            frames as they are (still zeroing the padding).

    Call arguments:
        inputs: `[features, feature_length]`: features of shape
            `(batch, time, features)` and the true lengths, int
            `(batch,)`.

    Returns:
        `[stacked, stacked_length, mask]`: float `(batch, steps,
        features * stack)` with `steps = ceil(time / stack)`, int32
        `(batch,)`, and bool `(batch, steps)`.

    Example:

    ```python
    import numpy as np
    x = np.arange(2 * 5 * 1, dtype="float32").reshape(2, 5, 1)
    stacked, length, mask = FrameStacking(2)([x, np.array([5, 3], "int32")])
    # stacked.shape == (2, 3, 2); length == [3, 2]
    # stacked[1] == [[5, 6], [7, 0], [0, 0]]
    ```
    """

    def __init__(self, stack, **kwargs):
        if (
            isinstance(stack, bool)
            or not isinstance(stack, numbers.Integral)
            or stack <= 0
        ):
            raise ValueError(
                "Received an invalid value for argument `stack`, expected a "
                f"positive integer, got {stack!r}."
            )
        super().__init__(**kwargs)
        self.stack = int(stack)

    def call(self, inputs):
        features, feature_length = inputs
        feature_length = ops.cast(feature_length, "int32")
        batch = ops.shape(features)[0]
        time = ops.shape(features)[1]
        num_features = features.shape[-1]
        frame_mask = ops.arange(time, dtype="int32")[None, :] < feature_length[:, None]
        features = ops.where(frame_mask[:, :, None], features, ops.zeros_like(features))
        stacked_length = (feature_length + self.stack - 1) // self.stack
        if self.stack > 1:
            padding = (-time) % self.stack
            features = ops.pad(features, [[0, 0], [0, padding], [0, 0]])
            features = ops.reshape(
                features,
                (batch, (time + padding) // self.stack, num_features * self.stack),
            )
        steps = ops.shape(features)[1]
        mask = ops.arange(steps, dtype="int32")[None, :] < stacked_length[:, None]
        return [features, stacked_length, mask]

    def get_config(self):
        return {**super().get_config(), "stack": self.stack}

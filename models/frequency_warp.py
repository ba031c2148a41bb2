"""`FrequencyWarp`: random frequency-axis stretching of mel features (training only)."""

import numbers

import keras
from keras import ops


def warp_bands(features, alpha):
    """Stretch the band axis of `features` by `alpha`, one factor per utterance.

    Band `j` of the result is the value at position `j * alpha` of the
    input (linear interpolation between the two neighbouring bands, the top
    band repeated past the end): alpha > 1 moves formants down the band
    axis, alpha < 1 moves them up, 1 is the identity.

    Args:
        features: `(batch, time, bands)`.
        alpha: `(batch, 1)` float, the factor of each utterance.

    Returns:
        The warped features, same shape and dtype.
    """
    bands = features.shape[-1]
    position = ops.clip(
        ops.arange(bands, dtype="float32")[None, :] * ops.cast(alpha, "float32"),
        0.0, bands - 1.0,
    )  # (batch, bands)
    lower = ops.floor(position)
    weight = position - lower
    lower = ops.cast(lower, "int32")
    upper = ops.minimum(lower + 1, bands - 1)
    # The interpolation as one batched product with a (bands x bands)
    # matrix per utterance: about 3x faster on CPU than gathering the two
    # neighbours (`take_along_axis` on the whole feature tensor).
    matrix = (
        ops.one_hot(lower, bands) * (1.0 - weight)[..., None]
        + ops.one_hot(upper, bands) * weight[..., None]
    )  # (batch, output band, input band)
    return ops.einsum("btf,bgf->btg", features, ops.cast(matrix, features.dtype))


@keras.saving.register_keras_serializable(package="rnn_pipeline")
class FrequencyWarp(keras.layers.Layer):
    """Stretch or squeeze the mel axis by a random factor per utterance.

    Speakers differ most in vocal tract length, which scales formant
    frequencies by up to ~20%; on (log-)mel features that is roughly a
    stretch of the band axis. During training each utterance's band `j`
    takes the value at position `j * alpha` (linear interpolation, the top
    band repeated past the end), `alpha` drawn uniformly from
    `[1 - max_warp, 1 + max_warp]`: vocal tract length perturbation
    (Jaitly & Hinton, 2013) done on the features, so the cached features
    need no recomputation. At inference (and in an export) the layer is the
    identity.

    Args:
        max_warp: Float in [0, 0.5), the largest relative stretch. 0 turns
            the layer off.
        seed: Optional integer seed.

    Call arguments:
        inputs: Features `(batch, time, bands)` with bands on a
            frequency (mel) scale.
        training: Python boolean; the warp is applied only when True.

    Returns:
        Features of the same shape.
    """

    def __init__(self, max_warp=0.1, seed=None, **kwargs):
        if (
            isinstance(max_warp, bool)
            or not isinstance(max_warp, numbers.Real)
            or not 0.0 <= max_warp < 0.5
        ):
            raise ValueError(
                "Received an invalid value for argument `max_warp`, expected a "
                f"float in [0, 0.5), got {max_warp!r}."
            )
        super().__init__(**kwargs)
        self.max_warp = float(max_warp)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if not training or self.max_warp == 0.0:
            return inputs
        batch = ops.shape(inputs)[0]
        alpha = keras.random.uniform(
            (batch, 1),
            minval=1.0 - self.max_warp,
            maxval=1.0 + self.max_warp,
            seed=self.seed_generator,
        )
        return warp_bands(inputs, alpha)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_warp": self.max_warp, "seed": self.seed}

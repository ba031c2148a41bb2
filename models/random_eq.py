"""`RandomEQ`: a random smooth gain curve over the mel axis (training only)."""

import math
import numbers

import keras
from keras import ops


def eq_basis(bands, orders):
    """`(orders, bands)`: the cosines `cos(pi * k * (j + 0.5) / bands)`, k = 1..orders.

    The smooth shapes a gain curve over the band axis is made of: k = 1 is
    a tilt (more treble, less bass), k = 2 a bowl, k = 3 an S. The constant
    (k = 0) is left out: a level change is what per-utterance normalisation
    removes anyway.
    """
    k = ops.arange(1, orders + 1, dtype="float32")[:, None]
    j = ops.arange(bands, dtype="float32")[None, :]
    return ops.cos(math.pi * k * (j + 0.5) / bands)


@keras.saving.register_keras_serializable(package="rnn_pipeline")
class RandomEQ(keras.layers.Layer):
    """Add a random smooth gain curve over the mel axis to each utterance.

    A recording channel (microphone, room, telephone line, mains hum, a
    quiet or noisy background) colours the whole utterance with one
    frequency response, which on log-mel features is a curve added to every
    frame. A model trained on a few speakers, each recorded on one channel,
    can learn the channel as part of the voice. During training each
    utterance gets `sum_k a_k cos(pi * k * (j + 0.5) / bands)` added to
    band `j` of every frame, `k = 1..orders`, each `a_k` drawn uniformly
    from `[-max_gain, max_gain]` (in the features' units: after
    per-utterance normalisation, standard deviations). At inference (and in
    an export) the layer is the identity.

    With per-band normalisation (`--normalisation utterance`) a fixed curve
    is removed before the model sees it, so the layer is meant for one
    mean and variance per utterance (`utterance_scalar`) or none.

    Args:
        max_gain: Float >= 0, the largest amplitude of each cosine. 0 turns
            the layer off.
        orders: Positive integer, how many cosines (3: tilt, bowl, S).
        seed: Optional integer seed.

    Call arguments:
        inputs: Features `(batch, time, bands)` with bands on a frequency
            (mel) scale.
        training: Python boolean; the curve is added only when True.

    Returns:
        Features of the same shape.
    """

    def __init__(self, max_gain=0.3, orders=3, seed=None, **kwargs):
        if (
            isinstance(max_gain, bool)
            or not isinstance(max_gain, numbers.Real)
            or not 0.0 <= max_gain < math.inf
        ):
            raise ValueError(
                "Received an invalid value for argument `max_gain`, expected a "
                f"finite float >= 0, got {max_gain!r}."
            )
        if isinstance(orders, bool) or not isinstance(orders, numbers.Integral) or orders < 1:
            raise ValueError(
                "Received an invalid value for argument `orders`, expected a "
                f"positive integer, got {orders!r}."
            )
        super().__init__(**kwargs)
        self.max_gain = float(max_gain)
        self.orders = int(orders)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if not training or self.max_gain == 0.0:
            return inputs
        batch = ops.shape(inputs)[0]
        gains = keras.random.uniform(
            (batch, 1, self.orders),
            minval=-self.max_gain,
            maxval=self.max_gain,
            seed=self.seed_generator,
        )
        curve = ops.einsum("bok,kf->bof", gains, eq_basis(inputs.shape[-1], self.orders))
        return inputs + ops.cast(curve, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "max_gain": self.max_gain,
            "orders": self.orders,
            "seed": self.seed,
        }

"""SpecAugment-style masking of time and frequency bands, for training only."""

import tensorflow as tf


def spec_augment(
    features,
    seed,
    *,
    frequency_masks=2,
    max_frequency_width=None,
    time_masks=2,
    max_time_fraction=0.05,
    max_time_width=20,
):
    """Zero random bands of features (zero is the mean after normalisation).

    Park et al. 2019, without time warping. Each mask draws its width
    uniformly from `[0, max]` and its start uniformly; everything is a
    stateless function of `seed`, so a pipeline is reproducible.

    Args:
        features: `(frames, n_features)` float32 tensor.
        seed: `(2,)` int32/int64 tensor, the stateless random seed.
        frequency_masks: Number of frequency masks.
        max_frequency_width: Widest frequency mask; `None` means
            `n_features // 8`.
        time_masks: Number of time masks.
        max_time_fraction: Widest time mask as a share of the frames.
        max_time_width: Widest time mask in frames.

    Returns:
        `(frames, n_features)` float32 tensor, masked.
    """
    features = tf.convert_to_tensor(features, tf.float32)
    seed = tf.cast(seed, tf.int64)
    frames = tf.shape(features)[0]
    n_features = tf.shape(features)[1]
    if max_frequency_width is None:
        max_frequency_width = n_features // 8
    max_frequency_width = tf.cast(max_frequency_width, tf.int32)
    max_time = tf.minimum(
        tf.cast(tf.cast(frames, tf.float32) * max_time_fraction, tf.int32), max_time_width
    )

    def band(size, max_width, mask_seed):
        draws = tf.random.stateless_uniform([2], seed=mask_seed)
        width = tf.cast(draws[0] * tf.cast(max_width + 1, tf.float32), tf.int32)
        width = tf.minimum(width, size)
        start = tf.cast(draws[1] * tf.cast(size - width + 1, tf.float32), tf.int32)
        positions = tf.range(size)
        return (positions >= start) & (positions < start + width)

    keep = tf.ones_like(features, dtype=tf.bool)
    for index in range(frequency_masks):
        mask_seed = tf.stack([seed[0], seed[1] + 2 * index])
        keep &= ~band(n_features, max_frequency_width, mask_seed)[tf.newaxis, :]
    for index in range(time_masks):
        mask_seed = tf.stack([seed[0], seed[1] + 2 * index + 1 + 1000])
        keep &= ~band(frames, max_time, mask_seed)[:, tf.newaxis]
    return tf.where(keep, features, tf.zeros_like(features))

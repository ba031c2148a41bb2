"""SpecAugment-style masking of time and frequency bands, for training only."""

import tensorflow as tf


def spec_augment(
    features,
    feature_length,
    seed,
    *,
    frequency_masks=2,
    max_frequency_width=None,
    time_masks=2,
    max_time_fraction=0.05,
    max_time_width=20,
    fill="zero",
):
    """Mask random bands of a padded batch with zero (the mean after normalisation) or each utterance's mean.

    Park et al. 2019, without time warping. Each utterance gets its own masks:
    every mask draws its width uniformly from `[0, max]` and its start
    uniformly within the utterance's valid frames (time) or features
    (frequency). Everything is a stateless function of `seed`, so a pipeline
    is reproducible. Works on whole batches: a few vectorised ops per batch.

    Args:
        features: `(batch, time, n_features)` float32, padded.
        feature_length: `(batch,)` int32, valid frames of each utterance.
        seed: `(2,)` integer tensor, the stateless random seed.
        frequency_masks: Frequency masks per utterance.
        max_frequency_width: Widest frequency mask; `None` means
            `n_features // 8`.
        time_masks: Time masks per utterance.
        max_time_fraction: Widest time mask as a share of the utterance.
        max_time_width: Widest time mask in frames.
        fill: `"zero"` (features normalised per utterance: zero is their
            mean) or `"mean"`, each utterance's mean over its valid frames
            and all features (features left unnormalised, where zero would
            be an arbitrary level: log-mel energy 1). Padding stays zero.

    Returns:
        `(batch, time, n_features)` float32, masked.
    """
    if fill not in ("zero", "mean"):
        raise ValueError(f"Received an invalid value for argument `fill`, expected 'zero' or 'mean', got {fill!r}.")
    features = tf.convert_to_tensor(features, tf.float32)
    lengths = tf.cast(feature_length, tf.float32)
    shape = tf.shape(features)
    batch, time, n_features = shape[0], shape[1], shape[2]
    if max_frequency_width is None:
        max_frequency_width = n_features // 8
    max_frequency = tf.cast(max_frequency_width, tf.float32)
    max_time = tf.minimum(tf.floor(lengths * max_time_fraction), float(max_time_width))  # (batch,)
    draws = tf.random.stateless_uniform(
        [4, batch, max(frequency_masks, time_masks, 1)], seed=tf.cast(seed, tf.int64)
    )

    def bands(width_draw, start_draw, max_width, size, positions):
        # width_draw, start_draw: (batch, masks); max_width, size: (batch, 1) or scalars
        width = tf.minimum(tf.floor(width_draw * (max_width + 1.0)), size)
        start = tf.floor(start_draw * (size - width + 1.0))
        positions = positions[tf.newaxis, tf.newaxis, :]
        inside = (positions >= start[..., tf.newaxis]) & (positions < (start + width)[..., tf.newaxis])
        return tf.reduce_any(inside, axis=1)  # (batch, size)

    frequency = timeline = None
    if frequency_masks:
        frequency = bands(
            draws[0, :, :frequency_masks], draws[1, :, :frequency_masks], max_frequency,
            tf.cast(n_features, tf.float32), tf.range(n_features, dtype=tf.float32),
        )
    if time_masks:
        timeline = bands(
            draws[2, :, :time_masks], draws[3, :, :time_masks], max_time[:, tf.newaxis],
            lengths[:, tf.newaxis], tf.range(time, dtype=tf.float32),
        )
    if fill == "zero":
        # Two small keep masks multiplied in: no (batch, time, n_features) mask is built.
        if frequency is not None:
            features = features * tf.cast(~frequency, features.dtype)[:, tf.newaxis, :]
        if timeline is not None:
            features = features * tf.cast(~timeline, features.dtype)[:, :, tf.newaxis]
        return features
    valid = tf.sequence_mask(feature_length, time, dtype=features.dtype)  # (batch, time)
    mean = tf.reduce_sum(features * valid[:, :, tf.newaxis], axis=[1, 2]) / tf.maximum(
        lengths * tf.cast(n_features, tf.float32), 1.0)
    masked = tf.zeros_like(features, tf.bool)
    if frequency is not None:
        masked |= frequency[:, tf.newaxis, :]
    if timeline is not None:
        masked |= timeline[:, :, tf.newaxis]
    masked &= valid[:, :, tf.newaxis] > 0  # padding stays zero
    return tf.where(masked, mean[:, tf.newaxis, tf.newaxis], features)

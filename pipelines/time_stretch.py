"""Tempo augmentation: slow whole training batches down along time.

Speakers differ in speaking rate as much as in voice: a model trained on
fast speakers meets a slow one as something new (on FSDD, lucas' digits
last 0.50 s on average after trimming silence, the other speakers' 0.35 to
0.49 s; stretching did not lower his error rate in the one run made, see the
README). Kaldi's
speed perturbation answers this with resampled copies of the audio; here the
cached features are stretched instead, so nothing is recomputed and the
cache stays one copy.

A whole batch shares one factor, drawn from a few fixed values, so the
padded shapes stay few (the fused recurrent loops compile once per shape).
Factors are at least 1: slowing down never leaves an utterance with fewer
frames than its transcript needs for CTC, speeding up could.
"""

import tensorflow as tf

# Factors 1, 1 + s/3, 1 + 2s/3, 1 + s for a largest stretch s.
STRETCH_CHOICES = 4


def stretch_factors(max_stretch, choices=STRETCH_CHOICES):
    """The factors a batch may be stretched by, for a largest stretch `max_stretch`."""
    if max_stretch == 0:
        return [1.0]
    return [1.0 + max_stretch * k / (choices - 1) for k in range(choices)]


def time_stretch(features, feature_length, factor):
    """Stretch a padded batch along time by `factor` >= 1 (linear interpolation).

    Output frame `j` samples the input at `(j + 0.5) / factor - 0.5` (frame
    centres, as `tf.image.resize` does), interpolating between neighbours;
    each utterance keeps only the output frames whose sample point lies in
    its own valid frames, so padding never leaks in. The sample points
    follow `factor` exactly, not the padded length's ratio
    `ceil(time * factor) / time` (which a resize to the new length would
    use), so an utterance is stretched the same whatever its batch's
    padding.

    Args:
        features: `(batch, time, n_features)` float32, padded.
        feature_length: `(batch,)` int, valid frames of each utterance.
        factor: Scalar float >= 1.

    Returns:
        `(features, feature_length)`: `(batch, ceil(time * factor),
        n_features)` float32 with frames past each new length zero, and the
        new lengths `floor((length - 0.5) * factor - 0.5) + 1` (equal to the
        old ones for factor 1), in `feature_length`'s dtype.
    """
    features = tf.convert_to_tensor(features, tf.float32)
    factor = tf.cast(factor, tf.float32)
    shape = tf.shape(features)
    time = shape[1]
    new_time = tf.cast(tf.math.ceil(tf.cast(time, tf.float32) * factor - 1e-4), tf.int32)
    # Linear interpolation at the sample points of `factor` itself: a resize
    # to `new_time` frames would scale by `new_time / time` instead.
    position = (tf.cast(tf.range(new_time), tf.float32) + 0.5) / factor - 0.5
    position = tf.clip_by_value(position, 0.0, tf.cast(tf.maximum(time - 1, 0), tf.float32))
    lower = tf.floor(position)
    weight = (position - lower)[tf.newaxis, :, tf.newaxis]
    lower = tf.cast(lower, tf.int32)
    upper = tf.minimum(lower + 1, tf.maximum(time - 1, 0))
    stretched = (
        tf.gather(features, lower, axis=1) * (1.0 - weight) + tf.gather(features, upper, axis=1) * weight
    )
    stretched.set_shape([features.shape[0], None, features.shape[2]])  # models need the feature size
    lengths = tf.cast(feature_length, tf.float32)
    new_length = tf.floor((lengths - 0.5) * factor - 0.5 + 1e-4) + 1.0
    new_length = tf.clip_by_value(new_length, 0.0, tf.cast(new_time, tf.float32))
    new_length = tf.where(lengths > 0, new_length, 0.0)
    keep = tf.sequence_mask(tf.cast(new_length, tf.int32), new_time, dtype=tf.float32)
    return stretched * keep[..., tf.newaxis], tf.cast(new_length, feature_length.dtype)


_STRETCH_STREAM = 0x5712E7C4  # folded into the batch seeds SpecAugment reads too


def stretch_batches(dataset, max_stretch, seed):
    """`dataset` of `({"features", "feature_length", ...}, labels)` batches, each
    stretched by a factor drawn (per batch, reproducibly from `seed`) from
    `stretch_factors(max_stretch)`. Labels are unchanged.

    The training pipeline's SpecAugment draws its masks from the same
    `Dataset.random(seed)` stream, one pair a batch: the stretch folds its
    own constant into each pair, so its choice is not drawn from the bits
    that set the batch's masks."""
    factors = tf.constant(stretch_factors(max_stretch), tf.float32)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def stretch(element, batch_seed):
        inputs, labels = element
        own_seed = tf.random.experimental.stateless_fold_in(tf.cast(batch_seed, tf.int64), _STRETCH_STREAM)
        choice = tf.random.stateless_uniform(
            [], seed=own_seed, maxval=len(stretch_factors(max_stretch)), dtype=tf.int32
        )
        features, lengths = time_stretch(inputs["features"], inputs["feature_length"], factors[choice])
        return {**inputs, "features": features, "feature_length": lengths}, labels

    stretched = tf.data.Dataset.zip((dataset, seeds)).map(
        stretch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if dataset.cardinality() >= 0:
        stretched = stretched.apply(tf.data.experimental.assert_cardinality(dataset.cardinality()))
    return stretched

"""Feeding `Model.fit` one iterator for the whole run."""

import tensorflow as tf


def repeat_epochs(dataset):
    """`dataset` repeated without end, and its batches per epoch.

    Given a finite dataset, Keras' `fit` creates a new iterator at the start
    of every epoch: tf.data rewrites and instantiates the pipeline again
    (about 0.1 s for the speech pipeline) and the first batch of the epoch
    is read while the model waits, its prefetch buffer being empty. With
    `fit(dataset.repeat(), steps_per_epoch=n)` Keras keeps one iterator, and
    an outer prefetch reads the next epoch's first batches while the last
    ones train. Shuffling and SpecAugment's seeds inside `dataset` still
    change every epoch (`reshuffle_each_iteration`, `rerandomize_each_iteration`).
    On the short FSDD clips (73 steps of ~30 ms an epoch) this is a quarter
    of the epoch time; see `benchmarks.feature_speed`.

    Args:
        dataset: A `tf.data.Dataset`.

    Returns:
        `(repeated, steps_per_epoch)` for `fit(repeated,
        steps_per_epoch=steps_per_epoch)`; `(dataset, None)` unchanged when
        the number of batches is not known up front (for example batches
        sampled from several datasets until one runs out), so that Keras
        finds the end of an epoch by running out of data.
    """
    batches = int(dataset.cardinality())
    if batches <= 0:  # unknown (-2), infinite (-1) or empty (0)
        return dataset, None
    return dataset.repeat().prefetch(tf.data.AUTOTUNE), batches

"""Feeding `Model.fit` one iterator for the whole run."""

import tensorflow as tf


def without_autotuning(dataset):
    """`dataset` with tf.data's autotuning off (the options pass on to datasets made from it).

    An iterator with autotuning owns a thread (`tf_data_model`) that re-tunes
    the pipeline at intervals growing with the iterator's age, up to a
    minute; freeing the iterator waits for it, and while both cores train
    that wait lasted 25-49 s when `fit` returned (see `repeat_epochs`) and
    up to two minutes for iterators freed later by Python's garbage
    collector (`py-spy` in the test suite: `RootDataset::Iterator::~Iterator`
    in the middle of unrelated work). Without autotuning the parallel `map`s
    keep tf.data's initial parallelism (one call per core) and no thread is
    waited for.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


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

    The repeated dataset runs without tf.data's autotuning: when `fit`
    returned, freeing that one iterator waited 25-49 s for tf.data's
    autotuning thread in three of four 12-minute default jobs (`py-spy`:
    `RootDataset::Iterator::~Iterator`), time counted as training. Without it
    the parallel `map`s keep tf.data's initial parallelism; two default
    jobs returned at once (`train_seconds` 699.7 and 707.3 of 720) and their
    steps took as long (87-94 ms against 88-93).

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
    return without_autotuning(dataset.repeat().prefetch(tf.data.AUTOTUNE)), batches

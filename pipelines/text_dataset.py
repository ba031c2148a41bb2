"""Character windows for language modelling, as a `tf.data.Dataset`."""

import numbers

import numpy as np
import tensorflow as tf

from pipelines.epochs import without_autotuning


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"positive integer, got {value!r}."
        )


def text_window_dataset(
    ids,
    *,
    sequence_length,
    batch_size,
    shuffle=False,
    seed=None,
    drop_remainder=False,
):
    """Batches of `(input ids, next-character ids)` windows cut from `ids`.

    The ids are cut into non-overlapping windows of `sequence_length + 1`
    characters that start every `sequence_length` characters (so each
    character is predicted exactly once); a window's inputs are its first
    `sequence_length` ids and its labels the last `sequence_length`. The
    window indices are shuffled (reshuffled each epoch), windows are sliced
    by a parallel map, then batched, then prefetched.

    Args:
        ids: 1-D integer ids of the text (a list, NumPy array or tensor),
            e.g. `vocabulary.encode(text)`.
        sequence_length: Positive integer, steps per window.
        batch_size: Positive integer, windows per batch.
        shuffle: Whether to shuffle the windows (training) or keep text
            order (validation).
        seed: Optional integer seed of the shuffle, for repeatable runs.
        drop_remainder: Whether to drop the last, smaller batch.

    Returns:
        A `tf.data.Dataset` of `(inputs, labels)`, both int32 of shape
        `(batch, sequence_length)`.

    Raises:
        ValueError: when `ids` is shorter than one window.

    Example:

    ```python
    ds = text_window_dataset(vocab.encode(text), sequence_length=100, batch_size=64)
    inputs, labels = next(iter(ds))  # (64, 100), (64, 100)
    ```
    """
    _check_positive_int("sequence_length", sequence_length)
    _check_positive_int("batch_size", batch_size)
    ids = np.asarray(ids, dtype=np.int32)
    if ids.ndim != 1:
        raise ValueError(
            "Received an invalid value for argument `ids`, expected a 1-D "
            f"sequence of ids, got shape {ids.shape}."
        )
    num_windows = (len(ids) - 1) // sequence_length
    if num_windows < 1:
        raise ValueError(
            f"Received {len(ids)} ids, expected at least sequence_length + 1 = "
            f"{sequence_length + 1} to make one window."
        )
    if drop_remainder and num_windows < batch_size:
        raise ValueError(
            f"Received {len(ids)} ids: {num_windows} windows of sequence_length="
            f"{sequence_length} do not fill one batch of batch_size={batch_size}, "
            "and drop_remainder=True would leave no batch; expected a smaller "
            "batch size or drop_remainder=False."
        )
    all_ids = tf.constant(ids)

    def window(index):
        start = tf.cast(index, tf.int32) * sequence_length
        chunk = all_ids[start:start + sequence_length + 1]
        return chunk[:-1], chunk[1:]

    dataset = tf.data.Dataset.range(num_windows)
    if shuffle:
        dataset = dataset.shuffle(num_windows, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(window, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return without_autotuning(dataset.prefetch(tf.data.AUTOTUNE))

"""Validation loss of a language model that reads long stretches of text."""

import numbers

import keras
import numpy as np


def long_context_loss(model, ids, *, num_chunks=16, batch_size=4):
    """Mean loss, in nats per character, of `model` predicting `ids` with long context.

    Training windows start from a zero state, so their first characters are
    predicted with almost no context (and cost the most). Here the text is
    cut into `num_chunks` contiguous chunks, each read in one pass from its
    start, so every character but the few at each chunk's start sees all
    the text before it in the chunk: the usual way a language model's bits
    per character are reported.

    Args:
        model: A model mapping ids `(batch, time)` to logits
            `(batch, time, vocabulary_size)`.
        ids: 1-D integer ids of the text (e.g. the validation split).
        num_chunks: Positive integer, how many contiguous chunks to cut.
        batch_size: Positive integer, chunks per model call (bounds memory).

    Returns:
        The mean negative log-likelihood of ids[1:] given what precedes each
        in its chunk, a Python float (divide by ln 2 for bits per character).
    """
    for name, value in (("num_chunks", num_chunks), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise ValueError(
                f"Received an invalid value for argument `{name}`, expected a "
                f"positive integer, got {value!r}."
            )
    ids = np.asarray(ids, dtype=np.int32)
    length = (len(ids) - 1) // num_chunks
    if length < 1:
        raise ValueError(
            f"Received {len(ids)} ids, expected at least num_chunks + 1 = "
            f"{num_chunks + 1} to cut {num_chunks} chunks."
        )
    inputs = ids[: num_chunks * length].reshape(num_chunks, length)
    labels = ids[1 : num_chunks * length + 1].reshape(num_chunks, length)
    total = 0.0
    for start in range(0, num_chunks, batch_size):
        logits = model(inputs[start : start + batch_size], training=False)
        log_probs = keras.ops.convert_to_numpy(keras.ops.log_softmax(logits, axis=-1))
        picked = np.take_along_axis(log_probs, labels[start : start + batch_size, :, None], axis=-1)
        total -= float(picked.astype(np.float64).sum())
    return total / labels.size

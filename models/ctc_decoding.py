"""CTC decoding to strings: greedy or beam search (`ctc_decode_text`), and the
choice among known texts (`ctc_choose_text`, closed vocabulary)."""

import numbers

import numpy as np
from keras import ops

from models.candidates import check_candidates

STRATEGIES = ("greedy", "beam_search")


def ctc_decode_text(
    log_probs, frame_length, *, vocabulary, strategy="greedy", beam_width=16
):
    """Decode CTC outputs to text with `keras.ops.ctc_decode`.

    Greedy decoding takes the best class per frame, merges repeats, then
    drops blanks ("aa-ab" -> "aab" where "-" is the blank). Beam search keeps
    the `beam_width` most probable label prefixes, summing over the
    alignments of each, and returns the best one. The blank id and the
    characters come from `vocabulary`. Runs of spaces in the result collapse
    to one and the ends are stripped, the form of the normalised transcripts.

    Args:
        log_probs: float `(batch, frames, classes)`, log-probabilities or
            logits.
        frame_length: int `(batch,)`, the valid frames of each utterance.
        vocabulary: The `Vocabulary` the model was trained with.
        strategy: "greedy" or "beam_search".
        beam_width: Positive integer, beams kept by "beam_search".

    Returns:
        A list of `batch` strings.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            "Received an invalid value for argument `strategy`, expected one "
            f"of {STRATEGIES}, got {strategy!r}."
        )
    if isinstance(beam_width, bool) or not isinstance(beam_width, numbers.Integral) or beam_width <= 0:
        raise ValueError(
            "Received an invalid value for argument `beam_width`, expected a "
            f"positive integer, got {beam_width!r}."
        )
    log_probs = ops.convert_to_tensor(log_probs, "float32")
    if len(log_probs.shape) != 3 or log_probs.shape[-1] != vocabulary.size:
        raise ValueError(
            "Received an invalid value for argument `log_probs`, expected "
            f"shape (batch, frames, {vocabulary.size}) for this vocabulary, "
            f"got {tuple(log_probs.shape)}."
        )
    frame_length = ops.convert_to_tensor(frame_length, "int32")
    decoded, _ = ops.ctc_decode(
        log_probs,
        frame_length,
        strategy=strategy,
        beam_width=beam_width,
        top_paths=1,
        merge_repeated=True,
        mask_index=vocabulary.blank_id,
    )
    best = np.asarray(ops.convert_to_numpy(decoded[0]))
    return [" ".join(vocabulary.decode(row[row >= 0]).split()) for row in best]


def candidate_labels(candidates, *, vocabulary):
    """int32 `(len(candidates), longest)`: the candidates' ids, padded with the pad id."""
    encoded = [vocabulary.encode(text) for text in candidates]
    labels = np.full((len(encoded), max(len(e) for e in encoded)), vocabulary.pad_id, np.int32)
    for row, ids in enumerate(encoded):
        labels[row, : len(ids)] = ids
    return labels


def candidate_nll(log_probs, frame_length, labels, *, vocabulary):
    """CTC negative log-likelihood of every candidate for every utterance.

    Keras ops only, so it runs eagerly and inside a traced graph (the export
    decodes with it, `serving.transcription_export`).

    Args:
        log_probs: float `(batch, frames, classes)`, log-probabilities or
            logits.
        frame_length: int `(batch,)`, the valid frames of each utterance.
        labels: int `(count, longest)` from `candidate_labels`.
        vocabulary: The `Vocabulary` the model was trained with.

    Returns:
        float32 `(batch, count)`: the summed-over-alignments NLL (the
        training loss) of each candidate, inf where it cannot fit the
        utterance's frames.
    """
    from models.ctc_loss import ctc_feasible, ctc_loss

    labels = ops.convert_to_tensor(labels, "int32")
    log_probs = ops.convert_to_tensor(log_probs, "float32")
    frame_length = ops.cast(ops.convert_to_tensor(frame_length), "int32")
    batch, count = ops.shape(log_probs)[0], labels.shape[0]
    # Every (utterance, candidate) pair in one call: utterance-major rows.
    pair_labels = ops.tile(labels, (batch, 1))
    pair_frames = ops.repeat(frame_length, count, axis=0)
    loss = ctc_loss(pair_labels, ops.repeat(log_probs, count, axis=0), pair_frames, vocabulary=vocabulary)
    _, feasible = ctc_feasible(pair_labels, pair_frames, vocabulary=vocabulary)
    scores = ops.where(feasible, ops.cast(loss, "float32"), float("inf"))
    return ops.reshape(scores, (batch, count))


def ctc_choose_text(log_probs, frame_length, candidates, *, vocabulary):
    """Closed-vocabulary decoding: each utterance's most likely candidate text.

    For isolated words or a fixed set of phrases (digits, commands), the
    answer is one of `candidates`: each is scored by its CTC likelihood
    given the utterance's outputs (the sum over all its alignments, the
    training loss), and the best is returned. Spelling slips that greedy
    decoding makes ("fivet", "ove") cannot occur; a candidate longer than
    the utterance's frames allow is never chosen.

    Args:
        log_probs: float `(batch, frames, classes)`, log-probabilities or
            logits.
        frame_length: int `(batch,)`, the valid frames of each utterance.
        candidates: Non-empty sequence of distinct, non-empty texts in the
            vocabulary's characters (normalised transcripts).
        vocabulary: The `Vocabulary` the model was trained with.

    Returns:
        `(texts, scores)`: a list of `batch` candidates ("" for an
        utterance too short for every candidate) and a float array
        `(batch, len(candidates))` of their negative log-likelihoods (inf
        where a candidate cannot fit the utterance).
    """
    candidates = check_candidates(candidates, vocabulary=vocabulary)
    labels = candidate_labels(candidates, vocabulary=vocabulary)
    scores = np.asarray(ops.convert_to_numpy(candidate_nll(log_probs, frame_length, labels, vocabulary=vocabulary)))
    return choose_candidates(scores, candidates), scores


def choose_candidates(scores, candidates):
    """The lowest-scoring candidate of each row of `scores` `(batch, count)`, "" where all are inf."""
    best = np.argmin(scores, axis=1)
    return [candidates[i] if np.isfinite(scores[row, i]) else "" for row, i in enumerate(best)]


def mean_over_warps(scores):
    """Candidate NLLs `(warps, batch, count)` -> `-log(mean_w exp(-NLL_w))`, `(batch, count)`.

    The NLL of a candidate's mean likelihood over test-time warps of the
    features (`serving.transcription_export`'s `candidate_warps`). Keras ops,
    so it runs eagerly and in a traced graph; inf (the candidate cannot fit
    the frames, the same for every warp) stays inf.
    """
    scores = ops.convert_to_tensor(scores, "float32")
    count = ops.cast(ops.shape(scores)[0], "float32")
    return -ops.logsumexp(-scores, axis=0) + ops.log(count)



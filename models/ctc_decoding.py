"""`ctc_decode_text`: greedy or beam-search CTC decoding to strings."""

import numbers

import numpy as np
from keras import ops

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

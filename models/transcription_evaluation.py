"""`evaluate_transcription`: decode a labelled dataset and score it."""

import numpy as np

from models.ctc_decoding import ctc_decode_text
from models.error_rates import error_rates


def evaluate_transcription(
    model,
    dataset,
    *,
    vocabulary,
    strategy="greedy",
    beam_width=16,
    max_batches=None,
):
    """Transcribe every utterance of `dataset` and compute CER and WER.

    Args:
        model: A transcription model mapping `{"features", "feature_length"}`
            to `{"log_probs", "frame_length"}`.
        dataset: Batches of `({"features": (batch, frames, n_features),
            "feature_length": (batch,)}, labels (batch, max_label_length))`,
            labels padded with `vocabulary.pad_id`.
        vocabulary: The `Vocabulary` of the labels and the model.
        strategy: "greedy" or "beam_search" (see `ctc_decode_text`).
        beam_width: Beams for "beam_search".
        max_batches: Score only the first batches, or None for all.

    Returns:
        `{"cer", "wer", "references", "hypotheses", "utterances"}`.
    """
    references, hypotheses = [], []
    for index, (inputs, labels) in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        outputs = model.predict_on_batch(inputs)
        hypotheses.extend(
            ctc_decode_text(
                outputs["log_probs"],
                outputs["frame_length"],
                vocabulary=vocabulary,
                strategy=strategy,
                beam_width=beam_width,
            )
        )
        references.extend(vocabulary.decode(row) for row in np.asarray(labels))
    if not references:
        raise ValueError(
            "Received an empty `dataset`, expected at least one batch of "
            "labelled utterances to evaluate."
        )
    rates = error_rates(references, hypotheses)
    return {
        **rates,
        "references": references,
        "hypotheses": hypotheses,
        "utterances": len(references),
    }

"""`evaluate_transcription`: decode a labelled dataset and score it (`evaluate_closed_vocabulary`:
choosing among known texts; `score_decodings`: any decoding)."""

import weakref

import numpy as np

from models.ctc_decoding import ctc_decode_text
from models.error_rates import error_rates


_REPLICA_SAFE_CALLS = weakref.WeakKeyDictionary()


def outputs_function(model):
    """`inputs -> outputs` (NumPy) of `model` at inference, whatever strategy built it.

    `predict_on_batch` under a `tf.distribute` strategy of several replicas
    (`train.py --distribute mirrored`) runs the whole batch on every replica
    and concatenates the copies; the model called in a `tf.function`
    (reading each variable's primary copy) does not.
    """
    if model.distribute_strategy.num_replicas_in_sync == 1:
        return model.predict_on_batch
    import tensorflow as tf

    call = _REPLICA_SAFE_CALLS.get(model)  # one traced function per model, while the model lives
    if call is None:
        held = weakref.ref(model)  # a strong reference in the value would keep the key alive
        call = _REPLICA_SAFE_CALLS[model] = tf.function(
            lambda inputs: held()(inputs, training=False), reduce_retracing=True
        )
    return lambda inputs: tf.nest.map_structure(lambda value: value.numpy(), call(inputs))


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
    outputs_fn = outputs_function(model)

    def decode(inputs):
        outputs = outputs_fn(inputs)
        return {
            "text": ctc_decode_text(
                outputs["log_probs"],
                outputs["frame_length"],
                vocabulary=vocabulary,
                strategy=strategy,
                beam_width=beam_width,
            )
        }

    return score_decodings(decode, dataset, vocabulary=vocabulary, max_batches=max_batches)["text"]


def score_decodings(decode, dataset, *, vocabulary, max_batches=None):
    """CER and WER of one or more decodings of every utterance of `dataset`.

    Args:
        decode: Maps a batch's inputs to `{name: list of the batch's texts}`,
            one entry per decoding (greedy, beam search, a closed vocabulary).
        dataset: Labelled batches, as for `evaluate_transcription`.
        vocabulary: The `Vocabulary` of the labels.
        max_batches: Score only the first batches, or None for all.

    Returns:
        `{name: {"cer", "wer", "references", "hypotheses", "utterances"}}`.
    """
    references, hypotheses = [], {}
    for index, (inputs, labels) in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        for name, texts in decode(inputs).items():
            hypotheses.setdefault(name, []).extend(texts)
        references.extend(vocabulary.decode(row) for row in np.asarray(labels))
    if not references:
        raise ValueError(
            "Received an empty `dataset`, expected at least one batch of "
            "labelled utterances to evaluate."
        )
    return {
        name: {
            **error_rates(references, texts),
            "references": references,
            "hypotheses": texts,
            "utterances": len(references),
        }
        for name, texts in hypotheses.items()
    }


def closed_vocabulary_texts(outputs_fn, inputs, candidates, *, vocabulary, warps=None):
    """The closed-vocabulary choice for one batch of `inputs`, as an export with `candidates` decodes.

    Without `warps`, `ctc_choose_text` of the outputs; with them (mel-axis
    factors, `check_candidate_warps`), each candidate's mean likelihood
    over the features warped by each factor (`models.frequency_warp.warp_bands`),
    as the export's `candidate_warps` does.
    """
    from models.ctc_decoding import candidate_labels, candidate_nll, choose_candidates, ctc_choose_text
    from models.ctc_decoding import mean_over_warps

    if warps is None:
        outputs = outputs_fn(inputs)
        return ctc_choose_text(outputs["log_probs"], outputs["frame_length"], candidates, vocabulary=vocabulary)[0]
    from models.frequency_warp import warp_bands

    features = np.asarray(inputs["features"], "float32")
    labels = candidate_labels(candidates, vocabulary=vocabulary)
    scores = []
    for alpha in warps:
        warped = np.asarray(warp_bands(features, np.full((len(features), 1), alpha, "float32")))
        outputs = outputs_fn({**inputs, "features": warped})
        scores.append(candidate_nll(outputs["log_probs"], outputs["frame_length"], labels, vocabulary=vocabulary))
    return choose_candidates(np.asarray(mean_over_warps(np.stack(scores))), candidates)


def evaluate_closed_vocabulary(outputs_fn, dataset, candidates, *, vocabulary, warps=None):
    """CER and WER of closed-vocabulary decoding (`ctc_choose_text`) over `dataset`.

    Args:
        outputs_fn: Maps a batch's inputs to `{"log_probs", "frame_length"}`
            (a model's `predict_on_batch`, an ensemble's mean probability).
        dataset: Labelled batches, as for `evaluate_transcription`.
        candidates: The texts to choose among (`check_candidates`).
        vocabulary: The `Vocabulary` of the labels and the model.
        warps: Optional mel-axis factors: choose by the mean likelihood
            over the warped features (`closed_vocabulary_texts`).

    Returns:
        `{"cer", "wer", "references", "hypotheses", "utterances"}`; an
        utterance too short for every candidate has the hypothesis "".
    """
    def decode(inputs):
        return {"text": closed_vocabulary_texts(outputs_fn, inputs, candidates, vocabulary=vocabulary, warps=warps)}

    return score_decodings(decode, dataset, vocabulary=vocabulary)["text"]

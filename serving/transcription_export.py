"""SavedModel export of the CTC transcriber for TF Serving."""

import keras
import numpy as np
import tensorflow as tf

from layers.log_mel import LogMel
from pipelines.audio_loading import SILENCE_PEAK
from serving.export import write_saved_model_version
from serving.vocabulary_tables import VocabularyTables
from serving.warmup import warmup_waveform

# The log probability of every class but the blank in a silent utterance's
# log_probs: finite (JSON has no -inf), and exp() of it is 0 in float32.
SILENT_LOG_PROB = -1e9

ENSEMBLE_DECODING = (
    "ensemble of {members} models: log_probs is the log of the members' mean probability; text is the "
    "member greedy hypothesis (keras.ops.ctc_decode, blank id {blank}) with the lowest CTC negative "
    "log-likelihood summed over the members"
)
CLOSED_VOCABULARY_DECODING = (
    "closed vocabulary: text is the one of the {count} texts in `candidates` with the lowest CTC "
    "negative log-likelihood under {log_probs} (\"\" when none fits the utterance's frames)"
)
WARPED_DECODING = (
    "; the likelihood is the mean over the features' mel axis stretched by each of {warps} "
    "(models.frequency_warp.warp_bands, the training warp's interpolation); the served log_probs are "
    "those of the unwarped features"
)


def _outputs(model, features, feature_length):
    """`(log_probs, frame_length)` of a model with dict or tuple outputs."""
    outputs = model({"features": features, "feature_length": feature_length}, training=False)
    if isinstance(outputs, dict):
        if "log_probs" in outputs:
            log_probs = outputs["log_probs"]
        elif "logits" in outputs:
            log_probs = tf.nn.log_softmax(outputs["logits"])
        else:
            raise ValueError(
                f"Transcription model `{model.name}` outputs {sorted(outputs)}; "
                "expected 'log_probs' (or 'logits') and 'frame_length'."
            )
        frame_length = outputs["frame_length"]
    else:
        log_probs, frame_length = outputs
    return tf.cast(log_probs, tf.float32), tf.cast(frame_length, tf.int32)


def _ensemble_outputs(outputs):
    """`(member log_probs, log_probs, frame_length)` of an ensemble.

    `log_probs` is the log of the members' mean probability, for
    closed-vocabulary and language-model decoding; the members must give the
    same frame lengths (checked in the graph).
    """
    frame_length = outputs[0][1]
    checks = [
        tf.debugging.assert_equal(
            other, frame_length, message="the ensemble's members give different frame lengths"
        )
        for _, other in outputs[1:]
    ]
    with tf.control_dependencies(checks):
        frame_length = tf.identity(frame_length)
    member_log_probs = [log_probs for log_probs, _ in outputs]
    log_probs = tf.reduce_logsumexp(tf.stack(member_log_probs), axis=0) - tf.math.log(
        tf.cast(len(member_log_probs), tf.float32)
    )
    return member_log_probs, log_probs, frame_length


def check_batch_sizes(values, value_name, lengths, lengths_name, what):
    """An assertion (InvalidArgument in the SavedModel) that `lengths` has one entry per row of `values`.

    Without it a request with one `waveform` row and three `waveform_length`s
    is broadcast to three transcripts, and other mismatches fail deep in the
    graph with TensorFlow's shape messages. `what` names a row of `values`
    in the message, e.g. "waveform row".
    """
    rows, count = tf.shape(values)[0], tf.shape(lengths)[0]
    message = tf.strings.join([
        f"`{lengths_name}` has ", tf.strings.as_string(count), tf.where(count == 1, " row", " rows"),
        f" but `{value_name}` has ", tf.strings.as_string(rows), f": expected one length per {what}",
    ])
    return tf.debugging.Assert(tf.equal(rows, count), [message])


def check_finite(values, name, what):
    """An assertion (InvalidArgument) that every entry of `values` is finite, naming
    the first row that is not: a NaN or infinity would come back as NaN
    `log_probs` and an empty `text`, where training refuses such audio."""
    finite = tf.reduce_all(tf.math.is_finite(tf.reshape(values, [tf.shape(values)[0], -1])), axis=1)
    first = tf.reduce_min(tf.where(tf.logical_not(finite))[:, 0])  # only read when one row is not finite
    message = tf.strings.join([
        f"every `{name}` {what} must be finite (no NaN or infinity); row ", tf.strings.as_string(first), " is not",
    ])
    return tf.debugging.Assert(tf.reduce_all(finite), [message])


def greedy_ids(log_probs, frame_length, vocabulary):
    """Greedy CTC hypothesis ids `(batch, length)` int32, -1 past each one (`keras.ops.ctc_decode`)."""
    decoded, _ = keras.ops.ctc_decode(
        log_probs,
        frame_length,
        strategy="greedy",
        merge_repeated=True,
        mask_index=vocabulary.blank_id,
    )
    return tf.cast(decoded[0], tf.int32)


def ensemble_outputs(models, features, feature_length, vocabulary):
    """What an ensemble export serves, as tensors: `{"ids", "log_probs", "frame_length"}`.

    `ids` `(batch, length)` (padded with `vocabulary.pad_id`) is the sequence-level
    choice among the members' greedy hypotheses (`_ensemble_ids`),
    `log_probs` the log of the members' mean probability. The export's
    `text` is `ids` decoded; training scores an ensemble with this function
    too (`training.transcription_ensemble`), so the figures it reports are
    those of the export's decoding.
    """
    member_log_probs, log_probs, frame_length = _ensemble_outputs(
        [_outputs(model, features, feature_length) for model in models]
    )
    ids = _ensemble_ids(member_log_probs, frame_length, vocabulary)
    return {"ids": ids, "log_probs": log_probs, "frame_length": frame_length}


def _ensemble_ids(member_log_probs, frame_length, vocabulary):
    """The ensemble's hypothesis ids, `(batch, length)`, padded with `vocabulary.pad_id`.

    The members' CTC spikes need not fall on the same frames, so greedy
    decoding of their averaged probabilities is poor; instead each member's
    greedy hypothesis is scored by every member (its CTC negative
    log-likelihood, the training loss) and the hypothesis with the lowest
    sum wins: a sequence-level ensemble.
    """
    from models.ctc_loss import ctc_loss

    hypotheses = [greedy_ids(log_probs, frame_length, vocabulary) for log_probs in member_log_probs]
    width = tf.reduce_max([tf.shape(ids)[1] for ids in hypotheses])
    labels = tf.stack(
        [
            tf.pad(
                tf.where(ids < 0, vocabulary.pad_id, ids),
                [[0, 0], [0, width - tf.shape(ids)[1]]],
                constant_values=vocabulary.pad_id,
            )
            for ids in hypotheses
        ]
    )  # (members, batch, width)
    # A greedy path is one of its own alignments, so every hypothesis fits every member's
    # frames (same frame_length) and ctc_loss never takes its 0-for-infeasible branch here.
    cost = tf.stack(
        [
            tf.add_n([ctc_loss(hypothesis, log_probs, frame_length, vocabulary=vocabulary)
                      for log_probs in member_log_probs])
            for hypothesis in tf.unstack(labels, num=len(hypotheses))
        ],
        axis=1,
    )  # (batch, members)
    best = tf.argmin(cost, axis=1, output_type=tf.int32)
    return tf.gather_nd(labels, tf.stack([best, tf.range(tf.shape(best)[0])], axis=1))


def export_transcriber(
    model,
    vocabulary,
    feature_config,
    export_base,
    *,
    trained_on,
    metrics,
    config=None,
    model_name="transcriber",
    candidates=None,
    candidate_warps=None,
):
    """Export a CTC transcription model as the next TF Serving version.

    Writes `<export_base>/<model_name>/<version>/` (see
    `serving.export.write_saved_model_version`) with two signatures, both
    returning `text` string `(batch,)` (greedy CTC decoding, repeats merged,
    blanks dropped, spaces collapsed and stripped as `ctc_decode_text`
    does), `log_probs` float32 `(batch, frames, classes)` and `frame_length`
    int32 `(batch,)` (an empty batch, 0 rows, gives outputs of 0 rows):

    - `serving_default`: `waveform` float32 `(batch, samples)`, mono at
      `feature_config.sample_rate`, padded at the end, and `waveform_length`
      int32 `(batch,)`. The features are computed in the graph by
      `layers.log_mel.LogMel`, the tf.signal twin of
      `pipelines.audio_features.compute_features`. Lengths below `n_fft`
      samples or above the padded length are rejected (InvalidArgument), and
      so is a `waveform_length` whose rows are not the `waveform`'s.
      A silent utterance (peak amplitude below `SILENCE_PEAK`, the
      loader's threshold) has the text "" and `log_probs` that put every
      frame on the blank (0 for it, `SILENT_LOG_PROB` for the other
      classes): normalised, its features would be noise, which the model
      reads as letters.
      An utterance of `n` samples has `1 + (n - n_fft) // hop_length`
      feature frames, which the model may shorten (frame stacking).
    - `from_features`: `features` float32 `(batch, frames, n_features)` and
      `feature_length` int32 `(batch,)`, features computed outside (lengths
      outside `[0, frames]`, or not one per `features` row, are rejected).

    Args:
        model: A Keras model taking `{"features", "feature_length"}` and
            returning `{"log_probs", "frame_length"}` (as
            `build_transcription_model` does; "logits" is accepted too), or
            a list of such models trained on the same features and
            vocabulary with the same frame stacking: an ensemble, packed
            into one SavedModel with the same signatures. Its `log_probs`
            are the log of the members' mean probability; its `text` is
            the member greedy hypothesis with the lowest CTC negative
            log-likelihood summed over the members (greedy decoding of the
            mean would be poor: the members' CTC spikes fall on different
            frames). A list of one exports that model alone.
        vocabulary: The `Vocabulary` the model was trained with; its blank id
            is the CTC blank.
        feature_config: The `FeatureConfig` the training features used.
        export_base: Directory holding one folder per model name.
        trained_on: What the model was trained on (a string or a dict, e.g.
            the dataset spec and utterance counts), stored in the metadata.
        metrics: Dict of final metrics (e.g. `val_cer`, `val_wer`).
        config: Optional dict of the resolved training configuration.
        model_name: Folder name of the model. Default "transcriber".
        candidates: Optional sequence of texts (digit words, commands):
            closed-vocabulary decoding in the graph. `text` is then the
            candidate with the lowest CTC negative log-likelihood under
            `log_probs` (`models.ctc_decoding.ctc_choose_text`'s choice, ""
            for an utterance too short for every candidate), never a
            misspelling. Each request scores every candidate, so this suits
            tens to hundreds of texts, not a dictionary.
        candidate_warps: Optional list of factors (e.g. `[0.92, 0.96, 1.0,
            1.04, 1.08]`), only with `candidates`: test-time warping. The
            models also read the features with the mel axis stretched by
            each factor (`models.frequency_warp.warp_bands`, the training
            warp's interpolation), and each candidate is scored by its mean
            likelihood over the warps (the log of the mean of the
            `exp(-NLL)`): a speaker whose vocal tract is longer or shorter
            than the training voices' is read at several stretches, at one
            model pass per factor. The served `log_probs` stay those of the
            unwarped features.

    Returns:
        The path of the new version directory.

    Example:

    ```python
    path = export_transcriber(model, vocab, FeatureConfig(), "runs/asr/export",
                              trained_on="synthetic", metrics={"val_cer": 0.1})
    # runs/asr/export/transcriber/1
    ```
    """
    members = list(model) if isinstance(model, (list, tuple)) else [model]
    if not members:
        raise ValueError("Received an empty list for `model`, expected a Keras model or a non-empty list of them.")
    n_features = feature_config.n_features
    for member in members:
        widths = [t.shape[-1] for t in (member.inputs or []) if len(t.shape) == 3]
        input_width = widths[0] if widths else None
        if input_width is not None and input_width != n_features:
            raise ValueError(
                f"Transcription model `{member.name}` takes {input_width} features "
                f"per frame, but the feature config gives {n_features}; export the "
                "model with the FeatureConfig it was trained with."
            )
    from models.candidates import check_candidate_warps, check_candidates
    from models.ctc_decoding import candidate_labels, candidate_nll, mean_over_warps

    candidate_warps = check_candidate_warps(candidate_warps, candidates, feature_kind=feature_config.kind)
    tables = VocabularyTables(vocabulary)
    log_mel = LogMel(feature_config, name="log_mel")
    if candidates is not None:
        candidates = check_candidates(candidates, vocabulary=vocabulary)
        labels = candidate_labels(candidates, vocabulary=vocabulary)

        def candidate_scores(log_probs, frame_length):
            return candidate_nll(log_probs, frame_length, tf.constant(labels), vocabulary=vocabulary)

        def chosen_text(scores):
            """The lowest-scoring candidate of each row, "" where none fits (`choose_candidates` in the graph)."""
            best = tf.argmin(scores, axis=1, output_type=tf.int32)
            fits = tf.reduce_any(tf.math.is_finite(scores), axis=1)
            return tf.where(fits, tf.gather(tf.constant(candidates), best), "")

    def model_outputs(features, feature_length):
        """`(member log_probs or None, log_probs, frame_length)`."""
        outputs = [_outputs(member, features, feature_length) for member in members]
        if len(outputs) == 1:
            return None, *outputs[0]
        return _ensemble_outputs(outputs)

    def warped_closed_vocabulary(features, feature_length):
        """`(text, log_probs, frame_length)` with `candidate_warps`: one model pass over the
        features warped by every factor, stacked along the batch."""
        from models.frequency_warp import warp_bands

        batch = tf.shape(features)[0]
        count = len(candidate_warps)
        alphas = tf.repeat(tf.constant(candidate_warps, tf.float32), batch)[:, None]
        stacked = warp_bands(tf.tile(features, (count, 1, 1)), alphas)
        _, log_probs, frame_length = model_outputs(stacked, tf.tile(feature_length, (count,)))
        scores = candidate_scores(log_probs, frame_length)
        text = chosen_text(mean_over_warps(tf.reshape(scores, (count, batch, len(candidates)))))
        if 1.0 in candidate_warps:  # the unwarped outputs are already among them
            start = candidate_warps.index(1.0) * batch
            return text, log_probs[start : start + batch], frame_length[start : start + batch]
        _, log_probs, frame_length = model_outputs(features, feature_length)
        return text, log_probs, frame_length

    def transcribe(features, feature_length):
        # The model's loop cannot run over no frame ("Tried to stack elements of an
        # empty list"), nor the CTC decoders over no row ("inputs must not be
        # empty"): features without frames (clips shorter than one FFT frame) get
        # one zero frame, which no row's length reaches, and an empty batch one
        # zero row of length 0, whose outputs are dropped. Either way the answer
        # is that of the rows sent: "" for rows without frames, as in a longer
        # batch, and no rows for an empty batch.
        batch = tf.shape(features)[0]
        features = tf.pad(
            features, [[0, tf.maximum(1 - batch, 0)], [0, tf.maximum(1 - tf.shape(features)[1], 0)], [0, 0]]
        )
        feature_length = tf.pad(feature_length, [[0, tf.maximum(1 - batch, 0)]])
        outputs = transcribe_rows(features, feature_length)
        return {name: value[:batch] for name, value in outputs.items()}

    def transcribe_rows(features, feature_length):
        if candidate_warps is not None:
            text, log_probs, frame_length = warped_closed_vocabulary(features, feature_length)
            return {"text": text, "log_probs": log_probs, "frame_length": frame_length}
        member_log_probs, log_probs, frame_length = model_outputs(features, feature_length)
        if candidates is not None:
            text = chosen_text(candidate_scores(log_probs, frame_length))
        else:
            if member_log_probs is None:
                ids = greedy_ids(log_probs, frame_length, vocabulary)
            else:
                ids = _ensemble_ids(member_log_probs, frame_length, vocabulary)
            text = tables.decode(ids)
            text = tf.strings.strip(tf.strings.regex_replace(text, " +", " "))
        return {"text": text, "log_probs": log_probs, "frame_length": frame_length}

    def from_waveform(waveform, waveform_length):
        # First, and before anything reads the inputs: the other checks and the
        # features assume one length per row.
        with tf.control_dependencies(
            [check_batch_sizes(waveform, "waveform", waveform_length, "waveform_length", "waveform row")]
        ):
            waveform, waveform_length = tf.identity(waveform), tf.identity(waveform_length)
        checks = [
            check_finite(waveform, "waveform", "sample"),
            tf.debugging.assert_greater_equal(
                waveform_length,
                feature_config.n_fft,
                message=f"every `waveform_length` must be at least n_fft={feature_config.n_fft} samples",
            ),
            tf.debugging.assert_less_equal(
                waveform_length,
                tf.shape(waveform)[1],
                message="`waveform_length` must not exceed the waveform's padded length",
            ),
        ]
        with tf.control_dependencies(checks):
            waveform, waveform_length = tf.identity(waveform), tf.identity(waveform_length)
        valid = tf.sequence_mask(waveform_length, tf.shape(waveform)[1])
        peak = tf.reduce_max(tf.where(valid, tf.abs(waveform), 0.0), axis=1)
        # As the training loader (`prepare_waveform`): a row beyond full scale is
        # scaled down to a peak of 1; rows within [-1, 1] are left as they are.
        waveform = waveform / tf.maximum(peak, 1.0)[:, None]
        features, feature_length = log_mel([waveform, waveform_length])
        outputs = transcribe(features, feature_length)
        silent = peak < SILENCE_PEAK
        outputs["text"] = tf.where(silent, "", outputs["text"])
        # Blank at every frame, as CTC says "nothing": a client decoding the
        # log_probs itself (beam search, a language model) reads "" too.
        classes = tf.shape(outputs["log_probs"])[-1]
        blank = tf.where(tf.range(classes) == vocabulary.blank_id, 0.0, SILENT_LOG_PROB)
        outputs["log_probs"] = tf.where(
            silent[:, None, None], tf.broadcast_to(blank, tf.shape(outputs["log_probs"])), outputs["log_probs"]
        )
        return outputs

    def from_features(features, feature_length):
        with tf.control_dependencies(
            [check_batch_sizes(features, "features", feature_length, "feature_length", "features row")]
        ):
            features, feature_length = tf.identity(features), tf.identity(feature_length)
        checks = [
            check_finite(features, "features", "value"),
            tf.debugging.assert_non_negative(
                feature_length, message="every `feature_length` must be >= 0"
            ),
            tf.debugging.assert_less_equal(
                feature_length,
                tf.shape(features)[1],
                message="`feature_length` must not exceed the features' padded length",
            ),
        ]
        with tf.control_dependencies(checks):
            features, feature_length = tf.identity(features), tf.identity(feature_length)
        return transcribe(features, feature_length)

    archive = keras.export.ExportArchive()
    for member in members:
        archive.track(member)
    tables.track(archive)
    archive.add_endpoint(
        "serving_default",
        from_waveform,
        input_signature=[
            tf.TensorSpec((None, None), tf.float32, name="waveform"),
            tf.TensorSpec((None,), tf.int32, name="waveform_length"),
        ],
    )
    archive.add_endpoint(
        "from_features",
        from_features,
        input_signature=[
            tf.TensorSpec((None, None, n_features), tf.float32, name="features"),
            tf.TensorSpec((None,), tf.int32, name="feature_length"),
        ],
    )
    if candidates is not None:
        decoding = CLOSED_VOCABULARY_DECODING.format(
            count=len(candidates),
            log_probs="log_probs" if len(members) == 1 else
            f"log_probs (the log of the {len(members)} ensemble members' mean probability)",
        )
        if candidate_warps is not None:
            decoding += WARPED_DECODING.format(warps=list(candidate_warps))
    elif len(members) == 1:
        decoding = f"greedy CTC (keras.ops.ctc_decode), blank id {vocabulary.blank_id}"
    else:
        decoding = ENSEMBLE_DECODING.format(members=len(members), blank=vocabulary.blank_id)
    metadata = {
        "task": "transcription",
        "sample_rate": feature_config.sample_rate,
        "feature_config": feature_config.to_dict(),
        "vocabulary": vocabulary.get_config(),
        "decoding": decoding,
        "ensemble_members": len(members),
        "candidates": candidates,
        "candidate_warps": None if candidate_warps is None else list(candidate_warps),
        "trained_on": trained_on,
        "metrics": metrics,
        "config": config,
        "signatures": {
            "serving_default": "waveform float32 (batch, samples), waveform_length "
            "int32 (batch,) -> text string (batch,), log_probs float32 "
            "(batch, frames, classes), frame_length int32 (batch,)",
            "from_features": "features float32 (batch, frames, n_features), "
            "feature_length int32 (batch,) -> the same outputs",
        },
    }
    # One request per signature, replayed by TF Serving when it loads the version.
    waveform = warmup_waveform(feature_config.sample_rate)
    features = waveform[:, :100, None].repeat(n_features, axis=2)
    warmup = [
        ("serving_default", {"waveform": waveform, "waveform_length": np.array([waveform.shape[1]], np.int32)}),
        ("from_features", {"features": features, "feature_length": np.array([100], np.int32)}),
    ]
    return write_saved_model_version(archive, export_base, model_name, metadata, warmup=warmup)

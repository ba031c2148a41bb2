"""SavedModel export of the CTC transcriber for TF Serving."""

import keras
import tensorflow as tf

from layers.log_mel import LogMel
from serving.export import write_saved_model_version
from serving.vocabulary_tables import VocabularyTables


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
):
    """Export a CTC transcription model as the next TF Serving version.

    Writes `<export_base>/<model_name>/<version>/` (see
    `serving.export.write_saved_model_version`) with two signatures, both
    returning `text` string `(batch,)` (greedy CTC decoding, repeats merged,
    blanks dropped, spaces collapsed and stripped as `ctc_decode_text`
    does), `log_probs` float32 `(batch, frames, classes)` and `frame_length`
    int32 `(batch,)`:

    - `serving_default`: `waveform` float32 `(batch, samples)`, mono at
      `feature_config.sample_rate`, padded at the end, and `waveform_length`
      int32 `(batch,)`. The features are computed in the graph by
      `layers.log_mel.LogMel`, the tf.signal twin of
      `pipelines.audio_features.compute_features`. Lengths below `n_fft`
      samples or above the padded length are rejected (InvalidArgument).
      An utterance of `n` samples has `1 + (n - n_fft) // hop_length`
      feature frames, which the model may shorten (frame stacking).
    - `from_features`: `features` float32 `(batch, frames, n_features)` and
      `feature_length` int32 `(batch,)`, features computed outside (lengths
      outside `[0, frames]` are rejected).

    Args:
        model: A Keras model taking `{"features", "feature_length"}` and
            returning `{"log_probs", "frame_length"}` (as
            `build_transcription_model` does; "logits" is accepted too).
        vocabulary: The `Vocabulary` the model was trained with; its blank id
            is the CTC blank.
        feature_config: The `FeatureConfig` the training features used.
        export_base: Directory holding one folder per model name.
        trained_on: What the model was trained on (a string or a dict, e.g.
            the dataset spec and utterance counts), stored in the metadata.
        metrics: Dict of final metrics (e.g. `val_cer`, `val_wer`).
        config: Optional dict of the resolved training configuration.
        model_name: Folder name of the model. Default "transcriber".

    Returns:
        The path of the new version directory.

    Example:

    ```python
    path = export_transcriber(model, vocab, FeatureConfig(), "runs/asr/export",
                              trained_on="synthetic", metrics={"val_cer": 0.1})
    # runs/asr/export/transcriber/1
    ```
    """
    n_features = feature_config.n_features
    widths = [t.shape[-1] for t in (model.inputs or []) if len(t.shape) == 3]
    input_width = widths[0] if widths else None
    if input_width is not None and input_width != n_features:
        raise ValueError(
            f"Transcription model `{model.name}` takes {input_width} features "
            f"per frame, but the feature config gives {n_features}; export the "
            "model with the FeatureConfig it was trained with."
        )
    tables = VocabularyTables(vocabulary)
    log_mel = LogMel(feature_config, name="log_mel")

    def transcribe(features, feature_length):
        log_probs, frame_length = _outputs(model, features, feature_length)
        decoded, _ = keras.ops.ctc_decode(
            log_probs,
            frame_length,
            strategy="greedy",
            merge_repeated=True,
            mask_index=vocabulary.blank_id,
        )
        text = tables.decode(decoded[0])
        text = tf.strings.strip(tf.strings.regex_replace(text, " +", " "))
        return {"text": text, "log_probs": log_probs, "frame_length": frame_length}

    def from_waveform(waveform, waveform_length):
        checks = [
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
            waveform = tf.identity(waveform)
        features, feature_length = log_mel([waveform, waveform_length])
        return transcribe(features, feature_length)

    def from_features(features, feature_length):
        checks = [
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
            features = tf.identity(features)
        return transcribe(features, feature_length)

    archive = keras.export.ExportArchive()
    archive.track(model)
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
    metadata = {
        "task": "transcription",
        "sample_rate": feature_config.sample_rate,
        "feature_config": feature_config.to_dict(),
        "vocabulary": vocabulary.get_config(),
        "decoding": "greedy CTC (keras.ops.ctc_decode), blank id "
        f"{vocabulary.blank_id}",
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
    return write_saved_model_version(archive, export_base, model_name, metadata)

"""`tuning_task`: the `TuningTask` of each `train.py` task.

Each adapter takes its datasets, callbacks, evaluation and export from the
task's own training module and pipelines, and its model from the task's
search space in `tuning.search_spaces`, so a tuned model is trained,
scored and exported like one from `train.py` without `--tune`.
"""

import hashlib
import math

from tuning.search_spaces import (
    LANGUAGE_MODEL_RANGES,
    TRANSCRIPTION_RANGES,
    language_model_space,
    transcription_space,
)
from tuning.search_ranges import TUNED_HYPERPARAMETERS
from tuning.tuning_task import TuningTask

# --- language_model: objective val_loss (nats per character) ------------------------


def _language_model_prepare(config):
    from training.language_model import prepare_data

    # The same source, vocabulary, split and windows as training.language_model.run.
    data = prepare_data(config)
    print(
        f"[tuning] text {data.source.location}: {len(data.train_text):,} training and "
        f"{len(data.validation_text):,} validation characters, "
        f"vocabulary of {data.vocabulary.size} ids."
    )
    digest = hashlib.sha256(f"{data.train_text}\0{data.validation_text}".encode()).hexdigest()[:16]
    identity = {
        "vocabulary": "".join(data.vocabulary.characters),
        "train_characters": len(data.train_text),
        "validation_characters": len(data.validation_text),
        "text_sha256": digest,
    }
    return data.train, data.validation, {"vocabulary": data.vocabulary, "source": data.source, "data_identity": identity}


def _untuned(kwargs):
    return {key: value for key, value in kwargs.items() if key not in TUNED_HYPERPARAMETERS}


def _language_model_build(hp, ranges, config, context):
    from training.language_model import builder_kwargs, compile_model

    # As training.language_model.build_model, with the tuned fields sampled.
    return language_model_space(
        hp,
        ranges=ranges,
        compile_model=lambda model, *, learning_rate: compile_model(
            model, config, learning_rate=learning_rate
        ),
        vocabulary_size=context["vocabulary"].size,
        **_untuned(builder_kwargs(config)),
    )


def _language_model_evaluate(model, config, context, validation):
    val_loss = float(model.evaluate(validation, verbose=0))
    return {"val_loss_nats": val_loss, "val_bpc": val_loss / math.log(2)}


def _language_model_export(model, config, context, metrics):
    from training.language_model import export_for_serving

    return export_for_serving(config, model, context["vocabulary"], context["source"], metrics)


def _language_model_save(model, config, context, directory):
    import os

    from models.language_model_io import save_language_model

    # model.keras and vocabulary.json, as a run directory holds them.
    save_language_model(model, context["vocabulary"], os.path.join(directory, "model.keras"))


LANGUAGE_MODEL_TASK = TuningTask(
    name="language_model",
    objective="val_loss",
    default_ranges=LANGUAGE_MODEL_RANGES,
    prepare=_language_model_prepare,
    build_model=_language_model_build,
    evaluate=_language_model_evaluate,
    export=_language_model_export,
    save=_language_model_save,
)


# --- transcription: objective val_cer (greedy decoding, from ErrorRateCallback) -------


def _transcription_prepare(config):
    from training.transcription import prepare_data

    # The same vocabulary, features and batches as training.transcription.run.
    prepared = prepare_data(config)
    data = prepared.data
    print(f"[tuning] data: {data.description}; utterances {data.counts}, skipped {len(data.skipped)}")
    context = {
        "vocabulary": prepared.vocabulary,
        "feature_config": prepared.feature_config,
        "data": data,
        # What was used and skipped per split, with its seconds of audio: files
        # changed in place change it (the feature cache notices them too); and
        # the transcripts themselves, which an edit can change at equal counts.
        "data_identity": {"vocabulary": "".join(prepared.vocabulary.characters), "utterances": data.counts,
                          "transcripts_sha256": data.transcripts_sha256},
    }
    return data.train, data.validation, context


def _transcription_build(hp, ranges, config, context):
    from training.transcription import builder_kwargs

    # As training.transcription.build_model, with the tuned fields sampled.
    return transcription_space(
        hp,
        ranges=ranges,
        num_features=context["feature_config"].n_features,
        vocabulary_size=context["vocabulary"].size,
        **_untuned(builder_kwargs(config)),
    )


def _transcription_callbacks(config, context, validation):
    from training.error_rate_callback import ErrorRateCallback

    # Puts val_cer (the objective) and val_wer into the epoch logs.
    return [
        ErrorRateCallback(validation, vocabulary=context["vocabulary"], num_examples=config.num_examples)
    ]


def _transcription_evaluate(model, config, context, validation):
    from models.transcription_evaluation import evaluate_transcription

    vocabulary = context["vocabulary"]
    greedy = evaluate_transcription(model, validation, vocabulary=vocabulary)
    metrics = {"val_cer": greedy["cer"], "val_wer": greedy["wer"], "val_utterances": greedy["utterances"]}
    if config.beam_width > 1:
        beam = evaluate_transcription(
            model, validation, vocabulary=vocabulary, strategy="beam_search", beam_width=config.beam_width
        )
        metrics.update(val_cer_beam=beam["cer"], val_wer_beam=beam["wer"])
    return metrics


def _transcription_export(model, config, context, metrics):
    from training.transcription import export_for_serving, read_candidates

    return export_for_serving(
        config, model, context["vocabulary"], context["feature_config"], context["data"], metrics,
        read_candidates(config),
    )


def _transcription_save(model, config, context, directory):
    from training.transcription import save_transcriber

    save_transcriber(directory, model, context["vocabulary"], context["feature_config"])


TRANSCRIPTION_TASK = TuningTask(
    name="transcription",
    objective="val_cer",
    default_ranges=TRANSCRIPTION_RANGES,
    prepare=_transcription_prepare,
    build_model=_transcription_build,
    evaluate=_transcription_evaluate,
    make_callbacks=_transcription_callbacks,
    export=_transcription_export,
    save=_transcription_save,
)

_TASKS = {task.name: task for task in (LANGUAGE_MODEL_TASK, TRANSCRIPTION_TASK)}


def tuning_task(name):
    """The `TuningTask` of the `train.py` task `name` ("transcription", "language_model")."""
    if name not in _TASKS:
        raise ValueError(
            f"Received an invalid value for argument `name`, expected one of "
            f"{sorted(_TASKS)}, got {name!r}."
        )
    return _TASKS[name]

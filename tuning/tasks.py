"""`tuning_task`: the `TuningTask` of each `train.py` task.

Each adapter takes its datasets, callbacks, evaluation and export from the
task's own training module and pipelines, and its model from the task's
search space in `tuning.search_spaces`, so a tuned model is trained,
scored and exported like one from `train.py` without `--tune`.
"""

import math
import os

import keras

from tuning.search_spaces import (
    LANGUAGE_MODEL_RANGES,
    TRANSCRIPTION_RANGES,
    language_model_space,
    transcription_space,
)
from tuning.tuning_task import TuningTask

# --- language_model: objective val_loss (nats per character) ------------------------


def _language_model_prepare(config):
    from data.text_sources import load_text_source
    from pipelines.text_dataset import text_window_dataset
    from pipelines.text_split import split_text
    from pipelines.vocabulary import Vocabulary

    # The same source, vocabulary, split and windows as training.language_model.run.
    source = load_text_source(config.dataset, tfds_data_dir=config.tfds_data_dir)
    vocabulary = Vocabulary.from_text(source.text)
    train_text, validation_text = split_text(
        source.text,
        sequence_length=config.sequence_length,
        validation_fraction=config.validation_fraction,
        source=source.location,
    )
    train_ids = vocabulary.encode(train_text)
    train = text_window_dataset(
        train_ids,
        sequence_length=config.sequence_length,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        drop_remainder=len(train_ids) - 1 >= config.sequence_length * config.batch_size,
    )
    validation = text_window_dataset(
        vocabulary.encode(validation_text),
        sequence_length=config.sequence_length,
        batch_size=config.batch_size,
    )
    print(
        f"[tuning] text {source.location}: {len(train_text):,} training and "
        f"{len(validation_text):,} validation characters, vocabulary of {vocabulary.size} ids."
    )
    return train, validation, {"vocabulary": vocabulary, "source": source}


def _language_model_build(hp, ranges, config, context):
    def compile_model(model, *, learning_rate):
        # As training.language_model.run compiles its model.
        model.compile(
            optimizer=keras.optimizers.Adam(
                learning_rate=learning_rate, clipnorm=config.clipnorm or None
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

    return language_model_space(
        hp,
        ranges=ranges,
        compile_model=compile_model,
        vocabulary_size=context["vocabulary"].size,
        embedding_dim=config.embedding_dim,
        activation=config.activation,
        seed=config.seed,
    )


def _language_model_evaluate(model, config, context, validation):
    val_loss = float(model.evaluate(validation, verbose=0))
    return {"val_loss_nats": val_loss, "val_bpc": val_loss / math.log(2)}


def _language_model_export(model, config, context, metrics):
    from serving.language_model_export import export_language_model
    from training.cli import config_to_dict

    return export_language_model(
        model,
        context["vocabulary"],
        os.path.join(config.output_dir, "export"),
        trained_on={"dataset": context["source"].name, "location": context["source"].location},
        metrics=metrics,
        config=config_to_dict(config),
    )


LANGUAGE_MODEL_TASK = TuningTask(
    name="language_model",
    objective="val_loss",
    default_ranges=LANGUAGE_MODEL_RANGES,
    prepare=_language_model_prepare,
    build_model=_language_model_build,
    evaluate=_language_model_evaluate,
    export=_language_model_export,
)


# --- transcription: objective val_cer (greedy decoding, from ErrorRateCallback) -------


def _transcription_prepare(config):
    from pipelines.speech_dataset import build_speech_datasets
    from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary

    # The same vocabulary, features and batches as training.transcription.run.
    vocabulary = Vocabulary(SPEECH_ALPHABET)
    feature_config = config.feature_config()
    data = build_speech_datasets(
        dataset=config.dataset,
        feature_config=feature_config,
        vocabulary=vocabulary,
        batch_size=config.batch_size,
        cache_dir=config.cache_dir,
        max_duration_s=config.max_duration_s,
        strict=config.strict,
        spec_augment=config.spec_augment,
        seed=config.seed,
        data_dir=config.data_dir,
    )
    print(f"[tuning] data: {data.description}; utterances {data.counts}, skipped {len(data.skipped)}")
    context = {"vocabulary": vocabulary, "feature_config": feature_config, "data": data}
    return data.train, data.validation, context


def _transcription_build(hp, ranges, config, context):
    return transcription_space(
        hp,
        ranges=ranges,
        num_features=context["feature_config"].n_features,
        vocabulary_size=context["vocabulary"].size,
        bidirectional=config.bidirectional,
        frame_stack=config.frame_stack,
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
    from training.transcription import export_for_serving

    return export_for_serving(
        config, model, context["vocabulary"], context["feature_config"], context["data"], metrics
    )


TRANSCRIPTION_TASK = TuningTask(
    name="transcription",
    objective="val_cer",
    default_ranges=TRANSCRIPTION_RANGES,
    prepare=_transcription_prepare,
    build_model=_transcription_build,
    evaluate=_transcription_evaluate,
    make_callbacks=_transcription_callbacks,
    export=_transcription_export,
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

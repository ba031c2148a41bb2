"""Train the character language model: `python train.py --task language_model`.

The story, top to bottom: resolve the text source, build the vocabulary from
the whole text, split it 90/10 by characters, cut both parts into windows,
build Embedding -> Elman layers -> logits, fit with checkpoints (best by
validation loss) and a time budget, evaluate the best weights, save the model
with its vocabulary, write metrics.json and print a generated sample.
"""

import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import typing

import keras

from data.text_sources import TextSource, load_text_source
from models.language_model import build_language_model
from models.language_model_evaluation import long_context_loss
from models.language_model_io import save_language_model
from models.text_generation import build_step_model, default_prompt, generate_text
from pipelines.epochs import repeat_epochs
from pipelines.text_dataset import text_window_dataset
from pipelines.text_split import split_text
from pipelines.vocabulary import Vocabulary
from training import trained_weights
from training.cli import RUN_DIRECTORY_IGNORED, check_not_finished, check_run_directory, config_to_dict, write_json
from training.cosine_annealing_callback import CosineAnnealingCallback
from training.data_seed import backup_epoch, data_seed
from training.distribute import build_distributed
from training.language_model_config import Config  # noqa: F401  (the run's settings: language_model.Config)
from training.non_finite_loss_callback import NonFiniteLossCallback
from training.time_budget_callback import TimeBudgetCallback
from training.training_clock import ClockedBackupAndRestore, TrainingClock


def _sample_prompt(config, vocabulary, source_name):
    """The prompt of the final sample, checked before any training is spent."""
    if config.sample_prompt:
        unknown = vocabulary.unknown_characters(config.sample_prompt)
        if unknown:
            raise ValueError(
                f"Received an invalid value for config field `sample_prompt` "
                f"(--sample-prompt), expected characters that occur in {source_name!r}, "
                f"got {config.sample_prompt!r} with {unknown!r}."
            )
        return config.sample_prompt
    return default_prompt(vocabulary)


def export_for_serving(config, model, vocabulary, source, metrics):
    """Export the SavedModel for TF Serving: `output_dir/export/language_model/<version>/`.

    Returns the version directory written (`serving.language_model_export`).
    """
    from serving.language_model_export import export_language_model

    return export_language_model(
        model,
        vocabulary,
        os.path.join(config.output_dir, "export"),
        trained_on={"dataset": source.name, "location": source.location},
        metrics=metrics,
        config=config_to_dict(config),
    )


def _export(model, vocabulary, config, metrics, source):
    """Write the run's final model: DIR/model.keras and the SavedModel under DIR/export/
    (once: a rerun after a kill before metrics.json keeps the version written)."""
    path = os.path.join(config.output_dir, "model.keras")
    save_language_model(model, vocabulary, path)
    export_dir = trained_weights.export_once(
        os.path.join(config.output_dir, BACKUP_DIR), config_to_dict(config),
        lambda: export_for_serving(config, model, vocabulary, source, metrics))
    return {"model": path, "export_dir": str(export_dir)}


@dataclasses.dataclass(frozen=True)
class LanguageModelData:
    """The text of a run and the datasets cut from it (see `prepare_data`)."""

    source: TextSource
    vocabulary: Vocabulary
    train_text: str
    validation_text: str
    train: typing.Any  # tf.data.Dataset of (ids, next ids), (batch, sequence_length)
    validation: typing.Any  # the same, in text order


def prepare_data(config, *, resumed_epoch=0):
    """Resolve the text, build its vocabulary, split 90/10 and cut the windows.

    The vocabulary holds every character of the whole text. Training windows
    are shuffled and come in full batches (one compiled shape) unless the
    text is too short for one; validation windows keep text order. The
    shuffle is seeded by `config.seed`, or, for a run resumed after
    `resumed_epoch` > 0 epochs, by a seed made of both (`training.data_seed`):
    rebuilt from `config.seed` it would deal epoch 1's order again.
    Raises the text source's and the split's errors (missing, empty,
    undecodable or too-short text), naming the file.
    """
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
        seed=data_seed(config.seed, resumed_epoch),
        drop_remainder=len(train_ids) - 1 >= config.sequence_length * config.batch_size,
    )
    validation = text_window_dataset(
        vocabulary.encode(validation_text),
        sequence_length=config.sequence_length,
        batch_size=config.batch_size,
    )
    return LanguageModelData(source, vocabulary, train_text, validation_text, train, validation)


def builder_kwargs(config):
    """The arguments of `build_language_model` that `config` sets (all but the vocabulary size)."""
    return dict(
        embedding_dim=config.embedding_dim,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        dropout=config.dropout,
        activation=config.activation,
        output_hidden_size=config.output_hidden_size,
        seed=config.seed,
        dtype_policy=config.dtype_policy,
    )


def compile_model(model, config, *, learning_rate=None):
    """Compile with Adam (clipped by `config.clipnorm`) and cross-entropy on logits.

    The loss is in nats per character (divide by ln 2 for bits per character).
    `learning_rate` defaults to `config.learning_rate` (tuning passes its own).
    """
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=config.learning_rate if learning_rate is None else learning_rate,
            clipnorm=config.clipnorm or None,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def build_model(config, vocabulary_size):
    """`build_language_model` from `config`, compiled by `compile_model`."""
    model = build_language_model(vocabulary_size=vocabulary_size, **builder_kwargs(config))
    return compile_model(model, config)


BACKUP_DIR = "backup"  # BackupAndRestore's state; deleted (by Keras) when a run ends
HISTORY_FILE = "history.csv"  # every epoch's losses (keras.callbacks.CSVLogger), across restarts
# What the backed-up run trained on: a resumed run must read the same text (same vocabulary and split).
BACKUP_TEXT_FILE = os.path.join(BACKUP_DIR, "text.json")
# Written when training ends, deleted with the backup once metrics.json is: a run killed
# in its evaluation, sample or export resumes there, with the weights it had trained.
TRAINED_STATE_FILE = os.path.join(BACKUP_DIR, trained_weights.STATE_FILE)  # epochs, train_seconds, ...
TRAINED_WEIGHTS_FILE = os.path.join(BACKUP_DIR, trained_weights.WEIGHTS_FILE)  # the best weights, evaluated


def _text_fingerprint(text):
    return {"characters": len(text), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def _check_resumed_text(config, source):
    """Refuse to resume a killed run whose text has changed since (other vocabulary, other split)."""
    path = os.path.join(config.output_dir, BACKUP_TEXT_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            before = json.load(f)
    except (OSError, ValueError):
        return  # a backup made before the text was recorded
    now = _text_fingerprint(source.text)
    if not isinstance(before, dict) or before == now:
        return
    raise ValueError(
        f"Text {source.location} has changed since the killed run in {config.output_dir} was backed up "
        f"({before.get('characters')} characters then, {now['characters']} now, sha256 "
        f"{str(before.get('sha256'))[:12]}... then, {now['sha256'][:12]}... now): resuming would go on "
        f"with a model of another vocabulary and 90/10 split. Nothing was written: restore that text to resume, or "
        f"remove {os.path.join(config.output_dir, BACKUP_DIR)} to train on this one from the start."
    )


def _read_history(path):
    """`{log name: [value per epoch]}` from a CSVLogger file (an epoch logged twice, by a run
    killed between its row and its backup, counts once: the later row); {} without the file."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = {int(row["epoch"]): row for row in csv.DictReader(f)}
    except FileNotFoundError:
        return {}
    ordered = [rows[epoch] for epoch in sorted(rows)]
    names = [name for name in (ordered[0] if ordered else {}) if name != "epoch"]
    return {name: [float(row[name]) for row in ordered] for name in names}


def plateau_schedule(verbose=0):
    """`--lr-schedule plateau`: halve the rate when val_loss stalls for an epoch (floor 1e-5); a run's and a trial's."""
    return keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_lr=1e-5, verbose=verbose)


def _train(config, model, data, resuming, callbacks):
    """Fit `model` as `run` does; return the figures `trained_weights.resume_state` reads back, the model holding
    the best checkpoint's weights.

    When it returns, the backup holds those weights and figures (`TRAINED_WEIGHTS_FILE`,
    `TRAINED_STATE_FILE`) and the text's fingerprint until `run` has written metrics.json.
    """
    repeated, steps_per_epoch = repeat_epochs(data.train)  # one iterator for the whole run
    best_path = os.path.join(config.output_dir, "best.keras")
    backup_dir = os.path.join(config.output_dir, BACKUP_DIR)
    history_path = os.path.join(config.output_dir, HISTORY_FILE)
    # The killed run's epochs so far: its best validation loss must not be
    # overwritten by a worse epoch's checkpoint after the restart.
    earlier = _read_history(history_path) if resuming else {}
    max_seconds = None if config.max_train_minutes is None else 60.0 * config.max_train_minutes
    clock = TrainingClock()  # training time, a killed run's included once its backup is restored
    budget = TimeBudgetCallback(max_seconds, clock)
    own_callbacks = [
        keras.callbacks.ModelCheckpoint(
            best_path, monitor="val_loss", save_best_only=True, verbose=0,
            initial_value_threshold=min(earlier["val_loss"]) if earlier.get("val_loss") else None,
        ),
        # Every epoch's losses, kept across a restart (the metrics' history).
        keras.callbacks.CSVLogger(history_path, append=resuming),
        budget,
        NonFiniteLossCallback(f"Try a lower --learning-rate or --clipnorm, with another --output-dir (or remove "
                              f"{config.output_dir}: its config.json keeps this run's settings)."),
    ]
    if config.lr_schedule == "cosine":
        own_callbacks.append(
            CosineAnnealingCallback(
                config.learning_rate, config.epochs * steps_per_epoch, max_seconds=max_seconds, clock=clock
            )
        )
    elif config.lr_schedule == "plateau":
        own_callbacks.append(plateau_schedule(verbose=config.verbose))
    # Last: when a backup of epoch N exists, so do its checkpoint and history row.
    # It keeps the clock too: a resumed run's budget and decay go on where they stopped.
    own_callbacks.append(ClockedBackupAndRestore(backup_dir, clock, double_checkpoint=True))
    fingerprint = _text_fingerprint(data.source.text)
    if not resuming:  # deleted with the backup when the run ends
        write_json(os.path.join(config.output_dir, BACKUP_TEXT_FILE), fingerprint)
    model.fit(
        repeated,
        steps_per_epoch=steps_per_epoch,
        validation_data=data.validation,
        epochs=config.epochs,
        callbacks=[*own_callbacks, *callbacks],  # the extra ones after the run's own
        shuffle=False,  # the window dataset reshuffles itself every epoch
        verbose=config.verbose,
    )
    trained = {
        "epochs": len(_read_history(history_path).get("loss", ())),  # the killed run's too
        "train_seconds": clock.seconds(),
        "stopped_by_time_budget": budget.stopped_early,
    }
    # The final model is the checkpoint with the best validation loss.
    best = keras.saving.load_model(best_path)
    model.set_weights(best.get_weights())
    # The backup's work is done (BackupAndRestore removed it, the text's fingerprint too).
    # Until metrics.json is written, the backup keeps the weights to evaluate instead: a run
    # killed in its evaluation, sample or export resumes from them, not from scratch.
    trained_weights.keep_trained(
        backup_dir, model, trained, beside={os.path.basename(BACKUP_TEXT_FILE): fingerprint}
    )
    return trained


def run(config, *, callbacks=()):
    """Train, evaluate and save a character language model; return its metrics.

    Writes to `config.output_dir` (refused when it holds a run made with other
    settings, or a finished one without `config.overwrite`:
    `training.cli.check_run_directory`, `check_not_finished`): `config.json` (once the
    data is read), `vocabulary.json`, `history.csv` (every epoch's losses),
    `best.keras` (checkpoint, best validation loss),
    `model.keras` (the best weights), `metrics.json` (`val_loss_nats`,
    `val_bpc`, `train_seconds`, `epochs`, ...), and prints a sample.
    A killed run resumes from `backup/` (`keras.callbacks.BackupAndRestore`)
    when run again with the same settings: its epochs so far stay in the
    history and its best checkpoint is kept unless a later epoch beats it.
    One killed after its training ended (in its evaluation, sample or export)
    evaluates and saves the weights it had trained, without training again.
    `callbacks` are extra Keras callbacks, run after the run's own (tests).
    """
    # An earlier run there with other settings stops this one before it writes anything.
    earlier_run = check_run_directory(config.output_dir, config, ignore=RUN_DIRECTORY_IGNORED)
    if earlier_run is not None:
        check_not_finished(config.output_dir, overwrite=config.overwrite)
    backup_dir = os.path.join(config.output_dir, BACKUP_DIR)
    trained, resuming = trained_weights.resume_state(
        config.output_dir, backup_dir, earlier_run, overwrite=config.overwrite,
        epochs=int, train_seconds=float, stopped_by_time_budget=bool,
    )
    keras.utils.set_random_seed(config.seed)

    # A resumed run's windows are shuffled from the epoch it resumes at, so its first epoch
    # does not replay epoch 1's order.
    data = prepare_data(config, resumed_epoch=backup_epoch(backup_dir) if resuming else 0)
    source, vocabulary = data.source, data.vocabulary
    train_text, validation_text = data.train_text, data.validation_text
    validation = data.validation
    prompt = _sample_prompt(config, vocabulary, source.location)  # checked before anything is written
    if resuming or trained is not None:
        _check_resumed_text(config, source)
    os.makedirs(config.output_dir, exist_ok=True)
    write_json(os.path.join(config.output_dir, "config.json"), config_to_dict(config))
    vocabulary.save(os.path.join(config.output_dir, "vocabulary.json"))
    print(
        f"Text {source.location}: {len(source.text):,} characters "
        f"({len(train_text):,} train, {len(validation_text):,} validation), "
        f"vocabulary of {vocabulary.size} ids."
    )

    model = build_distributed(config.distribute, lambda: build_model(config, vocabulary.size),
                              batch_size=config.batch_size)
    if config.verbose:
        model.summary()

    if trained is None:
        trained = _train(config, model, data, resuming, callbacks)
    else:
        trained_weights.restore_trained(model, backup_dir)
    train_seconds = trained["train_seconds"]
    losses = _read_history(os.path.join(config.output_dir, HISTORY_FILE))  # every epoch, the killed run's too

    val_loss = float(model.evaluate(validation, verbose=0))
    long_loss = long_context_loss(
        model, vocabulary.encode(validation_text), num_chunks=min(16, len(validation_text) - 1)
    )
    best_epoch = int(min(range(len(losses["val_loss"])), key=losses["val_loss"].__getitem__)) + 1
    metrics = {
        "val_loss_nats": val_loss,
        "val_bpc": val_loss / math.log(2),
        # The same text read in 16 long chunks (context beyond one window).
        "val_loss_nats_long_context": long_loss,
        "val_bpc_long_context": long_loss / math.log(2),
        "train_loss_nats": float(losses["loss"][best_epoch - 1]),
        "train_bpc": float(losses["loss"][best_epoch - 1]) / math.log(2),
        "train_seconds": train_seconds,
        "epochs": len(losses["loss"]),
        "best_epoch": best_epoch,
        "stopped_by_time_budget": trained["stopped_by_time_budget"],
        "history": {key: [float(v) for v in values] for key, values in losses.items()},
        "parameters": int(model.count_params()),
        "dataset": source.name,
        "dataset_location": source.location,
        "characters": len(source.text),
        "train_characters": len(train_text),
        "validation_characters": len(validation_text),
        "vocabulary_size": vocabulary.size,
        "fused_rnn": all(
            getattr(layer, "fused_reason", "") is None
            for layer in model.layers
            if isinstance(layer, keras.layers.RNN)
        ),
    }
    metrics.update(_export(model, vocabulary, config, metrics, source))

    sample = generate_text(
        model,
        vocabulary,
        prompt,
        length=config.sample_length,
        temperature=config.temperature,
        seed=config.seed,
        step_model=build_step_model(model),
    )
    metrics["sample"] = prompt + sample
    write_json(os.path.join(config.output_dir, "metrics.json"), metrics)
    shutil.rmtree(backup_dir, ignore_errors=True)  # the run is finished
    print(
        f"Validation: {metrics['val_loss_nats']:.4f} nats/char = "
        f"{metrics['val_bpc']:.4f} bits/char in windows of {config.sequence_length}, "
        f"{metrics['val_bpc_long_context']:.4f} bits/char with long context "
        f"(best epoch {best_epoch} of {metrics['epochs']}, {train_seconds / 60:.1f} min)."
    )
    print(f"Sample (temperature {config.temperature}):\n{prompt}{sample}")
    return metrics

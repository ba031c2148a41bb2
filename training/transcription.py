"""Train the Elman RNN CTC transcriber: `python train.py --task transcription`.

The run, top to bottom: resolve the configuration and write it beside the
outputs; build the speech datasets (features cached on disk); build the
model; fit with checkpoints, backup-and-restore, early stopping, a time
budget, TensorBoard and per-epoch validation CER/WER; evaluate the best
weights (and the test split when there is one); save the model, vocabulary,
feature configuration and metrics; export for serving.
"""

import dataclasses
import json
import os
import shutil
import typing
import warnings

import keras
import tensorflow as tf

from data.speech_sources import naming_argument
from models.transcription import build_transcription_model
from models.transcription_evaluation import evaluate_closed_vocabulary, evaluate_transcription, outputs_function
from pipelines.audio_features import FeatureConfig
from pipelines.epochs import repeat_epochs
from pipelines.speech_dataset import build_speech_datasets
from pipelines.time_stretch import stretch_batches
from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary
from training import trained_weights
from training.cli import RUN_DIRECTORY_IGNORED, check_not_finished, check_run_directory, config_to_dict, write_json
from training.cosine_annealing_callback import CosineAnnealingCallback
from training.data_seed import backup_epoch, data_seed
from training.distribute import build_distributed
from training.error_rate_callback import ErrorRateCallback
from training.non_finite_loss_callback import NonFiniteLossCallback
from training.time_budget_callback import TimeBudgetCallback
from training.training_clock import ClockedBackupAndRestore, TrainingClock
from training.transcription_config import Config, read_candidates  # noqa: F401  (Config: the run's settings)

# File names inside `output_dir`.
CONFIG_FILE = "config.json"
MODEL_BUILDER_KEY = "model_builder"  # in config.json when `run` was given another builder than build_model
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
VOCABULARY_FILE = "vocabulary.json"
FEATURE_CONFIG_FILE = "feature_config.json"
BACKUP_DIR = "backup"  # BackupAndRestore's state; deleted when a run ends
BEST_WEIGHTS_FILE = os.path.join("checkpoints", "best.weights.h5")
BEST_STATE_FILE = os.path.join(BACKUP_DIR, "best.json")  # best val_cer so far
# Written when training ends, deleted with the backup once metrics.json is: a run
# killed in its evaluation or export resumes there, with the weights it had trained
# (`training.trained_weights`, shared with the language model's run).
TRAINED_STATE_FILE = os.path.join(BACKUP_DIR, trained_weights.STATE_FILE)  # epochs and train_seconds
TRAINED_WEIGHTS_FILE = os.path.join(BACKUP_DIR, trained_weights.WEIGHTS_FILE)  # the weights evaluated
LOG_DIR = "logs"  # TensorBoard
EXPORT_DIR = "export"  # TF Serving layout: export/transcriber/<version>


# Batches are padded in time to a multiple of this many recurrent steps: the
# fused recurrent loops are compiled (XLA) once per distinct length, so fewer
# distinct lengths mean far fewer compilations, at the cost of a little padding.
TIME_QUANTUM_STEPS = 8


def pad_time_to_multiple(dataset, multiple):
    """Pad each batch's `features` along time to a multiple of `multiple` frames.

    `feature_length` is unchanged, so the model ignores the added frames.
    """

    def pad(inputs, labels):
        features = inputs["features"]
        time = tf.shape(features)[1]
        padding = (-time) % multiple
        features = tf.pad(features, [[0, 0], [0, padding], [0, 0]])
        return {**inputs, "features": features}, labels

    return dataset.map(pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def mix_batches(main, extra, fraction, seed):
    """Training batches from `main`, with a `fraction` drawn from `extra`.

    An epoch is one pass over `main` with `round(n * fraction / (1 -
    fraction))` batches of `extra` placed among its `n` batches at random
    (new places each epoch); `extra` repeats as needed. The epoch's length
    is known up front, so `fit` keeps one iterator for the run
    (`pipelines.epochs.repeat_epochs`). When `main`'s length is not known,
    each batch is drawn at random with probability `fraction` from `extra`
    and the epoch ends when `main` runs out.
    """
    main_batches = int(main.cardinality())
    if main_batches < 0:
        return tf.data.Dataset.sample_from_datasets(
            [main, extra.repeat()],
            weights=[1.0 - fraction, fraction],
            seed=seed,
            stop_on_empty_dataset=True,
        )
    extra_batches = round(main_batches * fraction / (1.0 - fraction))
    order = tf.data.Dataset.from_tensor_slices(
        tf.constant([0] * main_batches + [1] * extra_batches, tf.int64)
    ).shuffle(main_batches + extra_batches, seed=seed, reshuffle_each_iteration=True)
    mixed = tf.data.Dataset.choose_from_datasets([main, extra.repeat()], order)
    return mixed.apply(tf.data.experimental.assert_cardinality(main_batches + extra_batches))


def _best_so_far(output_dir):
    """`(val_cer, epoch)`: the best validation CER of the run being resumed and
    the epoch that reached it (None if not recorded), or None."""
    path = os.path.join(output_dir, BEST_STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        epoch = state.get("epoch")
        return float(state["val_cer"]), (int(epoch) if epoch is not None else None)
    except (OSError, KeyError, ValueError, TypeError, AttributeError):
        return None


class _RememberBest(keras.callbacks.Callback):
    """Record the best `val_cer` beside the backup, so a resumed run's
    checkpoint does not overwrite better weights with worse ones."""

    def __init__(self, output_dir, best):
        super().__init__()
        self.path = os.path.join(output_dir, BEST_STATE_FILE)
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        cer = (logs or {}).get("val_cer")
        if cer is not None and (self.best is None or cer < self.best):
            self.best = cer
            write_json(self.path, {"val_cer": cer, "epoch": epoch + 1})


class _ResumedEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` that goes on where a killed run stopped: a resumed run
    starts from the best `val_cer` and the epochs waited since
    (`resumed_best`, `_best_so_far`'s), not with its patience afresh."""

    def __init__(self, resumed_best=None, **kwargs):
        super().__init__(**kwargs)
        self.resumed_best = resumed_best

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        restored = getattr(self.model, "_initial_epoch", 0) or 0  # BackupAndRestore's, which runs first
        if not restored or self.resumed_best is None or self.resumed_best[1] is None:
            return
        best, epoch = self.resumed_best
        self.best = best
        self.wait = max(0, restored - epoch)


def _callbacks(config, data, vocabulary, resuming, clock=None):
    out = config.output_dir
    clock = TrainingClock() if clock is None else clock  # read by the budget, the decay and the backup
    resumed_best = _best_so_far(out) if resuming else None
    best = None if resumed_best is None else resumed_best[0]
    patience_monitor = dict(monitor="val_cer", mode="min")
    max_seconds = None if config.max_train_minutes is None else config.max_train_minutes * 60
    schedule = []
    steps_per_epoch = int(data.train.cardinality())  # < 0: unknown length
    if config.lr_schedule == "cosine":
        schedule.append(
            CosineAnnealingCallback(
                config.learning_rate,
                config.epochs * steps_per_epoch if steps_per_epoch > 0 else None,
                # Unknown epoch length (a custom training set): the first epoch's length
                # times --epochs, and the time budget, set the pace.
                epochs=None if steps_per_epoch > 0 else config.epochs,
                max_seconds=max_seconds,
                clock=clock,
            )
        )
    averaging = []
    if config.ema_momentum is not None:
        # Before every callback that reads the weights: from the end of each
        # epoch to the start of the next (and in validation) the model holds
        # the averaged weights, so they are the ones scored, checkpointed
        # and backed up (a resumed run continues from them).
        averaging.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    return [
        *schedule,
        *averaging,
        # First after those: it adds val_cer / val_wer to the logs the others read.
        ErrorRateCallback(
            data.validation, vocabulary=vocabulary, num_examples=config.num_examples
        ),
        keras.callbacks.ModelCheckpoint(
            os.path.join(out, BEST_WEIGHTS_FILE),
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best,
            **patience_monitor,
        ),
        # After the checkpoint it describes, before the backup that resumes it.
        _RememberBest(out, best),
        # It keeps the clock too: a resumed run's budget and decay go on where they stopped.
        ClockedBackupAndRestore(os.path.join(out, BACKUP_DIR), clock, double_checkpoint=True),
        # After the backup, whose restored epoch it reads.
        _ResumedEarlyStopping(resumed_best, patience=config.early_stopping_patience, **patience_monitor),
        TimeBudgetCallback(max_seconds, clock),
        NonFiniteLossCallback(
            "Check the training data (features are cached under --cache-dir "
            f"{config.cache_dir or '<project>/runs/cache'}: a damaged cache is computed afresh once deleted) "
            f"and try a lower --learning-rate, with another --output-dir (or remove {out}: its config.json "
            "keeps this run's settings)."
        ),
        keras.callbacks.TensorBoard(
            os.path.join(out, LOG_DIR), write_graph=False, profile_batch=0
        ),
    ]


def candidate_warp_factors(config):
    """The factors of `config.candidate_warps` as a tuple of floats, or None without it."""
    if config.candidate_warps is None:
        return None
    return tuple(float(value) for value in config.candidate_warps.split(","))


def export_for_serving(config, model, vocabulary, feature_config, data, metrics, candidates=None):
    """Export the trained model for TF Serving; the export directory or None.

    The one place where a run hands its model to `serving` (issue 4):
    `<output_dir>/export/transcriber/<version>/` (`model` may be the list of
    an ensemble's members), with in-graph features and greedy decoding (closed-vocabulary decoding among `candidates`, the
    texts `read_candidates` gives), and the metrics and data description
    as metadata.
    """
    if not config.export:
        return None
    from serving.transcription_export import export_transcriber

    trained_on = {
        "dataset": config.dataset,
        "description": data.description,
        "utterances": data.counts,
        "mix_dataset": config.mix_dataset,
    }
    if config.ensemble > 1:  # `model` is the list of its members
        from training.transcription_ensemble import member_dir

        # As `serving.export_run` records the members it packs.
        trained_on["ensemble"] = [
            {"dataset": config.dataset, "run_dir": os.path.abspath(member_dir(config.output_dir, config.seed + k))}
            for k in range(config.ensemble)
        ]
    return export_transcriber(
        model,
        vocabulary,
        feature_config,
        os.path.join(config.output_dir, EXPORT_DIR),
        trained_on=trained_on,
        metrics=metrics,
        config=config_to_dict(config),
        candidates=candidates,
        candidate_warps=None if candidates is None else candidate_warp_factors(config),
    )


@dataclasses.dataclass(frozen=True)
class TranscriptionData:
    """What `prepare_data` resolves: the vocabulary, features and batches of a run."""

    vocabulary: Vocabulary
    feature_config: typing.Any  # pipelines.audio_features.FeatureConfig
    data: typing.Any  # pipelines.speech_dataset.SpeechData, time padded to the quantum
    mix: typing.Any = None  # the SpeechData of --mix-dataset, when given


def prepare_data(config, *, resumed_epoch=0):
    """The vocabulary, feature configuration and batched datasets of `config`.

    Builds (or reads from the cache) `config.dataset`, mixes in
    `config.mix_dataset` when given, stretches training batches in time
    when `config.time_stretch` is set, and pads the time axis of every split to
    a multiple of `TIME_QUANTUM_STEPS * frame_stack` (fewer XLA compiles).
    Used by `run` and by the tuning task, so both see the same batches.

    The training batches' order, SpecAugment masks, mix and stretch are drawn
    from `config.seed`, or, for a run resumed after `resumed_epoch` > 0 epochs,
    from a seed made of both (`training.data_seed`): rebuilt from `config.seed`
    the data would start again from epoch 1's draws.
    """
    vocabulary = Vocabulary(SPEECH_ALPHABET)
    feature_config = config.feature_config()
    seed = data_seed(config.seed, resumed_epoch)

    def speech_data(dataset):
        return build_speech_datasets(
            dataset=dataset,
            feature_config=feature_config,
            vocabulary=vocabulary,
            batch_size=config.batch_size,
            cache_dir=config.cache_dir,
            max_duration_s=config.max_duration_s,
            strict=config.strict,
            spec_augment=config.spec_augment,
            spec_augment_max_frequency=config.spec_augment_max_frequency,
            seed=seed,
            data_dir=config.data_dir,
        )

    data = speech_data(config.dataset)
    mix = None
    if config.mix_dataset is not None:
        try:
            mix = speech_data(config.mix_dataset)
        except ValueError as error:  # the spec's errors name `dataset`: say which flag it was
            raise ValueError(naming_argument(str(error), "mix_dataset")) from error
        print(f"Mixed into training ({config.mix_fraction:.0%} of batches): {mix.description}")
        data = dataclasses.replace(
            data, train=mix_batches(data.train, mix.train, config.mix_fraction, seed)
        )
    if config.time_stretch:
        data = dataclasses.replace(data, train=stretch_batches(data.train, config.time_stretch, seed))
    quantum = TIME_QUANTUM_STEPS * config.frame_stack
    data = dataclasses.replace(
        data,
        **{
            split: pad_time_to_multiple(getattr(data, split), quantum)
            for split in ("train", "validation", "test")
            if getattr(data, split) is not None
        },
    )
    return TranscriptionData(vocabulary, feature_config, data, mix)


def builder_kwargs(config):
    """The arguments of `build_transcription_model` that `config` sets.

    Everything but the feature and vocabulary sizes; tuning replaces the
    fields it searches (`tuning.search_ranges.TUNED_HYPERPARAMETERS`).
    """
    return dict(
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        bidirectional=config.bidirectional,
        frame_stack=config.frame_stack,
        num_dense_layers=config.num_dense_layers,
        dropout=config.dropout,
        # Warping the axis of cepstral coefficients would be meaningless.
        frequency_warp=config.frequency_warp if config.feature_kind == "log_mel" else 0.0,
        random_eq=config.random_eq if config.feature_kind == "log_mel" else 0.0,
        input_noise=config.input_noise,
        weight_noise=config.weight_noise,
        learning_rate=config.learning_rate,
        ema_momentum=config.ema_momentum,
        dtype_policy=config.dtype_policy,
    )


def build_model(config, *, num_features, vocabulary_size):
    """The compiled `build_transcription_model` that `config` describes."""
    return build_transcription_model(
        num_features=num_features, vocabulary_size=vocabulary_size, **builder_kwargs(config)
    )


def data_metrics(config, prepared):
    """The entries of metrics.json that describe the data of a run (`prepared`: `prepare_data`'s)."""
    data, mix = prepared.data, prepared.mix
    metrics = {
        "dataset": config.dataset,
        "data_description": data.description,
        "utterances": dict(data.counts),
        "skipped": len(data.skipped),
        "skipped_files": [[str(s), str(r)] for s, r in data.skipped],
    }
    if mix is not None:
        metrics["mix_dataset"] = config.mix_dataset
        metrics["mix_description"] = mix.description
        metrics["mix_utterances"] = dict(mix.counts)
        metrics["skipped"] += len(mix.skipped)
        metrics["skipped_files"] += [[str(s), str(r)] for s, r in mix.skipped]
    return metrics


def _run_files(run_dir):
    """Paths of the files `load_transcriber` reads, by file name."""
    return {name: os.path.join(run_dir, name) for name in (MODEL_FILE, VOCABULARY_FILE, FEATURE_CONFIG_FILE)}


def save_transcriber(model_dir, model, vocabulary, feature_config):
    """Write what `load_transcriber` reads: model.keras, vocabulary.json, feature_config.json."""
    os.makedirs(model_dir, exist_ok=True)
    model.save(os.path.join(model_dir, MODEL_FILE))
    vocabulary.save(os.path.join(model_dir, VOCABULARY_FILE))
    write_json(os.path.join(model_dir, FEATURE_CONFIG_FILE), feature_config.to_dict())


def _read_feature_config(path):
    """The `FeatureConfig` in `path`; anything wrong with the file is a ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        if not isinstance(values, dict):
            raise ValueError(f"expected a JSON object, got a JSON {type(values).__name__}")
        return FeatureConfig.from_dict(values)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(
            f"Feature config {path} cannot be read ({error}); expected the feature_config.json a "
            "`python train.py --task transcription` run writes (a JSON object of FeatureConfig fields)."
        ) from None


def load_transcriber(model_dir):
    """`(model, vocabulary, feature_config)` saved by a transcription run in `model_dir`.

    A directory without those files is a FileNotFoundError (saying so when it is
    a language model run); a file that cannot be read (not JSON, a corrupt or
    truncated model.keras) is a ValueError naming it.
    """
    from models.language_model_io import load_vocabulary_file, run_kind, unreadable_model_error

    paths = _run_files(model_dir)
    missing = [path for path in paths.values() if not os.path.exists(path)]
    if missing and run_kind(model_dir) == "language_model":
        raise FileNotFoundError(
            f"Model directory {model_dir} is a character language model run (train.py --task "
            f"language_model), not a speech transcription run: use generate.py --model-dir {model_dir}, "
            f"or decode with it as transcribe.py --lm {model_dir}."
        )
    if missing:
        raise FileNotFoundError(
            f"Model directory {model_dir} lacks {', '.join(missing)}; expected the "
            "--output-dir of a finished `python train.py --task transcription` run."
        )
    feature_config = _read_feature_config(paths[FEATURE_CONFIG_FILE])
    vocabulary = load_vocabulary_file(paths[VOCABULARY_FILE])
    try:
        model = keras.models.load_model(paths[MODEL_FILE], compile=False)
    except Exception as error:  # Keras says "File not found" for a truncated zip
        raise unreadable_model_error(paths[MODEL_FILE], error) from error
    return model, vocabulary, feature_config


def warm_start(model, run_dir, *, feature_config, vocabulary):
    """Copy the weights of the finished run in `run_dir` into `model`.

    The run must have saved the same architecture (every weight's shape),
    the same features and the same vocabulary; otherwise a ValueError names
    the file and what differs. Fine-tuning starts from these weights.
    """
    paths = _run_files(run_dir)
    try:
        source, saved_vocabulary, saved_features = load_transcriber(run_dir)
    except FileNotFoundError as error:
        from serving.model_paths import with_export_hint

        hinted = with_export_hint(error, run_dir, "transcriber", flag="--init-from", exports=False)
        raise FileNotFoundError(f"--init-from: {hinted}") from error
    if saved_features != feature_config:
        ours, theirs = feature_config.to_dict(), saved_features.to_dict()
        differing = {k: (theirs[k], ours[k]) for k in ours if ours[k] != theirs[k]}
        raise ValueError(
            f"{paths[FEATURE_CONFIG_FILE]}: features differ from this run's "
            f"(field: saved value, this run's value) {differing}; pass the same feature flags."
        )
    if saved_vocabulary != vocabulary:
        raise ValueError(
            f"{paths[VOCABULARY_FILE]}: vocabulary {saved_vocabulary!r} differs from this run's {vocabulary!r}."
        )
    ours, theirs = model.weights, source.weights
    if len(ours) != len(theirs):
        raise ValueError(
            f"{paths[MODEL_FILE]} holds {len(theirs)} weights where this run's model has {len(ours)}; "
            "the model flags (--hidden-size, --num-layers, --bidirectional, --num-dense-layers, ...) "
            "must equal those of the run in --init-from."
        )
    for mine, saved in zip(ours, theirs):
        if tuple(mine.shape) != tuple(saved.shape):
            raise ValueError(
                f"{paths[MODEL_FILE]}: weight {saved.path} has shape {tuple(saved.shape)} where this "
                f"run's {mine.path} has {tuple(mine.shape)}; the model flags (--hidden-size, "
                "--frame-stack, ...) must equal those of the run in --init-from."
            )
    model.set_weights(source.get_weights())
    print(f"Initialised from {paths[MODEL_FILE]} ({len(ours)} weights).")


def builder_name(model_builder):
    """How config.json records `model_builder` (None: train.py's own `build_model`)."""
    return None if model_builder is None else f"{model_builder.__module__}.{model_builder.__qualname__}"


def check_same_builder(out, earlier, model_builder, what="run"):
    """A ValueError when the run in `out` (its config dict `earlier`, or None)
    was built by another builder than `model_builder`: its files are kept."""
    builder = builder_name(model_builder)
    if earlier is not None and earlier.get(MODEL_BUILDER_KEY) != builder:
        default = "train.py's own model (models.transcription.build_model)"
        raise ValueError(
            f"{os.path.join(out, CONFIG_FILE)}: this {what}'s model was built by "
            f"{earlier.get(MODEL_BUILDER_KEY) or default}, this one's by {builder or default}. Its files are "
            f"left as they are: give another --output-dir, or remove {out} to start again."
        )


def _train(config, model, data, vocabulary, resuming, callbacks):
    """Fit `model` as `run` does; `(epochs, train_seconds)`, the model holding its best weights.

    When it returns, the backup holds the weights and figures to evaluate
    (`TRAINED_WEIGHTS_FILE`, `TRAINED_STATE_FILE`) until `run` has written metrics.json.
    """
    out = config.output_dir
    clock = TrainingClock()  # training time, a killed run's included once its backup is restored
    with warnings.catch_warnings():
        # A training set of unknown length (none of train.py's own; a custom
        # `prepare_data` may make one): Keras learns it by running out of
        # data in the first epoch, and warns each time. Harmless here.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        train, steps_per_epoch = repeat_epochs(data.train)  # one iterator for the whole run
        history = model.fit(
            train,
            steps_per_epoch=steps_per_epoch,
            validation_data=data.validation,
            epochs=config.epochs,
            callbacks=[*_callbacks(config, data, vocabulary, resuming, clock), *callbacks],
            shuffle=False,  # the training dataset shuffles itself
            verbose="auto",
        )
    train_seconds = clock.seconds()
    # No epoch left to train (a killed run resumed with fewer --epochs): the backup's count.
    epochs_done = (history.epoch[-1] + 1) if history.epoch else (getattr(model, "_initial_epoch", 0) or 0)

    best_weights = os.path.join(out, BEST_WEIGHTS_FILE)
    if os.path.exists(best_weights):
        model.load_weights(best_weights)
    # The backup's work is done (BackupAndRestore removed its own files). Until
    # metrics.json is written, the backup keeps the trained weights instead: a run
    # killed in its evaluation or export resumes from them, not from scratch.
    trained_weights.keep_trained(
        os.path.join(out, BACKUP_DIR), model, {"epochs": epochs_done, "train_seconds": train_seconds}
    )
    return epochs_done, train_seconds


def run(config, *, callbacks=(), model_builder=None):
    """Train, evaluate and save a transcription model as `config` says.

    Args:
        config: A `Config`.
        callbacks: Extra Keras callbacks, run after the built-in ones (for
            tuning and tests).
        model_builder: Replaces `build_model` (same signature, returns a
            compiled `CTCModel`); for baselines such as
            `benchmarks.plain_baseline`, which train another model on the
            same data, callbacks and evaluation.

    Returns:
        The metrics dict also written to `output_dir/metrics.json`.

    With `config.ensemble > 1` the run is an ensemble of that many runs
    (`training.transcription_ensemble.run_ensemble`).

    `output_dir` may hold an earlier run with the same settings (other
    decoding flags, epochs or time budget allowed): a killed one resumes
    from its backup; a finished one is refused, or trained again with
    `config.overwrite`. One with other
    settings stops the run before it reads data or writes anything
    (`training.cli.check_run_directory`); nothing is written either until
    the data has been read and the model built (and warm-started).
    """
    if config.ensemble > 1:
        from training.transcription_ensemble import run_ensemble

        return run_ensemble(config, callbacks=callbacks, model_builder=model_builder)
    candidates = read_candidates(config)  # a bad file stops the run before it starts
    warps = candidate_warp_factors(config)
    closed_warps = f", mean over warps {list(warps)}" if warps else ""
    out = config.output_dir
    # An earlier run there with other settings stops this one before it writes anything,
    # and so does one whose model another builder made (e.g. benchmarks.plain_baseline's).
    builder = builder_name(model_builder)
    earlier = check_run_directory(out, config, config_file=CONFIG_FILE,
                                  ignore=RUN_DIRECTORY_IGNORED | {MODEL_BUILDER_KEY})
    check_same_builder(out, earlier, model_builder)
    if earlier is not None:
        check_not_finished(out, overwrite=config.overwrite, finished_file=METRICS_FILE)
    keras.utils.set_random_seed(config.seed)
    trained, resuming = trained_weights.resume_state(
        out, os.path.join(out, BACKUP_DIR), earlier, overwrite=config.overwrite, epochs=int, train_seconds=float
    )

    # Bad data stops the run before it writes anything. A resumed run's data are seeded
    # from the epoch it resumes at too, so its first epoch does not replay epoch 1's order.
    prepared = prepare_data(config, resumed_epoch=backup_epoch(os.path.join(out, BACKUP_DIR)) if resuming else 0)
    vocabulary, feature_config, data = prepared.vocabulary, prepared.feature_config, prepared.data
    print(f"Data: {data.description}")
    print(f"Utterances: {data.counts}; skipped: {len(data.skipped)}")
    skipped = list(data.skipped)
    if prepared.mix is not None:  # counted in metrics.json too
        print(f"Utterances of --mix-dataset: {prepared.mix.counts}; skipped: {len(prepared.mix.skipped)}")
        skipped += prepared.mix.skipped
    for source, reason in skipped[:10]:
        print(f"  skipped {source}: {reason}")
    if len(skipped) > 10:
        print(f"  ... and {len(skipped) - 10} more (all listed in {METRICS_FILE})")

    model = build_distributed(
        config.distribute,
        lambda: (model_builder or build_model)(
            config, num_features=feature_config.n_features, vocabulary_size=vocabulary.size
        ),
        batch_size=config.batch_size,
    )
    model.summary()
    if config.init_from is not None and not resuming and trained is None:  # a resumed run restores its own weights
        warm_start(model, config.init_from, feature_config=feature_config, vocabulary=vocabulary)

    # Data, model and warm start checked: the run is this directory's from here on.
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, CONFIG_FILE), {**config_to_dict(config), **({MODEL_BUILDER_KEY: builder} if builder else {})})
    if not resuming and trained is None and os.path.exists(os.path.join(out, BEST_WEIGHTS_FILE)):
        os.remove(os.path.join(out, BEST_WEIGHTS_FILE))  # from the earlier, finished run

    if trained is None:
        epochs_done, train_seconds = _train(config, model, data, vocabulary, resuming, callbacks)
    else:
        trained_weights.restore_trained(model, os.path.join(out, BACKUP_DIR))
        epochs_done, train_seconds = trained["epochs"], trained["train_seconds"]

    metrics = {
        **data_metrics(config, prepared),
        "epochs": epochs_done,
        "train_seconds": round(train_seconds, 1),
    }
    splits = {"val": data.validation, "test": getattr(data, "test", None)}
    for prefix, dataset in splits.items():
        if dataset is None:
            continue
        greedy = evaluate_transcription(model, dataset, vocabulary=vocabulary)
        metrics[f"{prefix}_cer"] = greedy["cer"]
        metrics[f"{prefix}_wer"] = greedy["wer"]
        metrics[f"{prefix}_utterances"] = greedy["utterances"]
        if config.beam_width > 1:
            beam = evaluate_transcription(
                model,
                dataset,
                vocabulary=vocabulary,
                strategy="beam_search",
                beam_width=config.beam_width,
            )
            metrics[f"{prefix}_cer_beam"] = beam["cer"]
            metrics[f"{prefix}_wer_beam"] = beam["wer"]
        if candidates is not None:
            closed = evaluate_closed_vocabulary(
                outputs_function(model), dataset, candidates, vocabulary=vocabulary,
                warps=warps,
            )
            metrics[f"{prefix}_cer_closed"] = closed["cer"]
            metrics[f"{prefix}_wer_closed"] = closed["wer"]
        print(
            f"{prefix}: CER {greedy['cer']:.2%}, WER {greedy['wer']:.2%} "
            f"(greedy, {greedy['utterances']} utterances)"
            + (
                f"; beam {config.beam_width}: CER {metrics[f'{prefix}_cer_beam']:.2%}, "
                f"WER {metrics[f'{prefix}_wer_beam']:.2%}"
                if config.beam_width > 1
                else ""
            )
            + (
                f"; closed vocabulary ({len(candidates)} texts{closed_warps}): "
                f"CER {metrics[f'{prefix}_cer_closed']:.2%}, "
                f"WER {metrics[f'{prefix}_wer_closed']:.2%}"
                if candidates is not None
                else ""
            )
        )

    save_transcriber(out, model, vocabulary, feature_config)
    metrics["export_dir"] = trained_weights.export_once(
        os.path.join(out, BACKUP_DIR), config_to_dict(config),
        lambda: export_for_serving(config, model, vocabulary, feature_config, data,
                                   {k: v for k, v in metrics.items() if k != "skipped_files"}, candidates),
    )
    write_json(os.path.join(out, METRICS_FILE), metrics)
    shutil.rmtree(os.path.join(out, BACKUP_DIR), ignore_errors=True)  # the run is finished
    print(f"Saved the model, vocabulary, feature config and metrics in {out}")
    return metrics

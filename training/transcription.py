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
import math
import os
import shutil
import typing
import warnings
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from data.speech_sources import is_synthetic_spec
from models.ctc_decoding import check_candidate_warps
from models.dtype_policy import DTYPE_POLICIES
from models.transcription import build_transcription_model
from models.transcription_evaluation import evaluate_closed_vocabulary, evaluate_transcription, outputs_function
from pipelines.audio_features import KINDS, NORMALISATIONS, FeatureConfig
from pipelines.epochs import repeat_epochs
from pipelines.speech_dataset import SPEC_AUGMENT_MAX_FREQUENCY, build_speech_datasets
from pipelines.time_stretch import stretch_batches
from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary
from training import trained_weights
from training.cli import RUN_DIRECTORY_IGNORED, check_not_finished, check_run_directory, config_to_dict, write_json
from training.cosine_annealing_callback import CosineAnnealingCallback
from training.data_seed import backup_epoch, data_seed
from training.distribute import DISTRIBUTE, build_distributed
from training.error_rate_callback import ErrorRateCallback
from training.non_finite_loss_callback import NonFiniteLossCallback
from training.time_budget_callback import TimeBudgetCallback
from training.training_clock import ClockedBackupAndRestore, TrainingClock

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


@dataclass(frozen=True)
class Config:
    """Every setting of a transcription run; each field is one CLI flag."""

    # data
    dataset: str = field(
        default="synthetic",  # the corpus the project generates offline
        metadata={
            "help": "What to train on: 'synthetic' (generated offline), a folder "
            "(manifest.tsv, LJSpeech or LibriSpeech layout) or a TFDS name "
            "(librispeech, ljspeech, spoken_digit)."
        },
    )
    data_dir: str | None = field(
        default=None,  # TFDS' own default (~/tensorflow_datasets)
        metadata={"help": "TFDS data directory for catalog datasets."},
    )
    cache_dir: str | None = field(
        default=None,  # <project>/runs/cache, shared by runs: features are computed once
        metadata={"help": "Where generated corpora and cached features live."},
    )
    max_duration_s: float = field(
        default=12.0,  # longer utterances are skipped (and counted)
        metadata={"help": "Skip utterances longer than this many seconds."},
    )
    strict: bool = field(
        default=False,  # skip bad files and count them in metrics.json
        metadata={"help": "Stop at the first bad audio file or transcript instead of skipping it."},
    )
    mix_dataset: str | None = field(
        default=None,  # e.g. "synthetic": many more voices for unseen speakers
        metadata={
            "help": "A second dataset spec whose training utterances are mixed into "
            "training (validation and test stay those of --dataset)."
        },
    )
    mix_fraction: float = field(
        default=0.3,  # share of training batches drawn from --mix-dataset
        metadata={"help": "Share of training batches taken from --mix-dataset."},
    )
    spec_augment: bool | None = field(
        # None: on for recorded speech, off when --dataset is only the synthetic corpus (its
        # 16,000 sentences by 50 voices are more than the 12-minute budget fits: on a slow day
        # `make train` reached 15.6% CER in 12 epochs with the masks, 12.8% without)
        default=None,
        metadata={
            "help": "SpecAugment-style masking of the training features (default: on, except when "
            "--dataset is only the synthetic corpus)."
        },
    )
    spec_augment_max_frequency: float = field(
        default=SPEC_AUGMENT_MAX_FREQUENCY,  # 1/8: 10 of 80 mel bands; two masks per utterance
        metadata={"help": "Widest SpecAugment frequency mask, as a fraction of the features (in (0, 1])."},
    )
    # features
    sample_rate: int = field(
        default=16000,  # audio is resampled to this rate
        metadata={"help": "Sample rate in Hz the audio is resampled to."},
    )
    feature_kind: str = field(
        default="log_mel",  # log-mel filter bank energies
        metadata={"help": "Feature kind.", "choices": KINDS},
    )
    n_mels: int = field(
        default=80,  # mel bands
        metadata={"help": "Number of mel bands."},
    )
    n_mfcc: int = field(
        default=20,  # only with --feature-kind mfcc
        metadata={"help": "MFCC coefficients kept when the feature kind is mfcc."},
    )
    fmin: float = field(
        default=20.0,  # librosa's mel filters start here
        metadata={"help": "Lowest mel frequency in Hz; e.g. 150 to leave out mains hum and rumble below the voice."},
    )
    fmax: float | None = field(
        default=None,  # sample_rate / 2
        metadata={"help": "Highest mel frequency in Hz (None: half the sample rate); e.g. 3800 for 8 kHz telephone audio."},
    )
    top_db: float | None = field(
        default=None,  # no floor
        metadata={"help": "Floor of the log-mel energies in dB below each utterance's loudest bin (None: no floor)."},
    )
    normalisation: str = field(
        default="utterance",  # mean/variance of each feature over the utterance's frames
        metadata={"help": "Per-utterance normalisation: 'utterance' (each feature on its own), "
                          "'utterance_scalar' (one mean/variance for all features: keeps the spectrum's shape) "
                          "or 'none'.", "choices": NORMALISATIONS},
    )
    trim_db: float | None = field(
        default=None,  # keep every frame
        metadata={"help": "Drop leading and trailing frames more than this many dB below each utterance's loudest "
                          "frame (silence trimming, e.g. 30 for recordings with long pauses; None: keep all)."},
    )
    time_stretch: float = field(
        default=0.0,  # off
        metadata={"help": "Largest slow-down of a training batch: each batch is stretched in time by 1, 1+s/3, "
                          "1+2s/3 or 1+s (tempo augmentation, for speakers of other speaking rates; 0: off)."},
    )
    frequency_warp: float = field(
        default=0.15,  # vocal tract length perturbation, for unseen speakers
        metadata={"help": "Largest random stretch of the mel axis in training (log_mel only; 0: off)."},
    )
    random_eq: float = field(
        default=0.0,  # off (tried on FSDD at 0.3: no change)
        metadata={"help": "Largest amplitude of the random smooth gain curve (tilt, bowl, S) added over the "
                          "mel axis in training, in normalised units (log_mel with --normalisation "
                          "utterance_scalar or none; 0: off)."},
    )
    input_noise: float = field(
        default=0.0,  # off
        metadata={"help": "Standard deviation of the Gaussian noise added to the (normalised, stacked) "
                          "features in training (0: off)."},
    )
    weight_noise: float = field(
        default=0.0,  # off
        metadata={"help": "Standard deviation of the Gaussian noise added to every weight for each training "
                          "step and taken off after its update (weight noise; not with --ema-momentum or "
                          "--distribute mirrored; 0: off)."},
    )
    # model
    hidden_size: int = field(
        default=256,  # units per direction
        metadata={"help": "Units per direction of each Elman recurrent layer."},
    )
    num_layers: int = field(
        default=2,  # stacked recurrent layers
        metadata={"help": "Number of recurrent layers."},
    )
    bidirectional: bool = field(
        default=True,  # read each utterance both ways
        metadata={"help": "Bidirectional recurrent layers."},
    )
    frame_stack: int = field(
        default=2,  # 20 ms per recurrent step at a 10 ms hop (espeak speaks ~20 characters a second)
        metadata={"help": "Frames stacked (and strided) into one recurrent step."},
    )
    num_dense_layers: int = field(
        default=1,  # ReLU front end on each stacked frame, before the recurrence
        metadata={"help": "ReLU dense layers (hidden-size units) before the recurrent layers."},
    )
    dropout: float = field(
        default=0.0,  # after the stacking and after each recurrent layer; the default corpus is
        # learned faster than it is overfitted in 12 minutes (0.1 -> 16.2% CER, 0 -> 14.4%)
        metadata={"help": "Dropout rate."},
    )
    dtype_policy: str = field(
        default="float32",  # mixed_bfloat16: CPUs with bfloat16 matrix units (AMX); mixed_float16: GPUs
        metadata={
            "help": "Keras dtype policy: 'float32', or mixed precision (16-bit compute, float32 weights, "
            "logits and CTC loss): 'mixed_bfloat16' (CPUs with bfloat16 matrix units, e.g. Intel AMX; "
            "TPUs) or 'mixed_float16' (GPUs).",
            "choices": DTYPE_POLICIES,
        },
    )
    init_from: str | None = field(
        default=None,  # random initialisation
        metadata={
            "help": "Output directory of a finished transcription run whose weights start this one "
            "(fine-tuning, e.g. from the synthetic corpus); its model settings, features and "
            "vocabulary must equal this run's."
        },
    )
    ensemble: int = field(
        default=1,  # one model; N trains N (seeds SEED..SEED+N-1) and exports them packed as one
        metadata={
            "help": "Train this many models, with seeds SEED, SEED+1, ..., into OUTPUT_DIR/members/seed_S "
            "(each with every flag given, --max-train-minutes each) and export them packed as one "
            "ensemble in OUTPUT_DIR/export; metrics.json scores the ensemble. Run the same command "
            "again to resume: finished members are reused."
        },
    )
    distribute: str = field(
        default="none",  # one device
        metadata={
            "help": "Data-parallel training: 'mirrored' splits each batch (--batch-size is the global batch) "
            "across every GPU (tf.distribute.MirroredStrategy; on a machine without GPUs, one replica on "
            "the CPU); 'none' trains on one device.",
            "choices": DISTRIBUTE,
        },
    )
    # optimisation
    batch_size: int = field(
        default=64,  # utterances per batch: on 2 cores a step of 64 short utterances costs ~1.45x one of 32
        # (the per-step products are small), so more audio is learned per minute (6-minute budget:
        # 15.6% / 17.3% CER against 18.9% / 18.5% at 32, seeds 1234 / 1; 128 costs 2x 64 and does worse)
        metadata={"help": "Utterances per batch."},
    )
    epochs: int = field(
        default=200,  # upper bound; the time budget (and early stopping) end runs sooner
        metadata={"help": "Maximum number of epochs."},
    )
    learning_rate: float = field(
        default=2e-3,  # Adam
        metadata={"help": "Adam learning rate."},
    )
    ema_momentum: float | None = field(
        default=None,  # off
        metadata={
            "help": "Keep an exponential moving average of the weights with this momentum (e.g. 0.99) "
            "and validate, checkpoint and export the averaged weights (None: off)."
        },
    )
    lr_schedule: str = field(
        default="cosine",  # decays to 2% by the end of --epochs or --max-train-minutes
        metadata={
            "help": "Learning-rate schedule: 'cosine' (decay to 2 percent by the end of "
            "--epochs or --max-train-minutes, whichever comes first) or 'constant'.",
            "choices": ("cosine", "constant"),
        },
    )
    max_train_minutes: float | None = field(
        default=12.0,  # keeps `make train` inside 15 minutes on 2 cores (about 1 minute of corpus, features and export)
        metadata={"help": "Training time budget in minutes (none: no budget)."},
    )
    early_stopping_patience: int = field(
        default=10,  # epochs without a better validation CER (the cosine decay and the budget end most runs)
        metadata={"help": "Stop after this many epochs without a better validation CER."},
    )
    # evaluation and outputs
    beam_width: int = field(
        default=16,  # for the final evaluation; per-epoch uses greedy decoding
        metadata={"help": "Beam width of the final beam-search evaluation (1: greedy only)."},
    )
    num_examples: int = field(
        default=3,  # reference/hypothesis pairs printed per epoch
        metadata={"help": "Reference/hypothesis pairs printed after each epoch."},
    )
    candidates: str | None = field(
        default=None,  # open vocabulary: greedy (and beam) decoding only
        metadata={
            "help": "A file of texts, one per line (digit words, commands): also score closed-vocabulary "
            "decoding, the most likely of these texts (val_cer_closed, val_wer_closed, test_...), and "
            "export with it: the export's text is always one of them."
        },
    )
    candidate_warps: str | None = field(
        default=None,  # closed-vocabulary decoding of the features as they are
        metadata={
            "help": "With --candidates: comma-separated mel-axis warp factors such as 0.92,0.96,1,1.04,1.08; "
            "each text is scored by its mean likelihood over the features warped by each factor (test-time "
            "warping), in the closed-vocabulary metrics and the export. log_mel features only.",
            "metavar": "F1,F2,...",
        },
    )
    export: bool = field(
        default=True,  # SavedModel for TF Serving in <output_dir>/export/transcriber/<version>
        metadata={"help": "Export the trained model as a TF Serving SavedModel in OUTPUT_DIR/export."},
    )
    output_dir: str = field(
        default="runs/transcription",  # config, metrics, model, logs
        metadata={"help": "Directory for the config, metrics, model, checkpoints and logs."},
    )
    overwrite: bool = field(
        default=False,  # a finished run with these settings in OUTPUT_DIR is refused, not replaced
        metadata={"help": "Train again into an OUTPUT_DIR that holds a finished run with these settings, "
                          "replacing its model and files (without it, such a directory is refused)."},
    )
    seed: int = field(
        default=1234,  # weights, dropout, shuffling, augmentation
        metadata={"help": "Random seed."},
    )

    def __post_init__(self):
        if self.spec_augment is None and isinstance(self.dataset, str):
            object.__setattr__(self, "spec_augment", not is_synthetic_spec(self.dataset))

        def fail(name, expected):
            raise ValueError(
                f"Received an invalid value for config field `{name}` "
                f"(--{name.replace('_', '-')}), expected {expected}, "
                f"got {getattr(self, name)!r}."
            )

        def is_int(value):
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value):
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        for name in ("dataset", "output_dir"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                fail(name, "a non-empty string")
        for name in ("data_dir", "cache_dir", "mix_dataset", "init_from", "candidates"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                fail(name, "a path or None")
        for name in (
            "sample_rate",
            "n_mels",
            "n_mfcc",
            "hidden_size",
            "num_layers",
            "frame_stack",
            "batch_size",
            "epochs",
            "early_stopping_patience",
            "beam_width",
            "ensemble",
        ):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                fail(name, "a positive integer")
        for name in ("num_examples", "num_dense_layers"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                fail(name, "a non-negative integer")
        if not is_int(self.seed):
            fail("seed", "an integer")
        for name in ("strict", "spec_augment", "bidirectional", "export", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "a bool")
        if self.ensemble > 1 and not self.export:
            # The members are packed in the export only; without it there is no ensemble.
            fail("ensemble", "1 with --no-export (an ensemble is saved as its packed export)")
        if self.ensemble > 1 and self.overwrite:
            # Nothing of a finished ensemble is trained again: its members are reused.
            fail("ensemble", "1 with --overwrite (an ensemble reuses its finished members: remove a member's "
                 "directory, OUTPUT_DIR/members/seed_S, to train it again)")
        if self.feature_kind not in KINDS:
            fail("feature_kind", f"one of {KINDS}")
        if self.distribute not in DISTRIBUTE:
            fail("distribute", f"one of {DISTRIBUTE}")
        if self.normalisation not in NORMALISATIONS:
            fail("normalisation", f"one of {NORMALISATIONS}")
        if self.feature_kind == "mfcc" and self.n_mfcc > self.n_mels:
            fail("n_mfcc", f"at most n_mels={self.n_mels}")
        if not is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            fail("dropout", "a float in [0, 1)")
        if not is_number(self.frequency_warp) or not 0.0 <= self.frequency_warp < 0.5:
            fail("frequency_warp", "a float in [0, 0.5)")
        if not is_number(self.random_eq) or not 0.0 <= self.random_eq < math.inf:
            fail("random_eq", "a finite float >= 0")
        if not is_number(self.input_noise) or not 0.0 <= self.input_noise < math.inf:
            fail("input_noise", "a finite float >= 0")
        if not is_number(self.weight_noise) or not 0.0 <= self.weight_noise < math.inf:
            fail("weight_noise", "a finite float >= 0")
        if not is_number(self.spec_augment_max_frequency) or not 0.0 < self.spec_augment_max_frequency <= 1.0:
            fail("spec_augment_max_frequency", "a fraction of the features in (0, 1]")
        if not is_number(self.time_stretch) or not 0.0 <= self.time_stretch <= 1.0:
            fail("time_stretch", "a float in [0, 1]")
        if not is_number(self.mix_fraction) or not 0.0 < self.mix_fraction < 1.0:
            fail("mix_fraction", "a float in (0, 1)")
        if self.ema_momentum is not None and (not is_number(self.ema_momentum) or not 0.0 < self.ema_momentum < 1.0):
            fail("ema_momentum", "None or a float in (0, 1)")
        if self.weight_noise and self.ema_momentum is not None:
            fail("ema_momentum", "None with --weight-noise (the average would read the noisy weights)")
        if self.weight_noise and self.distribute != "none":
            fail("weight_noise", "0 with --distribute mirrored (weight noise is not implemented across replicas)")
        if not is_number(self.learning_rate) or not 0 < self.learning_rate < math.inf:
            fail("learning_rate", "a finite positive float")
        if self.lr_schedule not in ("cosine", "constant"):
            fail("lr_schedule", "'cosine' or 'constant'")
        if self.dtype_policy not in DTYPE_POLICIES:
            fail("dtype_policy", f"one of {DTYPE_POLICIES}")
        if not is_number(self.max_duration_s) or not self.max_duration_s > 0:
            fail("max_duration_s", "a positive number of seconds")
        if not is_number(self.fmin) or not 0 <= self.fmin < self.sample_rate / 2:
            fail("fmin", f"a frequency in [0, {self.sample_rate / 2}) Hz")
        if self.fmax is not None and (not is_number(self.fmax) or not self.fmin < self.fmax <= self.sample_rate / 2):
            fail("fmax", f"None or a frequency in ({self.fmin}, {self.sample_rate / 2}] Hz")
        if self.top_db is not None and (not is_number(self.top_db) or not 0 < self.top_db < math.inf):
            fail("top_db", "a finite positive number of decibels or None")
        if self.trim_db is not None and (not is_number(self.trim_db) or not 0 < self.trim_db < math.inf):
            fail("trim_db", "a finite positive number of decibels or None")
        if self.max_train_minutes is not None and (
            not is_number(self.max_train_minutes) or not 0 < self.max_train_minutes < math.inf
        ):
            fail("max_train_minutes", "a finite positive number of minutes or None")
        if self.candidate_warps is not None:
            expected = "comma-separated distinct factors in [0.5, 1.5] such as 0.92,0.96,1,1.04,1.08"
            if self.candidates is None:
                fail("candidate_warps", "None without --candidates (the warps average the candidates' likelihoods)")
            if self.feature_kind != "log_mel":
                fail("candidate_warps", "None with --feature-kind mfcc (cepstra have no mel axis to warp)")
            try:
                check_candidate_warps(
                    [float(value) for value in str(self.candidate_warps).split(",")], self.candidates
                )
            except ValueError:
                fail("candidate_warps", expected)
        # Last: the feature fields it reads are checked by now.
        n_features = self.feature_config().n_features
        if self.spec_augment and int(n_features * self.spec_augment_max_frequency) == 0:
            # Below one band the masks would silently vanish.
            fail("spec_augment_max_frequency", f"at least 1/{n_features} (one of the {n_features} features)")

    def feature_config(self):
        """The `FeatureConfig` these fields select."""
        return FeatureConfig(
            sample_rate=self.sample_rate,
            kind=self.feature_kind,
            n_mels=self.n_mels,
            n_mfcc=self.n_mfcc,
            fmin=self.fmin,
            fmax=self.fmax,
            top_db=self.top_db,
            trim_db=self.trim_db,
            normalisation=self.normalisation,
        )


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


def read_candidates(config):
    """The texts of `config.candidates`, or None without it.

    A ValueError names the file and what is wrong (unreadable, empty,
    characters outside the vocabulary): runs read it before any training.
    """
    if config.candidates is None:
        return None
    from models.ctc_decoding import check_candidates, load_candidates

    candidates = load_candidates(config.candidates)
    try:
        return check_candidates(candidates, vocabulary=Vocabulary(SPEECH_ALPHABET))
    except ValueError as error:
        raise ValueError(f"--candidates {config.candidates}: {error}") from error


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
            message = str(error).replace("argument `dataset`", "argument `mix_dataset` (--mix-dataset)")
            raise ValueError(message) from error
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
    fields it searches (`tuning.search_spaces.TUNED_HYPERPARAMETERS`).
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
        from serving.model_store import with_export_hint

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

"""The settings of a transcription run: `Config`, one field per `train.py` flag,
and the texts of its `--candidates` file (`read_candidates`).

Kept apart from `training.transcription` (the run), and free of TensorFlow, so
that `train.py` builds its flags, answers `--help` and refuses a bad flag
before TensorFlow is imported (about 5 s). `training.transcription.Config` is
this class.
"""

import math
from dataclasses import dataclass, field

from data.speech_sources import is_synthetic_spec
from models.candidates import check_candidate_warps, check_candidates, load_candidates
from models.dtype_policy import DTYPE_POLICIES
from pipelines.audio_features import KINDS, NORMALISATIONS, SPEC_AUGMENT_MAX_FREQUENCY, FeatureConfig
from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary
from training.options import DISTRIBUTE


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


def read_candidates(config):
    """The texts of `config.candidates`, or None without it.

    A ValueError names the file and what is wrong (unreadable, empty,
    characters outside the vocabulary): runs read it before any training.
    """
    if config.candidates is None:
        return None
    candidates = load_candidates(config.candidates)
    try:
        return check_candidates(candidates, vocabulary=Vocabulary(SPEECH_ALPHABET))
    except ValueError as error:
        raise ValueError(f"--candidates {config.candidates}: {error}") from error

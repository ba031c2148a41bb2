"""The settings of a language-model run: `Config`, one field per `train.py` flag.

Kept apart from `training.language_model` (the run), and free of TensorFlow,
so that `train.py` builds its flags, answers `--help` and refuses a bad flag
before TensorFlow is imported (about 5 s). `training.language_model.Config` is
this class.
"""

import dataclasses
import math
import typing

from data.text_sources import DEFAULT_TEXT_SOURCE
from models.dtype_policy import DTYPE_POLICIES
from training.options import DISTRIBUTE


def _field(default, help_text, **metadata):
    return dataclasses.field(default=default, metadata={"help": help_text, **metadata})


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a language-model run needs; each field is one `train.py` flag."""

    # Data
    dataset: str = _field(  # "tinyshakespeare": data/tinyshakespeare.txt, shipped
        DEFAULT_TEXT_SOURCE,
        "text to model: a UTF-8 text file, 'tinyshakespeare' (the corpus shipped "
        "in data/), or 'tfds:tiny_shakespeare' (read from a prepared TFDS data "
        "dir, never downloaded)",
        metavar="PATH|NAME",
    )
    tfds_data_dir: typing.Optional[str] = _field(  # None: TFDS' default directory
        None, "TFDS data directory for 'tfds:' datasets", metavar="DIR"
    )
    validation_fraction: float = _field(  # last 10% of the characters, as TFDS splits
        0.1, "share of the characters, taken from the end, used for validation"
    )
    output_dir: str = _field(  # config.json, metrics.json, model.keras, ... go here
        "runs/language_model", "directory for the run's outputs", metavar="DIR"
    )
    overwrite: bool = _field(  # a finished run with these settings in DIR is refused, not replaced
        False, "train again into an --output-dir that holds a finished run with these settings, replacing "
        "its model and files (without it, such a directory is refused)"
    )
    # Model
    embedding_dim: int = _field(64, "size of the character embedding")  # 64
    hidden_size: int = _field(512, "units of each Elman layer")  # 512
    num_layers: int = _field(1, "number of stacked Elman layers")  # 1: fastest per epoch on CPU
    activation: str = _field(  # tanh: the classic Elman network
        "tanh", "activation of the recurrence", choices=("tanh", "relu")
    )
    output_hidden_size: int = _field(  # 512: a ReLU layer reads the state; 0: state -> logits
        512, "size of a ReLU layer between the last Elman layer and the logits (0: none)"
    )
    dropout: float = _field(  # after the embedding, each Elman layer and the output layer
        0.2, "dropout rate after the embedding, each Elman layer and the output layer"
    )
    dtype_policy: str = _field(  # float32; mixed_bfloat16: CPUs with AMX; mixed_float16: GPUs
        "float32",
        "Keras dtype policy: 'float32', or mixed precision (16-bit compute, float32 weights): "
        "'mixed_bfloat16' (CPUs with bfloat16 matrix units, e.g. Intel AMX; TPUs) or "
        "'mixed_float16' (GPUs)",
        choices=DTYPE_POLICIES,
    )
    # Training
    sequence_length: int = _field(100, "characters per training window (BPTT length)")  # 100
    batch_size: int = _field(32, "windows per batch")  # 32: more updates per epoch than 64
    epochs: int = _field(  # 50: an upper bound; the time budget usually ends the run first
        50, "maximum number of passes over the training text"
    )
    max_train_minutes: typing.Optional[float] = _field(  # 15 minutes; None: no budget
        15.0, "stop training after this many minutes (None: no limit)", metavar="MINUTES"
    )
    learning_rate: float = _field(3e-3, "initial Adam learning rate")  # 3e-3
    lr_schedule: str = _field(  # cosine: decays to 2 percent by the last epoch or the time budget
        "cosine",
        "learning-rate schedule: 'cosine' (decay to 2 percent by the end of --epochs or "
        "--max-train-minutes, whichever comes first), 'plateau' (halve when "
        "val_loss stalls), 'constant'",
        choices=("cosine", "plateau", "constant"),
    )
    clipnorm: float = _field(  # Elman RNNs need it: gradients explode through time
        1.0, "clip each gradient to this global norm (0: no clipping)"
    )
    distribute: str = _field(  # none: one device
        "none",
        "data-parallel training: 'mirrored' splits each batch (--batch-size is the global batch) across "
        "every GPU (tf.distribute.MirroredStrategy; on a machine without GPUs, one replica on the CPU); "
        "'none' trains on one device",
        choices=DISTRIBUTE,
    )
    seed: int = _field(0, "random seed (weights, dropout, shuffling, sampling)")  # 0
    # Sample printed at the end
    sample_prompt: str = _field(  # "": a newline if the text has one, else its first character
        "", "text the printed sample starts from ('' = start of a line)"
    )
    sample_length: int = _field(500, "characters to generate for the printed sample")  # 500
    temperature: float = _field(  # below 1 favours likelier characters; 0 is greedy
        0.8, "sampling temperature of the printed sample (0 = greedy)"
    )
    verbose: int = _field(  # 1: progress bars; 2: one line per epoch; 0: silent
        1, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch",
        choices=(0, 1, 2),
    )

    def __post_init__(self):
        positive_ints = (
            "embedding_dim", "hidden_size", "num_layers", "sequence_length",
            "batch_size", "epochs",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                _invalid(name, "a positive integer", value)
        if isinstance(self.output_hidden_size, bool) or not isinstance(self.output_hidden_size, int) or self.output_hidden_size < 0:
            _invalid("output_hidden_size", "a non-negative integer", self.output_hidden_size)
        if isinstance(self.sample_length, bool) or not isinstance(self.sample_length, int) or self.sample_length < 0:
            _invalid("sample_length", "a non-negative integer", self.sample_length)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            _invalid("seed", "a non-negative integer", self.seed)
        if not _is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            _invalid("dropout", "a float in [0, 1)", self.dropout)
        if not _is_real(self.validation_fraction) or not 0.0 < self.validation_fraction < 1.0:
            _invalid("validation_fraction", "a float in (0, 1)", self.validation_fraction)
        if not _is_real(self.learning_rate) or not 0.0 < self.learning_rate < math.inf:
            _invalid("learning_rate", "a positive float", self.learning_rate)
        if not _is_real(self.clipnorm) or not 0.0 <= self.clipnorm < math.inf:
            _invalid("clipnorm", "a float >= 0", self.clipnorm)
        if not _is_real(self.temperature) or not 0.0 <= self.temperature < math.inf:
            _invalid("temperature", "a float >= 0", self.temperature)
        if self.max_train_minutes is not None and (
            not _is_real(self.max_train_minutes) or not 0.0 < self.max_train_minutes < math.inf
        ):
            _invalid("max_train_minutes", "a positive number of minutes or None", self.max_train_minutes)
        if self.lr_schedule not in ("cosine", "plateau", "constant"):
            _invalid("lr_schedule", "'cosine', 'plateau' or 'constant'", self.lr_schedule)
        if self.distribute not in DISTRIBUTE:
            _invalid("distribute", f"one of {DISTRIBUTE}", self.distribute)
        if self.activation not in ("tanh", "relu"):
            _invalid("activation", "'tanh' or 'relu'", self.activation)
        if self.dtype_policy not in DTYPE_POLICIES:
            _invalid("dtype_policy", f"one of {DTYPE_POLICIES}", self.dtype_policy)
        if self.verbose not in (0, 1, 2):
            _invalid("verbose", "0, 1 or 2", self.verbose)
        for name in ("dataset", "output_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                _invalid(name, "a non-empty string", getattr(self, name))
        if not isinstance(self.sample_prompt, str):
            _invalid("sample_prompt", "a string", self.sample_prompt)
        if not isinstance(self.overwrite, bool):
            _invalid("overwrite", "a bool", self.overwrite)


def _is_real(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _invalid(name, expected, value):
    raise ValueError(
        f"Received an invalid value for config field `{name}` "
        f"(--{name.replace('_', '-')}), expected {expected}, got {value!r}."
    )

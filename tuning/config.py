"""`TuningConfig`: the hyperparameter search settings, one flag per field."""

import dataclasses
import math
import numbers
from typing import Optional

TUNERS = ("hyperband", "bayesian", "random")


def _field(default, help, **metadata):
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class TuningConfig:
    """How to search hyperparameters with keras-tuner (`train.py --tune`).

    Every field is one `train.py` flag (`max_trials` -> `--max-trials`). The
    search-range fields are optional overrides of the task's own space
    (`tuning.search_spaces`); `None` keeps the task's default bound. The
    defaults finish a search on the default corpus within about 20 minutes on
    2 CPU cores: `time_budget_minutes` stops handing out new trials (and ends
    the running ones after their current batch) once it is spent, and running
    the same command again resumes the search where it stopped.

    Raises:
        ValueError: naming the field, the expected and the received value,
            for a bad value or an empty search range (minimum above maximum).
    """

    # Run a keras-tuner search instead of one training run.
    tune: bool = _field(False, "search hyperparameters with keras-tuner instead of training once")
    # keras-tuner algorithm: Hyperband, Bayesian optimisation or random search.
    tuner: str = _field("hyperband", "search algorithm", choices=TUNERS)
    # Upper bound on the number of trials (model configurations) in the search.
    max_trials: int = _field(8, "maximum number of trials (model configurations)")
    # Hyperband: the most epochs one model gets; bayesian/random: epochs per trial.
    max_epochs: int = _field(3, "epochs per trial (Hyperband: the most epochs one model gets)")
    # Models trained per trial from fresh initialisations; the objective is their mean.
    executions_per_trial: int = _field(1, "trainings per trial, objective averaged")
    # Wall-clock budget of the search in minutes per command (0 = no limit).
    time_budget_minutes: float = _field(
        13.0, "stop starting trials after this many minutes (0: no limit); rerun to continue"
    )
    # Hyperband's reduction factor between successive-halving rounds.
    hyperband_factor: int = _field(3, "Hyperband reduction factor (at least 2)")
    # Seed of the search algorithm (which hyperparameters are sampled).
    tuning_seed: int = _field(1234, "random seed of the search algorithm")
    # Search-range overrides (None keeps the task's default bound).
    min_hidden_size: Optional[int] = _field(None, "smallest hidden size searched (task default if None)")
    max_hidden_size: Optional[int] = _field(None, "largest hidden size searched (task default if None)")
    min_num_layers: Optional[int] = _field(None, "fewest recurrent layers searched (task default if None)")
    max_num_layers: Optional[int] = _field(None, "most recurrent layers searched (task default if None)")
    min_learning_rate: Optional[float] = _field(None, "smallest learning rate searched (task default if None)")
    max_learning_rate: Optional[float] = _field(None, "largest learning rate searched (task default if None)")
    min_dropout: Optional[float] = _field(None, "smallest dropout searched (task default if None)")
    max_dropout: Optional[float] = _field(None, "largest dropout searched (task default if None)")

    def __post_init__(self):
        if not isinstance(self.tune, bool):
            raise TypeError(f"TuningConfig field `tune` expects a bool, got {self.tune!r}.")
        if self.tuner not in TUNERS:
            raise ValueError(
                f"TuningConfig field `tuner` expects one of {', '.join(TUNERS)}, "
                f"got {self.tuner!r}."
            )
        for name in ("max_trials", "max_epochs", "executions_per_trial"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(
                    f"TuningConfig field `{name}` expects a positive integer, got {value!r}."
                )
        if not _is_int(self.hyperband_factor) or self.hyperband_factor < 2:
            raise ValueError(
                "TuningConfig field `hyperband_factor` expects an integer of at "
                f"least 2, got {self.hyperband_factor!r}."
            )
        if not _is_int(self.tuning_seed) or not 0 <= self.tuning_seed < 2**32:
            # The range of keras.utils.set_random_seed, which the search calls with it.
            raise ValueError(
                "TuningConfig field `tuning_seed` expects an integer in 0..4294967295 (2**32 - 1), "
                f"got {self.tuning_seed!r}."
            )
        budget = self.time_budget_minutes
        if not _is_real(budget) or not math.isfinite(budget) or budget < 0:
            raise ValueError(
                "TuningConfig field `time_budget_minutes` expects a number >= 0 "
                f"(0 for no limit), got {budget!r}."
            )
        for name in ("min_hidden_size", "max_hidden_size", "min_num_layers", "max_num_layers"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(
                    f"TuningConfig field `{name}` expects a positive integer or None, got {value!r}."
                )
        for name in ("min_learning_rate", "max_learning_rate"):
            value = getattr(self, name)
            if value is not None and (not _is_real(value) or not 0 < value < 1):
                raise ValueError(
                    f"TuningConfig field `{name}` expects a float in (0, 1) or None, got {value!r}."
                )
        for name in ("min_dropout", "max_dropout"):
            value = getattr(self, name)
            if value is not None and (not _is_real(value) or not 0 <= value < 1):
                raise ValueError(
                    f"TuningConfig field `{name}` expects a float in [0, 1) or None, got {value!r}."
                )
        for quantity in ("hidden_size", "num_layers", "learning_rate", "dropout"):
            low = getattr(self, f"min_{quantity}")
            high = getattr(self, f"max_{quantity}")
            if low is not None and high is not None and low > high:
                raise ValueError(
                    f"Empty search range for `{quantity}`: TuningConfig field "
                    f"`min_{quantity}` ({low!r}) is greater than `max_{quantity}` "
                    f"({high!r}); expected min <= max."
                )

    @classmethod
    def from_flags(cls, namespace):
        """Build from parsed `train.py` flags; tuning flags without `--tune` are an error."""
        names = [f.name for f in dataclasses.fields(cls)]
        values = {name: getattr(namespace, name) for name in names if hasattr(namespace, name)}
        stray = sorted(name for name in values if name != "tune")
        if stray and not values.get("tune", False):
            flags = ", ".join("--" + name.replace("_", "-") for name in stray)
            raise ValueError(f"{flags} take effect only with --tune: add --tune or drop them.")
        return cls(**values)

    def range_overrides(self):
        """The search-range fields that were set, as `{"min_hidden_size": 64, ...}`."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name.startswith(("min_", "max_"))
            and f.name not in ("max_trials", "max_epochs")
            and getattr(self, f.name) is not None
        }

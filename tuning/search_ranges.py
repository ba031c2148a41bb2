"""`SearchRanges`: the bounds of one task's hyperparameter search space."""

import dataclasses
import numbers


@dataclasses.dataclass(frozen=True)
class SearchRanges:
    """Inclusive bounds of the four tuned hyperparameters.

    Each task declares its default ranges next to its search space
    (`tuning.search_spaces`); `TuningConfig` flags override single bounds
    with `with_overrides`. Hidden sizes are sampled on a log scale in
    factors of 2 from `min_hidden_size` (64, 128, 256, 512), layers
    uniformly, the learning rate log-uniformly, dropout in steps of 0.05.

    Raises:
        ValueError: naming the bound, when a bound is out of its domain or
            a range is empty (minimum above maximum).
    """

    # Units of every recurrent layer (per direction for bidirectional layers).
    min_hidden_size: int = 64
    max_hidden_size: int = 512
    # Stacked recurrent layers.
    min_num_layers: int = 1
    max_num_layers: int = 3
    # Adam's learning rate.
    min_learning_rate: float = 3e-4
    max_learning_rate: float = 3e-3
    # Dropout between layers.
    min_dropout: float = 0.0
    max_dropout: float = 0.3

    def __post_init__(self):
        for name in ("min_hidden_size", "max_hidden_size", "min_num_layers", "max_num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(
                    f"Search range bound `{name}` expects a positive integer, got {value!r}."
                )
        for name in ("min_learning_rate", "max_learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
                raise ValueError(
                    f"Search range bound `{name}` expects a float in (0, 1), got {value!r}."
                )
        for name in ("min_dropout", "max_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
                raise ValueError(
                    f"Search range bound `{name}` expects a float in [0, 1), got {value!r}."
                )
        for quantity in ("hidden_size", "num_layers", "learning_rate", "dropout"):
            low = getattr(self, f"min_{quantity}")
            high = getattr(self, f"max_{quantity}")
            if low > high:
                raise ValueError(
                    f"Empty search range for `{quantity}`: min {low!r} > max {high!r}. "
                    f"Expected min <= max; set both --min-{quantity.replace('_', '-')} "
                    f"and --max-{quantity.replace('_', '-')}."
                )

    def with_overrides(self, **bounds):
        """A copy with the given bounds replaced (`min_hidden_size=128`, ...), validated."""
        unknown = sorted(set(bounds) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(
                f"Unknown search range bound(s) {unknown}; expected some of "
                f"{[f.name for f in dataclasses.fields(self)]}."
            )
        return dataclasses.replace(self, **bounds)

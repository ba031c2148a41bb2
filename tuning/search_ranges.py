"""`SearchRanges`: the bounds of one task's hyperparameter search space."""

import dataclasses
import math
import numbers

# The hyperparameters every space samples (`tuning.search_spaces`); a task
# config's fields of these names are overridden by the search.
TUNED_HYPERPARAMETERS = ("hidden_size", "num_layers", "learning_rate", "dropout")
# The grids of the two stepped hyperparameters (`tuning.search_spaces`):
# hidden sizes go in factors of 2 from the minimum, dropout in steps of 0.05.
HIDDEN_SIZE_FACTOR = 2
DROPOUT_STEP = 0.05


@dataclasses.dataclass(frozen=True)
class SearchRanges:
    """Inclusive bounds of the four tuned hyperparameters.

    Each task declares its default ranges next to its search space
    (`tuning.search_spaces`); `TuningConfig` flags override single bounds
    with `with_overrides`. Hidden sizes are sampled on a log scale in
    factors of 2 from `min_hidden_size` (64, 128, 256, 512), layers
    uniformly, the learning rate log-uniformly, dropout in steps of 0.05.

    Raises:
        ValueError: naming the bound, when a bound is out of its domain,
            a range is empty (minimum above maximum), or a maximum is off
            its grid (hidden sizes: the minimum times a power of 2; dropout:
            the minimum plus a multiple of 0.05), so it would never be tried.
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
        low, high = self.min_hidden_size, self.max_hidden_size
        sizes = [low]
        while sizes[-1] * HIDDEN_SIZE_FACTOR <= high:
            sizes.append(sizes[-1] * HIDDEN_SIZE_FACTOR)
        if sizes[-1] != high:
            raise ValueError(
                f"Search range for `hidden_size` {low}..{high} would never try {high}: hidden sizes go in "
                f"factors of {HIDDEN_SIZE_FACTOR} from the minimum ({', '.join(map(str, sizes))}). Expected "
                f"the maximum to be the minimum times a power of {HIDDEN_SIZE_FACTOR}; set --max-hidden-size "
                f"{sizes[-1]} or {sizes[-1] * HIDDEN_SIZE_FACTOR}."
            )
        low, high = self.min_dropout, self.max_dropout
        steps = (high - low) / DROPOUT_STEP
        if abs(steps - round(steps)) > 1e-6:
            grid = [round(low + i * DROPOUT_STEP, 10) for i in range(math.floor(steps) + 1)]
            below, above = grid[-1], round(grid[-1] + DROPOUT_STEP, 10)
            raise ValueError(
                f"Search range for `dropout` {low:g}..{high:g} would never try {high:g}: dropout goes in "
                f"steps of {DROPOUT_STEP:g} from the minimum ({', '.join(f'{v:g}' for v in grid)}). "
                f"Expected the maximum to be the minimum plus a multiple of {DROPOUT_STEP:g}; set --max-dropout "
                f"{below:g}" + (f" or {above:g}." if above < 1 else ".")
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

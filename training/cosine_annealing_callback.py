"""`CosineAnnealingCallback`: a cosine learning-rate decay over steps or time."""

import math
import time

import keras


class CosineAnnealingCallback(keras.callbacks.Callback):
    """Set the learning rate to a cosine decay over the run, before each batch.

    The run's progress is the larger of the share of `total_steps` done and
    the share of `max_seconds` spent, so the rate reaches `final_fraction` of
    its initial value when either the planned steps or the time budget run
    out, whichever comes first:

        lr = lr0 * (f + (1 - f) * (1 + cos(pi * progress)) / 2)

    Args:
        initial_learning_rate: `lr0`, a positive float.
        total_steps: Positive integer, the planned number of training steps
            (epochs times steps per epoch), or None when the epoch length is
            unknown (then `max_seconds` alone sets the pace).
        max_seconds: Optional time budget in seconds; None decays by steps
            only. At least one of `total_steps` and `max_seconds` is needed.
        final_fraction: `f`, float in [0, 1], the rate's floor relative to
            `lr0`. Default 0.02.
    """

    def __init__(self, initial_learning_rate, total_steps, *, max_seconds=None, final_fraction=0.02):
        super().__init__()
        if not initial_learning_rate > 0:
            raise ValueError(
                "Received an invalid value for argument `initial_learning_rate`, "
                f"expected a positive float, got {initial_learning_rate!r}."
            )
        if total_steps is not None and (
            isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0
        ):
            raise ValueError(
                "Received an invalid value for argument `total_steps`, expected "
                f"a positive integer or None, got {total_steps!r}."
            )
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(
                "Received an invalid value for argument `max_seconds`, expected "
                f"a positive number or None, got {max_seconds!r}."
            )
        if total_steps is None and max_seconds is None:
            raise ValueError(
                "Received `total_steps=None` and `max_seconds=None`: the decay needs "
                "the planned number of steps, a time budget, or both."
            )
        if not 0.0 <= final_fraction <= 1.0:
            raise ValueError(
                "Received an invalid value for argument `final_fraction`, "
                f"expected a float in [0, 1], got {final_fraction!r}."
            )
        self.initial_learning_rate = float(initial_learning_rate)
        self.total_steps = total_steps
        self.max_seconds = max_seconds
        self.final_fraction = final_fraction
        self._start = None
        self._step = 0

    def learning_rate(self, step, seconds):
        """The rate after `step` steps and `seconds` of training."""
        progress = 0.0 if self.total_steps is None else step / self.total_steps
        if self.max_seconds is not None:
            progress = max(progress, seconds / self.max_seconds)
        progress = min(progress, 1.0)
        f = self.final_fraction
        return self.initial_learning_rate * (f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def on_train_begin(self, logs=None):
        self._start = time.monotonic()
        self._step = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._step is None:
            # The optimizer's own count, read at the first batch: a run that
            # `BackupAndRestore` resumed continues the decay where it stopped.
            self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        rate = self.learning_rate(self._step, time.monotonic() - self._start)
        self.model.optimizer.learning_rate.assign(rate)
        self._step += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )

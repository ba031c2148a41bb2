"""`TimeBudgetCallback`: stop training when the time budget is spent."""

import keras

from training.training_clock import TrainingClock


class TimeBudgetCallback(keras.callbacks.Callback):
    """Stop `fit` before it overruns `max_seconds` of training time.

    At each epoch end it stops when another epoch as long as the mean one so
    far would overrun the budget. Within an epoch it stops after a batch when
    another batch as long as that one, and then the epoch's end, would
    overrun it: Keras still validates an epoch cut short, so the time the
    previous epoch took from its last batch to its end (validation and the
    end-of-epoch callbacks before this one) is kept free.
    `stopped_early` tells whether the budget ended the run.

    Args:
        max_seconds: The budget in seconds, or None for no budget.
        clock: Optional `training.training_clock.TrainingClock` shared with
            a `ClockedBackupAndRestore`, so that a resumed run counts the
            killed run's training; None: a clock of its own, started when
            training begins.
    """

    def __init__(self, max_seconds, clock=None):
        super().__init__()
        self.max_seconds = max_seconds
        self.stopped_early = False
        self._own_clock = clock is None
        self.clock = clock
        self._epochs = 0
        self._last_batch_end = 0.0  # or the epoch's start; set by on_epoch_begin
        self._tail = 0.0  # last batch -> epoch end, in the previous epoch

    def _elapsed(self):
        return self.clock.seconds()

    def on_train_begin(self, logs=None):
        if self._own_clock:
            self.clock = TrainingClock()
        self._epochs = 0
        self._tail = 0.0
        self.stopped_early = False

    def on_epoch_begin(self, epoch, logs=None):
        if self.max_seconds is not None:
            self._last_batch_end = self._elapsed()

    def on_train_batch_end(self, batch, logs=None):
        if self.max_seconds is None:
            return
        elapsed = self._elapsed()
        batch_seconds = elapsed - self._last_batch_end
        self._last_batch_end = elapsed
        if elapsed > self.max_seconds:
            self._stop(f"the time budget of {self.max_seconds:.0f} s is spent")
        elif elapsed + batch_seconds + self._tail > self.max_seconds:
            self._stop(
                f"another batch (~{batch_seconds:.1f} s) and this epoch's "
                f"validation (~{self._tail:.0f} s) would overrun the time "
                f"budget of {self.max_seconds:.0f} s"
            )

    def on_epoch_end(self, epoch, logs=None):
        self._epochs += 1
        if self.max_seconds is None:
            return
        elapsed = self._elapsed()
        self._tail = max(0.0, elapsed - self._last_batch_end)
        if self.model.stop_training:
            return
        mean = elapsed / (self.clock.earlier_epochs + self._epochs)
        if elapsed + mean > self.max_seconds:
            self._stop(
                f"another epoch (~{mean:.0f} s) would overrun "
                f"the time budget of {self.max_seconds:.0f} s"
            )

    def _stop(self, reason):
        if not self.stopped_early:
            print(f"Stopping: {reason}.")
        self.stopped_early = True
        self.model.stop_training = True

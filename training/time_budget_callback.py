"""`TimeBudgetCallback`: stop training when the time budget is spent."""

import keras

from training.training_clock import TrainingClock


class TimeBudgetCallback(keras.callbacks.Callback):
    """Stop `fit` before it overruns `max_seconds` of training time.

    At each epoch end it stops when another epoch as long as the mean one so
    far would overrun the budget; within an epoch it stops after the batch
    that overruns it (Keras still validates that epoch). `stopped_early`
    tells whether the budget ended the run.

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

    def _elapsed(self):
        return self.clock.seconds()

    def on_train_begin(self, logs=None):
        if self._own_clock:
            self.clock = TrainingClock()
        self._epochs = 0
        self.stopped_early = False

    def on_train_batch_end(self, batch, logs=None):
        if self.max_seconds is not None and self._elapsed() > self.max_seconds:
            self._stop(f"the time budget of {self.max_seconds:.0f} s is spent")

    def on_epoch_end(self, epoch, logs=None):
        self._epochs += 1
        if self.max_seconds is None or self.model.stop_training:
            return
        elapsed = self._elapsed()
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

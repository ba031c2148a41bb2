"""`TimeBudgetCallback`: stop training when the time budget is spent."""

import time

import keras


class TimeBudgetCallback(keras.callbacks.Callback):
    """Stop `fit` before it overruns `max_seconds` of training time.

    At each epoch end it stops when another epoch as long as the mean one so
    far would overrun the budget; within an epoch it stops after the batch
    that overruns it (Keras still validates that epoch). `stopped_early`
    tells whether the budget ended the run.

    Args:
        max_seconds: The budget in seconds, or None for no budget.
    """

    def __init__(self, max_seconds):
        super().__init__()
        self.max_seconds = max_seconds
        self.stopped_early = False
        self._start = None
        self._epochs = 0

    def _elapsed(self):
        return time.monotonic() - self._start

    def on_train_begin(self, logs=None):
        self._start = time.monotonic()
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
        if elapsed + elapsed / self._epochs > self.max_seconds:
            self._stop(
                f"another epoch (~{elapsed / self._epochs:.0f} s) would overrun "
                f"the time budget of {self.max_seconds:.0f} s"
            )

    def _stop(self, reason):
        if not self.stopped_early:
            print(f"Stopping: {reason}.")
        self.stopped_early = True
        self.model.stop_training = True

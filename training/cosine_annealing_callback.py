"""`CosineAnnealingCallback`: a cosine learning-rate decay over steps or time."""

import math

import keras

from training.training_clock import TrainingClock


class CosineAnnealingCallback(keras.callbacks.Callback):
    """Set the learning rate to a cosine decay over the run, before each batch.

    The run's progress is the larger of the share of `total_steps` done and
    the share of `max_seconds` spent, so the rate reaches `final_fraction` of
    its initial value when either the planned steps or the time budget run
    out, whichever comes first:

        lr = lr0 * (f + (1 - f) * (1 + cos(pi * progress)) / 2)

    When the epoch length is not known in advance (say, batches sampled from
    two datasets until one runs out), pass `epochs` instead of `total_steps`:
    the planned steps become `epochs` times the length of an epoch: the steps
    the optimizer has taken per epoch done when a resumed run starts, else the
    steps of the first epoch trained (until it ends, only the time budget
    moves the decay).

    Args:
        initial_learning_rate: `lr0`, a positive float.
        total_steps: Positive integer, the planned number of training steps
            (epochs times steps per epoch), or None when the epoch length is
            unknown (then `epochs`, `max_seconds` or both set the pace).
        epochs: Optional positive integer, the planned number of epochs when
            `total_steps` is None; times the epoch length (see above), it sets
            the planned steps.
        max_seconds: Optional time budget in seconds; None decays by steps
            only. At least one of `total_steps`, `epochs` and `max_seconds`
            is needed.
        final_fraction: `f`, float in [0, 1], the rate's floor relative to
            `lr0`. Default 0.02.
        clock: Optional `training.training_clock.TrainingClock` shared with
            a `ClockedBackupAndRestore`, so that a resumed run's time share
            counts the killed run's training; None: a clock of its own,
            started when training begins.
        resume_from_optimizer: True (default): the decay starts at the
            optimizer's step count, so a resumed run goes on where it
            stopped; False: every fit decays anew from step 0, whatever
            optimizer state the model brought (a Hyperband round that goes
            on from an earlier trial's checkpoint).
    """

    def __init__(
        self, initial_learning_rate, total_steps, *, epochs=None, max_seconds=None, final_fraction=0.02,
        clock=None, resume_from_optimizer=True,
    ):
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
        if epochs is not None and (
            isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0
        ):
            raise ValueError(
                "Received an invalid value for argument `epochs`, expected "
                f"a positive integer or None, got {epochs!r}."
            )
        if epochs is not None and total_steps is not None:
            raise ValueError(
                f"Received `total_steps={total_steps!r}` and `epochs={epochs!r}`: pass "
                "`epochs` only when the number of steps is unknown (`total_steps=None`)."
            )
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(
                "Received an invalid value for argument `max_seconds`, expected "
                f"a positive number or None, got {max_seconds!r}."
            )
        if total_steps is None and epochs is None and max_seconds is None:
            raise ValueError(
                "Received `total_steps=None`, `epochs=None` and `max_seconds=None`: the "
                "decay needs the planned number of steps or epochs, a time budget, or both."
            )
        if not 0.0 <= final_fraction <= 1.0:
            raise ValueError(
                "Received an invalid value for argument `final_fraction`, "
                f"expected a float in [0, 1], got {final_fraction!r}."
            )
        self.initial_learning_rate = float(initial_learning_rate)
        self.total_steps = total_steps
        self.epochs = epochs
        self.max_seconds = max_seconds
        self.final_fraction = final_fraction
        self._own_clock = clock is None
        self.clock = clock
        self.resume_from_optimizer = resume_from_optimizer
        self._step = 0
        self._epoch_start_step = None
        self._epoch = 0

    def learning_rate(self, step, seconds):
        """The rate after `step` steps and `seconds` of training."""
        progress = 0.0 if self.total_steps is None else step / self.total_steps
        if self.max_seconds is not None:
            progress = max(progress, seconds / self.max_seconds)
        progress = min(progress, 1.0)
        f = self.final_fraction
        return self.initial_learning_rate * (f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def on_train_begin(self, logs=None):
        if self._own_clock:
            self.clock = TrainingClock()
        self._step = None if self.resume_from_optimizer else 0  # None: the first batch reads the optimizer's

    def on_train_batch_begin(self, batch, logs=None):
        if self._step is None:
            # The optimizer's own count, read at the first batch: a run that
            # `BackupAndRestore` resumed continues the decay where it stopped.
            self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            self._epoch_start_step = self._step
            if self.total_steps is None and self.epochs is not None and self._epoch > 0 and self._step > 0:
                # A resumed run (`initial_epoch` > 0): the epochs done give the length.
                self.total_steps = self.epochs * max(1, round(self._step / self._epoch))
        rate = self.learning_rate(self._step, self.clock.seconds())
        self.model.optimizer.learning_rate.assign(rate)

    def on_train_batch_end(self, batch, logs=None):
        # Counted at the end: with an unknown epoch length, Keras begins one
        # batch more than it trains (the one that finds the data exhausted).
        self._step += 1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._step is not None:  # else the first batch reads the optimizer's count
            self._epoch_start_step = self._step

    def on_epoch_end(self, epoch, logs=None):
        if self.total_steps is None and self.epochs is not None and self._step is not None:
            # The first epoch trained gives the epoch length.
            self.total_steps = self.epochs * (self._step - self._epoch_start_step) or None
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )

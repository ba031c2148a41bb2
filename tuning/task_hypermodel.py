"""`TaskHyperModel`: a keras-tuner `HyperModel` around one task's search space."""

import math
import time

import keras
import keras_tuner

from training.cosine_annealing_callback import CosineAnnealingCallback

LR_SCHEDULES = ("cosine", "plateau", "constant")


class _StopAtDeadline(keras.callbacks.Callback):
    """Ends training after the batch that passes `deadline` (a `time.time()`).

    Keras still validates that (partial) epoch, so the trial reports its
    objective and counts as completed with the epochs it had; `fired` tells
    the trial table to mark it as cut short.
    """

    def __init__(self, deadline):
        super().__init__()
        self.deadline = deadline
        self.fired = False

    def on_train_batch_end(self, batch, logs=None):
        if self.deadline is not None and not self.model.stop_training and time.time() >= self.deadline:
            print("\n[tuning] time budget spent: this trial stops after this batch.", flush=True)
            self.model.stop_training = True
            self.fired = True


class TaskHyperModel(keras_tuner.HyperModel):
    """Builds a task's models from `hp` and fits them with the task's callbacks.

    `build(hp)` calls `build_model(hp)` (a search space of
    `tuning.search_spaces` bound to the task's fixed arguments). `fit` puts
    the task's own callbacks (`make_callbacks()`, a fresh list for every
    fit, e.g. the one that writes `val_cer` into the logs) *before*
    keras-tuner's, so the objective is in the epoch logs when keras-tuner's
    checkpoint callback reads them, and returns the metrics of the best
    epoch plus `trial_epochs` (epochs trained in this fit) and
    `trial_seconds` (its wall-clock time), which keras-tuner records on the
    trial and `tuning.trials_table` writes out.

    Args:
        build_model: `build_model(hp) -> keras.Model`, compiled.
        objective: Name of the minimised metric in the epoch logs
            (`"val_cer"`, `"val_loss"`).
        make_callbacks: Optional `make_callbacks() -> list` of the task's
            callbacks for one fit.
        deadline: Optional `time.time()` after which a running fit stops
            after its current batch (the search's time budget).
        lr_schedule: How each fit moves the learning rate, as the task's
            training run does (`--lr-schedule`): `"cosine"` decays it from
            the trial's sampled rate (`hp`'s `learning_rate`, else the
            compiled one) to 2 percent of it by the fit's last epoch (over
            `epochs - initial_epoch`: a Hyperband round decays over its own
            epochs); `"plateau"` halves it when `val_loss` stalls for an
            epoch (floor 1e-5); `"constant"` (default) leaves it.
    """

    def __init__(self, *, build_model, objective, make_callbacks=None, deadline=None, lr_schedule="constant"):
        super().__init__(name="task_hypermodel", tunable=True)
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"Received an invalid value for argument `lr_schedule`, expected one of {LR_SCHEDULES}, "
                f"got {lr_schedule!r}."
            )
        self._build_model = build_model
        self.objective = objective
        self._make_callbacks = make_callbacks or (lambda: [])
        self.deadline = deadline
        self.lr_schedule = lr_schedule

    def build(self, hp):
        return self._build_model(hp)

    def make_task_callbacks(self):
        """A fresh list of the task's own callbacks for one fit."""
        return list(self._make_callbacks())

    def schedule_callbacks(self, hp, model, *, epochs, initial_epoch=0, steps_per_epoch=None):
        """The learning-rate callbacks of one fit of `model` (see `lr_schedule`)."""
        if self.lr_schedule == "plateau":
            from training.language_model import plateau_schedule  # the only task that has it

            return [plateau_schedule()]
        if self.lr_schedule == "constant" or epochs - initial_epoch <= 0:
            return []
        rate = hp.get("learning_rate") if hp is not None and "learning_rate" in hp.values else None
        if rate is None:
            rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        fit_epochs = epochs - initial_epoch
        # Counted from the fit's start: a Hyperband round that goes on from an earlier trial's
        # checkpoint decays anew from the sampled rate, whatever optimizer state it brought.
        if steps_per_epoch:
            return [CosineAnnealingCallback(rate, fit_epochs * int(steps_per_epoch), resume_from_optimizer=False)]
        # An epoch of unknown length: the first one gives it.
        return [CosineAnnealingCallback(rate, None, epochs=fit_epochs, resume_from_optimizer=False)]

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        stop = _StopAtDeadline(self.deadline)
        schedule = self.schedule_callbacks(
            hp, model, epochs=kwargs.get("epochs", 1), initial_epoch=kwargs.get("initial_epoch", 0),
            steps_per_epoch=kwargs.get("steps_per_epoch"),
        )
        # The schedule first: the task's callbacks validate at the rate the epoch trained with.
        callbacks = [*schedule, *self.make_task_callbacks(), stop, *(callbacks or [])]
        started = time.perf_counter()
        history = model.fit(*args, callbacks=callbacks, **kwargs)
        seconds = time.perf_counter() - started
        values = history.history.get(self.objective)
        if not values:
            raise keras_tuner.errors.FatalValueError(
                f"The objective `{self.objective}` is not in the epoch logs "
                f"(found {sorted(history.history)}); the task's callbacks or "
                "metrics must put it there for keras-tuner to see it."
            )
        finite = [v if math.isfinite(v) else math.inf for v in values]
        best = min(range(len(finite)), key=finite.__getitem__)
        metrics = {name: float(series[best]) for name, series in history.history.items()}
        metrics["trial_epochs"] = float(len(values))
        metrics["trial_seconds"] = float(seconds)
        metrics["trial_cut_by_budget"] = float(stop.fired)
        return metrics

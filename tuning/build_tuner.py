"""`build_tuner`: a keras-tuner tuner with a time budget and per-trial progress."""

import json
import os
import time
import warnings

import keras_tuner
from keras_tuner.oracles import BayesianOptimizationOracle, HyperbandOracle, RandomSearchOracle


class _TimeBudget:
    """Oracle mixin: hand out no new trial once `deadline` (`time.time()`) passed.

    The oracle answers "STOPPED" (keras-tuner's own end-of-search signal, so
    workers and the chief of a distributed search exit normally) and does not
    save that answer: running the same command again resumes the search.
    Reloaded, it runs again only the trials that had not ended.
    """

    deadline = None

    def populate_space(self, trial_id):
        if self.deadline is not None and time.time() >= self.deadline:
            print("[tuning] time budget spent: no new trials. Run the same command again to continue.")
            return {"status": keras_tuner.engine.trial.TrialStatus.STOPPED, "values": None}
        return super().populate_space(trial_id)

    def reload(self):
        super().reload()
        # keras-tuner runs the trials that were ongoing when the project was
        # saved again; but `end_trial` saves before it forgets the trial it
        # ended, and a distributed chief saves nothing after that: the last
        # finished trial would run again, over its own files. Only trials
        # that did not end (interrupted ones) are run again.
        ended = (keras_tuner.engine.trial.TrialStatus.COMPLETED, keras_tuner.engine.trial.TrialStatus.FAILED)
        self._retry_queue = [i for i in self._retry_queue if self.trials[i].status not in ended]


class _BudgetedRandomSearchOracle(_TimeBudget, RandomSearchOracle):
    pass


class _BudgetedBayesianOracle(_TimeBudget, BayesianOptimizationOracle):
    pass


class _BudgetedHyperbandOracle(_TimeBudget, HyperbandOracle):
    def __init__(self, *, max_trials, **kwargs):
        super().__init__(**kwargs)
        # Hyperband sizes its brackets from max_epochs; max_trials caps them.
        self.max_trials = max_trials


def trial_name(trial_id):
    """How messages name a trial: its folder in the project, `trial_<id>`
    (keras-tuner's id, counted from 0, the `trial_id` of trials.csv and best.json)."""
    return f"trial_{trial_id}"


def _format(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _tuned(values):
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


class _Progress:
    """Tuner mixin: one line per trial start and end ("trial i of N (trial_<id>)", best so far)."""

    after_trial = None  # optional callable(), run after each finished trial

    def _populate_initial_space(self):
        # keras-tuner reloads a project's oracle only when this tuner id saved
        # the project (`tuner0.json` locally, `chief.json` for a distributed
        # chief): a local search resumed as a distributed one, or the reverse,
        # would start afresh and run its finished trials again, over their files.
        if not self._is_worker() and os.path.exists(os.path.join(self.project_dir, "oracle.json")):
            self.oracle.reload()
        super()._populate_initial_space()

    def _label(self, trial):
        total = self.oracle.max_trials
        try:
            number = int(trial.trial_id) + 1
        except ValueError:
            number = trial.trial_id
        return f"[tuning {self.tuner_id}] trial {number} of {total if total else '?'} ({trial_name(trial.trial_id)})"

    def run_trial(self, trial, *args, **kwargs):
        results = super().run_trial(trial, *args, **kwargs)
        # keras-tuner averages the executions' metrics (one per execution,
        # `TaskHyperModel.fit`'s): the trial took the sum of their seconds, and
        # was cut short by the budget if one of them was.
        if isinstance(results, list) and all(isinstance(r, dict) and "trial_seconds" in r for r in results):
            seconds = sum(r["trial_seconds"] for r in results)
            cut = max(r.get("trial_cut_by_budget", 0.0) for r in results)
            results = [dict(r, trial_seconds=seconds, trial_cut_by_budget=cut) for r in results]
        return results

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        values = trial.hyperparameters.values
        settings = ", ".join(f"{k}={_format(v)}" for k, v in _tuned(values).items())
        if "tuner/epochs" in values:
            settings += (
                f" (epochs {values['tuner/initial_epoch']}..{values['tuner/epochs']}"
                + (f", from {trial_name(values['tuner/trial_id'])}" if "tuner/trial_id" in values else "")
                + ")"
            )
        print(f"{self._label(trial)} starts: {settings}", flush=True)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        name = self.oracle.objective.name
        ended = self.oracle.get_trial(trial.trial_id)
        best = self.oracle.get_best_trials(1)
        line = f"{self._label(trial)} {ended.status.lower()}"
        cut = ended.metrics.exists("trial_cut_by_budget")
        if cut and ended.metrics.get_last_value("trial_cut_by_budget") == 1.0:
            line += " (cut short by the time budget, mid-epoch)"  # trials.csv: *_CUT_BY_BUDGET
        if ended.score is not None:
            line += f": {name}={_format(ended.score)}"
        if ended.metrics.exists("trial_epochs"):
            epochs = int(ended.metrics.get_last_value("trial_epochs"))
            seconds = ended.metrics.get_last_value("trial_seconds")
            line += f" after {epochs} epoch(s) in {seconds:.1f} s"
        if best and best[0].score is not None:
            line += (
                f"; best so far {name}={_format(best[0].score)} ({trial_name(best[0].trial_id)}: "
                f"{json.dumps(_tuned(best[0].hyperparameters.values))})"
            )
        print(line, flush=True)
        if self.after_trial is not None:
            self.after_trial()


class _ProgressTuner(_Progress, keras_tuner.Tuner):
    pass


class _ProgressHyperband(_Progress, keras_tuner.Hyperband):
    def __init__(self, oracle, hypermodel, **kwargs):
        # keras_tuner.Hyperband.__init__ only creates its own HyperbandOracle;
        # this one carries the time budget and the trial cap.
        keras_tuner.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)

    def _build_hypermodel(self, hp):
        # A trial that continues another loads that trial's checkpoint into a model whose
        # optimizer is not built yet: keras-tuner continues from the weights with a fresh
        # optimizer, and Keras warns that it skips the checkpoint's optimizer variables.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return super()._build_hypermodel(hp)


def build_tuner(
    tuning,
    *,
    hypermodel,
    objective,
    directory,
    project_name="search",
    deadline=None,
    distribution_strategy=None,
):
    """The keras-tuner tuner that `tuning.tuner` names, ready to `search`.

    The project lives in `directory/project_name` and is reloaded when it
    exists (`overwrite=False`): finished trials are kept, interrupted ones
    run again, new ones continue the sequence. In a distributed search
    (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`)
    keras-tuner turns the tuner into the chief (which serves the oracle) or
    a worker (which asks it for trials) by itself.

    Args:
        tuning: `TuningConfig` (tuner, max_trials, max_epochs,
            executions_per_trial, hyperband_factor, tuning_seed).
        hypermodel: `TaskHyperModel`.
        objective: Name of the minimised metric (`"val_cer"`, `"val_loss"`).
        directory: Folder holding the keras-tuner project.
        project_name: The project's folder name.
        deadline: Optional `time.time()` after which no new trial starts.
        distribution_strategy: Optional `tf.distribute.Strategy` under which
            every trial's model is built and trained (`--distribute`).

    Returns:
        A `keras_tuner.Tuner` (Hyperband, Bayesian optimisation or random
        search) that prints "trial i of N" at every trial start and end with
        the best objective so far.
    """
    objective = keras_tuner.Objective(objective, direction="min")
    common = dict(objective=objective, seed=tuning.tuning_seed, max_retries_per_trial=0)
    if tuning.tuner == "hyperband":
        oracle = _BudgetedHyperbandOracle(
            max_trials=tuning.max_trials,
            max_epochs=tuning.max_epochs,
            factor=tuning.hyperband_factor,
            **common,
        )
        tuner_cls = _ProgressHyperband
    elif tuning.tuner == "bayesian":
        oracle = _BudgetedBayesianOracle(max_trials=tuning.max_trials, **common)
        tuner_cls = _ProgressTuner
    elif tuning.tuner == "random":
        oracle = _BudgetedRandomSearchOracle(max_trials=tuning.max_trials, **common)
        tuner_cls = _ProgressTuner
    else:
        raise ValueError(
            f"Received an invalid value for argument `tuner`, expected one of "
            f"'hyperband', 'bayesian', 'random', got {tuning.tuner!r}."
        )
    oracle.deadline = deadline
    return tuner_cls(
        oracle=oracle,
        hypermodel=hypermodel,
        directory=str(directory),
        project_name=project_name,
        overwrite=False,
        executions_per_trial=tuning.executions_per_trial,
        distribution_strategy=distribution_strategy,
    )

"""`run_search`: tune a task with keras-tuner, then evaluate and export the best model."""

import dataclasses
import json
import os
import sys
import time
import warnings

import keras
import keras_tuner

from pipelines.epochs import repeat_epochs
from training.cli import NON_LEARNING_FIELDS, SEARCH_DIR, config_differences, config_to_dict, write_json
from training.distribute import clip_after_summing, distribution_strategy, weigh_by_examples
from tuning.build_tuner import build_tuner, trial_name
from tuning.search_ranges import TUNED_HYPERPARAMETERS
from tuning.task_hypermodel import TaskHyperModel
from tuning.trials_table import write_trials_table

PROJECT_NAME = "search"
BEST_RUN_DIR = "best"  # DIR/tuning/best: the best model as a run directory


class SearchError(RuntimeError, ValueError):
    """The search has no best model: no trial completed, or keras-tuner gave
    up after consecutive failed trials. A `ValueError` too, so that `train.py`
    reports it in one line, as it does bad settings, not as a traceback."""


def _role():
    """'local', 'chief' or 'worker', from keras-tuner's distribution variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "local"
    missing = [
        name for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(name)
    ]
    if missing:
        raise ValueError(
            "KERASTUNER_ORACLE_IP is set, so this is a distributed search, but "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not; expected "
            "KERASTUNER_TUNER_ID=chief (or tuner1, tuner2, ...) and KERASTUNER_ORACLE_PORT=<port>."
        )
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def _plain(value):
    # NumPy scalars (metrics) become Python numbers, anything else its text.
    return value.item() if hasattr(value, "item") else str(value)


def _jsonable(value):
    return json.loads(json.dumps(value, default=_plain))


def _changed_fields(previous, current, skip=(), prefix=""):
    """`"key (was A, now B)"` for each key of two saved dicts that differs; in
    nested dicts (a search's ranges) the inner key that differs, as `key.inner`."""
    changed = []
    for key in sorted(set(previous) | set(current)):
        was, now = previous.get(key), current.get(key)
        if key in skip or was == now:
            continue
        if isinstance(was, dict) and isinstance(now, dict):
            changed += _changed_fields(was, now, prefix=f"{prefix}{key}.")
        else:
            changed.append(f"{prefix}{key} (was {was!r}, now {now!r})")
    return changed


def _check_same_search(path, identity, config):
    """Refuse to resume a project made with different settings.

    `identity["task_config"]` is compared with `config` by
    `training.cli.config_differences`: the tuned hyperparameters and the
    fields that do not change what a trial learns (`NON_LEARNING_FIELDS`:
    `--distribute`, decoding, where files go) may differ, and a field the
    saved project lacks counts as its default.
    """
    if not os.path.exists(path):
        write_json(path, identity)
        return
    with open(path, encoding="utf-8") as f:
        previous = json.load(f)
    previous.setdefault("trial_lr_schedule", "constant")  # how trials trained before they followed --lr-schedule
    changed = _changed_fields(previous, identity, skip=("task_config", "data"))  # data: _check_same_data
    task_fields = config_differences(
        previous.get("task_config", {}), config,
        # lr_schedule: compared as trial_lr_schedule (a project from before it counts as 'constant')
        ignore=NON_LEARNING_FIELDS | set(TUNED_HYPERPARAMETERS) | {"lr_schedule"},
    )
    changed += [f"task_config.{key} (was {old!r}, now {new!r})" for key, (old, new) in task_fields.items()]
    if changed:
        raise ValueError(
            f"The tuning project in {os.path.dirname(path)} was started with "
            f"different settings ({', '.join(changed)} differ; see {path}). "
            "Expected the same task options, tuner, epochs, seed and search "
            "ranges to resume it (only --max-trials, --time-budget-minutes and "
            "options that do not change training, such as --distribute, may "
            "change); use another --output-dir for a new search."
            + (f" Its trials trained with --lr-schedule {previous['trial_lr_schedule']}: give it to resume."
               if previous["trial_lr_schedule"] != identity.get("trial_lr_schedule") else "")
        )


def _check_same_data(path, data_identity):
    """Refuse to resume a project searched on other data (`TuningTask.prepare`'s
    `data_identity`); a project without one (older, or stopped before its data
    was read) takes this one, and one without some of its fields takes those."""
    with open(path, encoding="utf-8") as f:
        identity = json.load(f)
    previous = identity.get("data")
    if previous is None:
        identity["data"] = data_identity
        write_json(path, identity)
        return
    # A field recorded only since a later version (e.g. `transcripts_sha256`) is taken from this run.
    comparable = {key: value for key, value in data_identity.items() if key in previous}
    if previous != comparable:
        changed = _changed_fields(previous, comparable)
        raise ValueError(
            f"The tuning project in {os.path.dirname(path)} was searched on other data ({'; '.join(changed)}; "
            f"see `data` in {path}): its trials would not compare with new ones. Expected the same "
            "data to resume it; use another --output-dir for a search on this data."
        )
    if comparable != data_identity:
        identity["data"] = {**previous, **data_identity}
        write_json(path, identity)


def _tuned(values):
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def _best_model(tuner, hypermodel, trial, train, steps_per_epoch, validation, epochs, verbose):
    """The best trial's model: its checkpoint restored, else retrained."""
    try:
        with warnings.catch_warnings():
            # The checkpoint holds the optimizer's state too; only weights are wanted.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = tuner.load_model(trial)
        # Its optimizer is left unbuilt (no variables): saved so, the model's file would warn
        # "Skipping variable loading for optimizer" whenever it is loaded (generate.py,
        # transcribe.py, --init-from). Built, it saves fresh (zero) optimizer variables.
        if model.optimizer is not None and not model.optimizer.built:
            with keras_tuner.engine.tuner.maybe_distribute(tuner.distribution_strategy):  # its variables too
                model.optimizer.build(model.trainable_variables)
        return model, "restored from the trial's best-epoch checkpoint"
    except (OSError, ValueError) as error:
        # A worker on another machine kept the checkpoint: train it here.
        print(f"[tuning] no checkpoint of {trial_name(trial.trial_id)} here ({error}); retraining it.")
    hp = trial.hyperparameters
    keras.backend.clear_session()
    with keras_tuner.engine.tuner.maybe_distribute(tuner.distribution_strategy):
        model = hypermodel.build(hp)
    epochs = int(hp.values.get("tuner/epochs", epochs))
    model.fit(
        train,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation,
        epochs=epochs,
        callbacks=[
            *hypermodel.schedule_callbacks(hp, model, epochs=epochs, steps_per_epoch=steps_per_epoch),
            *hypermodel.make_task_callbacks(),
        ],
        verbose=verbose,
    )
    return model, "retrained with the trial's hyperparameters"


def _best_config(config, values):
    """`config` with the tuned values of the fields it has (hidden_size, ...)."""
    names = {f.name for f in dataclasses.fields(config)}
    return dataclasses.replace(config, **{k: v for k, v in _tuned(values).items() if k in names})


def run_search(task, config, tuning, *, output_dir=None):
    """Search `task`'s hyperparameters, then evaluate and export the best model.

    Outputs, under `DIR = output_dir or config.output_dir`:
    `DIR/tuning/search/` (keras-tuner's project: oracle state, one folder per
    trial with its `trial.json` and best-epoch checkpoint),
    `DIR/tuning/trials.csv` (one row per trial: id, status, objective,
    epochs, seconds, hyperparameters; rewritten after every trial),
    `DIR/tuning/best.json` (the best trial, its hyperparameters, the
    resolved task configuration, the final metrics and the export path) and
    `DIR/tuning/best/`, the best model as a run directory of the task
    (model.keras, vocabulary.json, feature_config.json for transcription,
    config.json, metrics.json: what transcribe.py, generate.py,
    `serving.export_run` and `--init-from` read), plus the task's export.

    Running the same command again resumes: finished trials are kept,
    an interrupted trial runs again, and the search goes on up to
    `tuning.max_trials`. With keras-tuner's distribution variables set, a
    worker (`KERASTUNER_TUNER_ID=tunerN`) only runs trials and returns; the
    chief (`KERASTUNER_TUNER_ID=chief`) serves the oracle until every trial
    is done, then writes the outputs above.

    Args:
        task: `TuningTask`.
        config: The task's configuration dataclass (untuned options).
        tuning: `TuningConfig`.
        output_dir: Where the outputs go; defaults to `config.output_dir`.

    Returns:
        A dict: `role`, and unless a worker, `best` (the contents of
        `best.json`) and `trials` (the rows of `trials.csv`).

    Raises:
        ValueError: an empty search range, an existing project started
            with different settings, or a training run's directory.
        SearchError: (a RuntimeError and a ValueError) when no trial
            completed, or keras-tuner stopped after 3 failed trials in a row.
    """
    output_dir = output_dir or config.output_dir
    tuning_dir = os.path.join(output_dir, SEARCH_DIR)
    role = _role()
    if role != "worker" and os.path.isfile(os.path.join(output_dir, "config.json")):
        # A training run's directory: the search's export would go beside the run's.
        raise ValueError(
            f"--output-dir {output_dir} holds a training run ({os.path.join(output_dir, 'config.json')}); a "
            f"search there would export its best model beside the run's in {os.path.join(output_dir, 'export')}, "
            f"and a server of that directory would serve the newer. Nothing was written: give another --output-dir."
        )
    ranges = task.search_ranges(tuning)
    # Trials move the learning rate as the task's run does (a task config without the field: constant).
    lr_schedule = getattr(config, "lr_schedule", "constant")
    deadline = time.time() + 60 * tuning.time_budget_minutes if tuning.time_budget_minutes else None
    # The task's own Keras verbosity where it has one (the language model's --verbose), else
    # progress bars on a terminal and one line per epoch in a log.
    verbose = getattr(config, "verbose", None)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    keras.utils.set_random_seed(tuning.tuning_seed)

    if role != "worker":
        identity = _jsonable(
            {
                "task": task.name,
                "objective": task.objective,
                "task_config": {
                    k: v for k, v in config_to_dict(config).items() if k not in TUNED_HYPERPARAMETERS
                },
                "tuner": tuning.tuner,
                "max_epochs": tuning.max_epochs,
                # A project from before trials followed --lr-schedule lacks it and counts as 'constant'
                # (_check_same_search): resumed with another schedule, its trials would not compare.
                "trial_lr_schedule": lr_schedule,
                "executions_per_trial": tuning.executions_per_trial,
                "hyperband_factor": tuning.hyperband_factor,
                "tuning_seed": tuning.tuning_seed,
                "ranges": dataclasses.asdict(ranges),
            }
        )
        _check_same_search(os.path.join(tuning_dir, "search.json"), identity, config)

    train, validation, context = task.prepare(config)
    if role != "worker" and "data_identity" in context:
        _check_same_data(os.path.join(tuning_dir, "search.json"), _jsonable(context["data_identity"]))
    distribute = getattr(config, "distribute", "none")
    strategy = None if distribute == "none" else distribution_strategy(distribute)
    if strategy is not None:
        print(f"[tuning] every trial on {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s)",
              flush=True)

    def build_model(hp):
        model = task.build_model(hp, ranges, config, context)
        if strategy is not None:  # built in the strategy's scope by keras-tuner
            clip_after_summing(model.optimizer)
            weigh_by_examples(model)  # uneven batches: each replica's loss by its examples
        return model

    hypermodel = TaskHyperModel(
        build_model=build_model,
        objective=task.objective,
        make_callbacks=lambda: task.make_callbacks(config, context, validation),
        deadline=deadline,
        lr_schedule=lr_schedule,
    )
    tuner = build_tuner(
        tuning,
        hypermodel=hypermodel,
        objective=task.objective,
        directory=tuning_dir,
        project_name=PROJECT_NAME,
        deadline=deadline,
        distribution_strategy=strategy,
    )
    table_path = os.path.join(tuning_dir, "trials.csv")
    project_dir = tuner.project_dir
    if role == "local":
        tuner.after_trial = lambda: write_trials_table(project_dir, table_path)
        done = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
        print(
            f"[tuning] {task.name}: {tuning.tuner} search for the lowest {task.objective}, "
            f"up to {tuning.max_trials} trials of up to {tuning.max_epochs} epochs"
            + (f", {tuning.time_budget_minutes:g} min budget" if deadline else "")
            + f"; project {project_dir}"
            + (f" (resuming: {len(done)} trial(s) already completed)" if tuner.oracle.trials else ""),
            flush=True,
        )
    else:
        print(
            f"[tuning] {role if tuner.tuner_id == role else f'{role} {tuner.tuner_id}'} of a distributed "
            f"{tuning.tuner} search, oracle at "
            f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}",
            flush=True,
        )

    train, steps_per_epoch = repeat_epochs(train)  # one iterator per trial's fit
    with warnings.catch_warnings():
        # A training set of unknown length (a task's own): Keras learns it by
        # running out of data in the first epoch, and warns each time. Harmless.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        try:
            tuner.search(
                train,
                steps_per_epoch=steps_per_epoch,
                validation_data=validation,
                epochs=tuning.max_epochs,
                shuffle=False,  # the task's datasets shuffle themselves
                verbose=verbose,
            )
        except RuntimeError as error:
            # keras-tuner's limit (3) of failed trials in a row; its message
            # ends with the last trial's traceback.
            if role != "local" or not str(error).startswith("Number of consecutive failures"):
                raise
            write_trials_table(project_dir, table_path)
            raise SearchError(
                f"The search in {project_dir} stopped: {str(error).splitlines()[0]} The last failed trial's "
                f"error: {str(error).strip().splitlines()[-1]}. See {table_path} and the `message` in each "
                "trial.json; check the task options (a model too large for memory fails: lower "
                "--max-hidden-size or --max-num-layers); running the same command again retries the last "
                "failed trial."
            ) from error
    if role == "worker":
        print(f"[tuning] worker {tuner.tuner_id}: the oracle has no more trials; exiting.", flush=True)
        return {"role": role}

    rows = write_trials_table(project_dir, table_path)
    best_trials = tuner.oracle.get_best_trials(1)
    if not best_trials or best_trials[0].status != "COMPLETED":
        raise SearchError(
            f"No trial of the search in {project_dir} completed ({len(rows)} trial(s); "
            f"see {table_path} and the messages in each trial.json). Check the task "
            "options, or give the search more time (--time-budget-minutes)."
        )
    best = best_trials[0]
    hypermodel.deadline = None
    model, source = _best_model(
        tuner, hypermodel, best, train, steps_per_epoch, validation, tuning.max_epochs, verbose
    )
    best_config = _best_config(config, best.hyperparameters.values)
    metrics = task.evaluate(model, best_config, context, validation)
    model_path = os.path.join(tuning_dir, BEST_RUN_DIR)
    os.makedirs(model_path, exist_ok=True)
    task.save(model, best_config, context, model_path)
    write_json(os.path.join(model_path, "config.json"), config_to_dict(best_config))
    write_json(os.path.join(model_path, "metrics.json"), _jsonable(metrics))

    epochs = best.metrics.get_last_value("trial_epochs") if best.metrics.exists("trial_epochs") else None
    summary = _jsonable(
        {
            "task": task.name,
            "tuner": tuning.tuner,
            "objective": {"name": task.objective, "direction": "min", "value": best.score},
            "trial_id": best.trial_id,
            "hyperparameters": _tuned(best.hyperparameters.values),
            "hyperband": {
                k[len("tuner/"):]: v
                for k, v in best.hyperparameters.values.items()
                if k.startswith("tuner/")
            },
            "trial_epochs": None if epochs is None else int(epochs),
            "model": {"source": source, "path": model_path},
            "metrics": metrics,
            "export": None,
            "config": config_to_dict(best_config),
            "trials": {
                "total": len(rows),
                "completed": sum(row["status"] == "COMPLETED" for row in rows),
                "table": table_path,
            },
        }
    )
    # Written before the export too, so a failed export loses nothing: the
    # same command restores the finished search's best model and exports it.
    best_path = os.path.join(tuning_dir, "best.json")
    write_json(best_path, summary)
    export_path = task.export(model, best_config, context, metrics) if task.export else None
    summary["export"] = export_path
    write_json(best_path, summary)
    print(
        f"[tuning] best: {trial_name(best.trial_id)}, {task.objective}={best.score:.4g} with "
        f"{json.dumps(summary['hyperparameters'])}; model {source}; "
        f"metrics {json.dumps(summary['metrics'])}"
        + (f"; exported to {export_path}" if export_path else "")
        + f". Trials: {table_path}",
        flush=True,
    )
    return {"role": role, "best": summary, "trials": rows}

"""`write_trials_table`: one CSV row per keras-tuner trial of a project."""

import csv
import glob
import json
import os

from keras_tuner.engine.trial import Trial

COLUMNS = ("trial_id", "status", "objective", "epochs", "seconds", "hyperparameters", "tuner")


def _sort_key(trial):
    try:
        return (0, int(trial.trial_id))
    except ValueError:
        return (1, trial.trial_id)


def _last(trial, name):
    if trial.metrics.exists(name):
        return trial.metrics.get_last_value(name)
    return None


def _read_trials(project_dir):
    """The trials saved in a keras-tuner project folder, in trial order."""
    trials = [
        Trial.load(path) for path in glob.glob(os.path.join(project_dir, "trial_*", "trial.json"))
    ]
    return sorted(trials, key=_sort_key)


def write_trials_table(project_dir, path):
    """Write the trials of the keras-tuner project `project_dir` to the CSV `path`.

    Columns: `trial_id`; `status` (COMPLETED, COMPLETED_CUT_BY_BUDGET for a
    trial the search's time budget stopped mid-epoch, whose objective is that
    of its partial training; RUNNING for a trial in progress
    or interrupted, INVALID/FAILED with keras-tuner's message kept in the
    project); `objective` (the trial's score, the best epoch's objective;
    empty until it completes); `epochs` and `seconds` (trained in this trial);
    `hyperparameters` (JSON of the tuned values); `tuner` (JSON of
    Hyperband's bookkeeping: epochs, initial epoch, the trial it continues).
    The file is written to a temporary name first, then renamed.

    Returns:
        The rows written, a list of dicts keyed by `COLUMNS`.
    """
    rows = []
    for trial in _read_trials(project_dir):
        values = trial.hyperparameters.values
        epochs = _last(trial, "trial_epochs")
        seconds = _last(trial, "trial_seconds")
        rows.append(
            {
                "trial_id": trial.trial_id,
                "status": (
                    f"{trial.status}_CUT_BY_BUDGET"
                    if _last(trial, "trial_cut_by_budget") == 1.0
                    else trial.status
                ),
                "objective": "" if trial.score is None else repr(float(trial.score)),
                "epochs": "" if epochs is None else int(epochs),
                "seconds": "" if seconds is None else f"{seconds:.2f}",
                "hyperparameters": json.dumps(
                    {k: v for k, v in values.items() if not k.startswith("tuner/")},
                    sort_keys=True,
                ),
                "tuner": json.dumps(
                    {k[len("tuner/"):]: v for k, v in values.items() if k.startswith("tuner/")},
                    sort_keys=True,
                ),
            }
        )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return rows

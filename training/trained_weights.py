"""The weights a run has trained, kept until its metrics are written.

`keras.callbacks.BackupAndRestore` deletes its backup when `fit` returns, so a
run killed after that (in its final evaluation, sample or export) would train
again from scratch. Both tasks' runs therefore write, once training has ended,
the weights they go on to evaluate and the figures of the training
(`keep_trained`) into the emptied backup directory, which they delete only once
metrics.json is written; the same command run again finds them
(`trained_so_far`), loads the weights (`restore_trained`) and evaluates and
saves without training.
"""

import json
import os
import shutil

from training.cli import write_json
from training.data_seed import BACKUP_STATE_FILE as KERAS_BACKUP_STATE_FILE  # Keras' file in the backup directory

EXPORTED_FILE = "exported.json"  # in the backup directory: the export made of the kept weights, and by what command
STATE_FILE = "trained.json"  # in the backup directory: the training's figures (epochs, train_seconds, ...)
WEIGHTS_FILE = "trained.weights.h5"  # in the backup directory: the weights evaluated


def keep_trained(backup_dir, model, state, *, beside=None):
    """Empty `backup_dir` and keep `model`'s weights and the dict `state` in it.

    `beside` maps other file names in `backup_dir` to JSON payloads, written
    before the state (e.g. what the run trained on, to check on a rerun). The
    state is written last: a run killed before it is trained again.
    """
    shutil.rmtree(backup_dir, ignore_errors=True)
    os.makedirs(backup_dir)
    model.save_weights(os.path.join(backup_dir, WEIGHTS_FILE))
    for name, payload in (beside or {}).items():
        write_json(os.path.join(backup_dir, name), payload)
    write_json(os.path.join(backup_dir, STATE_FILE), state)


def trained_so_far(backup_dir, **fields):
    """The state `keep_trained` wrote, each of `fields` (name -> type, e.g. `epochs=int`)
    converted by its type; None when there is none or it cannot be read."""
    try:
        with open(os.path.join(backup_dir, STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
        return {name: kind(state[name]) for name, kind in fields.items()}
    except (OSError, KeyError, ValueError, TypeError):
        return None


def restore_trained(model, backup_dir):
    """Load the weights `keep_trained` kept into `model`."""
    model.load_weights(os.path.join(backup_dir, WEIGHTS_FILE))


def resume_state(output_dir, backup_dir, earlier_run, *, overwrite, **fields):
    """`(trained, resuming)` of a run into `output_dir`, printing which it is.

    `trained` is `trained_so_far(backup_dir, **fields)` when the directory
    holds an earlier run of these settings (`earlier_run`, its config) whose
    training had ended (None otherwise): the run evaluates and saves those
    weights. Else `resuming` tells whether Keras' backup of a killed run is
    there to resume from; without either, an earlier run is trained again.
    """
    trained = trained_so_far(backup_dir, **fields) if earlier_run is not None else None
    resuming = trained is None and os.path.exists(os.path.join(backup_dir, KERAS_BACKUP_STATE_FILE))
    if trained is not None:
        print(f"The interrupted run backed up in {backup_dir} had finished training "
              f"({trained['epochs']} epochs): evaluating and saving it")
    elif resuming:
        print(f"Resuming the interrupted run backed up in {backup_dir}")
    elif earlier_run is not None:
        why = "--overwrite" if overwrite else "unfinished, no backup to resume from"
        print(f"{output_dir} holds a run with these settings: training it again ({why}; its files are replaced)")
    return trained, resuming


def export_once(backup_dir, config_dict, export):
    """The SavedModel version of the weights kept in `backup_dir`, exported once.

    `export()` writes the export and returns its version directory (or
    None). Its path is noted in `backup_dir` with the command's
    configuration `config_dict`; a run killed after that (before its
    metrics.json) and run again with the same configuration reuses that
    version instead of writing the same model again as the next one, which
    a server would load as new.
    """
    path = os.path.join(backup_dir, EXPORTED_FILE)
    config_dict = json.loads(json.dumps(config_dict))
    try:
        with open(path, encoding="utf-8") as f:
            earlier = json.load(f)
        if earlier["config"] == config_dict and os.path.isfile(os.path.join(earlier["export_dir"], "saved_model.pb")):
            print(f"The interrupted run had exported these weights to {earlier['export_dir']}: kept, not exported again")
            return earlier["export_dir"]
    except (OSError, KeyError, ValueError, TypeError):
        pass
    export_dir = export()
    if export_dir is not None and os.path.isdir(backup_dir):
        write_json(path, {"config": config_dict, "export_dir": str(export_dir)})
    return export_dir

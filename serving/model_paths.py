"""Where runs and exports sit on disk, and the messages that name them.

Free of TensorFlow: the command-line tools (`transcribe.py`, `generate.py`)
check their `--model-dir` with these before they import it (about 5 s), so a
mistyped path is answered at once. `serving.model_store` serves what they find.
"""

import os


def version_directories(base_path):
    """`{version: path}` of the complete integer version directories."""
    if not os.path.isdir(base_path):
        return {}
    found = {}
    for name in os.listdir(base_path):
        path = os.path.join(base_path, name)
        if name.isascii() and name.isdigit() and os.path.isfile(os.path.join(path, "saved_model.pb")):
            found[int(name)] = path
    return found


def missing_versions_message(model_name, base_path):
    """Why `base_path` holds no servable version of `model_name`, and what to pass instead.

    Names the path read and the layout expected (`<base>/<N>/saved_model.pb`,
    N a number); a base that holds `saved_model.pb` itself (a version
    directory) gets its parent suggested, a folder of model folders (an
    `export/` directory) the model folders that have versions.
    """
    message = (
        f"No servable version of model {model_name!r} under --model_base_path {base_path}: "
        f"expected {os.path.join(base_path, '<N>', 'saved_model.pb')} with N a number (e.g. "
        f"{os.path.join(base_path, '1', 'saved_model.pb')}); "
    )
    if not os.path.isdir(base_path):
        return message + "the directory does not exist (yet)."
    names = sorted(os.listdir(base_path))
    hints = []
    if os.path.isfile(os.path.join(base_path, "saved_model.pb")):
        parent = os.path.dirname(base_path)
        if os.path.basename(base_path).isdigit():
            hints.append(
                f"{base_path} holds saved_model.pb itself: it is a version directory, so serve its "
                f"parent: --model_base_path={parent}"
            )
        else:
            hints.append(
                f"{base_path} holds saved_model.pb itself: move it into a numbered folder, e.g. "
                f"{os.path.join(base_path + '_versions', '1')}, and serve "
                f"--model_base_path={base_path}_versions"
            )
    incomplete = [name for name in names if name.isdigit() and os.path.isdir(os.path.join(base_path, name))]
    if incomplete:
        hints.append(f"{', '.join(incomplete)} ha{'s' if len(incomplete) == 1 else 've'} no saved_model.pb "
                     "(yet: an export still being written?)")
    models = [name for name in names if version_directories(os.path.join(base_path, name))]
    if models:
        hints.append(
            f"it holds model folders with versions ({', '.join(models)}): serve one, e.g. "
            f"--model_base_path={os.path.join(base_path, models[0])}"
        )
    if not hints:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        hints.append(f"it holds {shown}" if names else "it is empty")
    return message + "; ".join(hints) + "."


def newest_export(run_dir, model_name):
    """The newest complete version directory under `run_dir/export/model_name`, or None."""
    versions = version_directories(os.path.join(run_dir, "export", model_name))
    return versions[max(versions)] if versions else None


def export_task(version_dir):
    """The `task` an export version's metadata names (`transcription`,
    `language_model`), or None when it cannot be read."""
    from serving.export import read_metadata

    try:
        return read_metadata(version_dir).get("task")
    except (OSError, ValueError, AttributeError):
        return None


# Each task's exports as the messages name them, what a tool wanting it calls it, and that tool.
_EXPORTS_OF = {"transcription": "speech transcription", "language_model": "language model"}
_WANTED = {"transcription": "transcriber", "language_model": "language model"}
_TOOL_OF = {"transcription": "transcribe.py", "language_model": "generate.py"}


_EXPORT_NAME = {"transcription": "transcriber", "language_model": "language_model"}


def model_dir_error(model_dir, task):
    """A FileNotFoundError when `model_dir`, given to the tool of `task` as
    `--model-dir`, does not exist or is not a directory; None when it is one."""
    if os.path.isdir(model_dir):
        return None
    problem = "is a file, not a directory" if os.path.exists(model_dir) else "does not exist"
    return FileNotFoundError(
        f"Model directory {model_dir!r} {problem}; expected the --output-dir of `train.py --task {task}` "
        f"or an export version such as DIR/export/{_EXPORT_NAME[task]}/1."
    )


def export_base_error(model_dir, task, *, run_files):
    """A FileNotFoundError when `model_dir`, given to the tool of `task` as
    `--model-dir`, is an export base directory: numbered SavedModel versions
    and none of `run_files` (the files a run directory holds its model in).
    It names the highest version, or the other tool when the exports are of
    the other task. None for any other directory."""
    versions = version_directories(model_dir)
    if not versions or any(os.path.isfile(os.path.join(model_dir, name)) for name in run_files):
        return None
    newest = versions[max(versions)]
    listed = ", ".join(str(version) for version in sorted(versions))
    other = export_task(newest)
    if other in _TOOL_OF and other != task:
        return FileNotFoundError(
            f"{model_dir} is a base directory of {_EXPORTS_OF[other]} exports (versions {listed}), not a "
            f"{_WANTED[task]}: use {_TOOL_OF[other]} --model-dir {newest}"
        )
    return FileNotFoundError(
        f"{model_dir} is an export base directory (SavedModel versions {listed} in numbered subdirectories), "
        f"not a run or a version: use --model-dir {newest} (its highest version)."
    )


def with_export_hint(error, run_dir, model_name, *, flag="--model-dir", exports=True):
    """`error` (a run directory without its model files), pointing at the models it does hold.

    A tuning run's directory (`train.py --tune`) holds its best model as a
    run directory in `tuning/best/` and that model's export, either of which
    the command-line tools take as `--model-dir`; an ensemble run's
    (`train.py --ensemble N`) holds its members' run directories in
    `members/` and their packed export. `flag` is the argument the hints
    name; `exports=False` leaves out the export (for an argument that takes
    run directories only, such as `--init-from`).
    """
    hints = []
    best = os.path.join(run_dir, "tuning", "best")
    if os.path.isfile(os.path.join(best, "model.keras")):
        hints.append(f"It is a tuning run: use {flag} {best} (its best model).")
    members = os.path.join(run_dir, "members")  # training.transcription_ensemble.MEMBERS_DIR
    if os.path.isdir(members):
        trained = sorted(
            name for name in os.listdir(members) if os.path.isfile(os.path.join(members, name, "model.keras"))
        )
        if trained:
            hints.append(
                f"It is an ensemble run (train.py --ensemble): one member is a run directory, "
                f"e.g. {flag} {os.path.join(members, trained[0])}"
                + ("; the ensemble is its export." if exports else ".")
            )
    export = newest_export(run_dir, model_name) if exports else None
    if export is not None:
        hints.append(f"It has an export: use --model-dir {export}")
    if not hints:
        return error
    return FileNotFoundError(" ".join([str(error), *hints]))

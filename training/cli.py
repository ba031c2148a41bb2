"""Command-line flags generated from configuration dataclasses.

Each field of a frozen configuration dataclass becomes exactly one flag
(`hidden_size` -> `--hidden-size`), with the field's `metadata["help"]` as
help text and its default as the default. Unknown flags are errors (argparse
exits with status 2 and names them), never silent no-ops.
"""

import argparse
import dataclasses
import json
import os
import re
import sys
import tempfile
import types
import typing


def _flag(name):
    return "--" + name.replace("_", "-")


def _field_type(field):
    """(python type, optional?) of a dataclass field annotation."""
    annotation = field.type
    if isinstance(annotation, str):
        raise TypeError(
            f"Config field `{field.name}` has a string annotation {annotation!r}; "
            "do not use `from __future__ import annotations` in config modules."
        )
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return annotation, False


def _parse_optional(kind):
    def parse(text):
        if text == "":
            # An empty value (`--max-train-minutes "$UNSET"`) is not None's "none": it would
            # silently lift the time budget, drop --init-from, --candidates, ...
            raise argparse.ArgumentTypeError("expected a value or 'none', got an empty string")
        if text.lower() == "none":
            return None
        return kind(text)

    parse.__name__ = kind.__name__
    return parse


# Paths whose `~` is expanded as the shell would: unquoted `--output-dir=~/runs/x` reaches
# the program as it is (the shell expands `~` only at a word's start), and a run
# would write into a folder named `~` in the working directory.
EXPANDED_PATH_FIELDS = frozenset({"output_dir", "init_from", "candidates"})


def _expand_user(parse):
    def expand(text):
        value = parse(text)
        return os.path.expanduser(value) if isinstance(value, str) else value

    expand.__name__ = parse.__name__
    return expand


def add_config_flags(parser, config_cls, *, group_title=None):
    """Add one flag per field of `config_cls` to `parser`."""
    group = parser.add_argument_group(group_title or config_cls.__name__)
    for field in dataclasses.fields(config_cls):
        if not field.init:
            continue
        kind, optional = _field_type(field)
        default = (
            field.default
            if field.default is not dataclasses.MISSING
            else field.default_factory()
        )
        help_text = field.metadata.get("help", "")
        help_text = f"{help_text} (default: {default!r})"
        if kind is bool:
            group.add_argument(
                _flag(field.name),
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        choices = field.metadata.get("choices")
        parse = _parse_optional(kind) if optional else kind
        if field.name in EXPANDED_PATH_FIELDS:
            parse = _expand_user(parse)
        group.add_argument(
            _flag(field.name),
            dest=field.name,
            type=parse,
            choices=choices,
            default=argparse.SUPPRESS,
            metavar=field.metadata.get("metavar"),
            help=help_text,
        )


def take_dash_values(parser):
    """Let `parser` read a word that starts with '-' and a digit as a value.

    Python 3.11's argparse takes such a word for a flag unless it is one
    number, so `--candidate-warps -1,1` ended in "expected one argument"
    (only `--candidate-warps=-1,1` reached the check of its values). No flag
    of this project starts so; the pattern is newer argparse's own.
    """
    parser._negative_number_matcher = re.compile(r"-\.?\d")
    return parser


def unrecognized_arguments(parser, argv, extras):
    """The error message for `extras`, the words of `argv` that no flag of `parser` took.

    A word right after an on/off flag (`--strict false`) is a value it does
    not take: the message names that flag, as argparse's own does for
    `--strict=false`, rather than only the word.
    """
    switches = {option: action for action in parser._actions
                if isinstance(action, argparse.BooleanOptionalAction) for option in action.option_strings}
    for before, word in zip(argv, argv[1:]):
        if before in switches and word in extras:
            on, off = switches[before].option_strings
            return f"argument {on}/{off}: takes no value, got {word!r}: give {on} for true or {off} for false"
    return "unrecognized arguments: " + " ".join(extras)


def config_from_namespace(config_cls, namespace):
    """Build `config_cls` from the flags present in `namespace`."""
    names = {f.name for f in dataclasses.fields(config_cls) if f.init}
    values = {k: v for k, v in vars(namespace).items() if k in names}
    return config_cls(**values)


def config_to_dict(config):
    return dataclasses.asdict(config)


# Configuration fields that do not change what a run learns: where its files
# go, where it runs, and how its finished model is decoded, scored, sampled and
# exported. A finished ensemble member or a tuning project is reused with
# other values of these (`--candidates` added later, the search moved to a
# machine with GPUs and `--distribute mirrored`, the directory moved).
NON_LEARNING_FIELDS = frozenset({
    "output_dir", "overwrite", "cache_dir", "distribute", "export", "verbose",
    "beam_width", "num_examples", "candidates", "candidate_warps",
    "sample_prompt", "sample_length", "temperature",
})


# A single run's directory also takes another length of training: a killed
# run resumed with more `--epochs` or minutes goes on from its backup.
RUN_DIRECTORY_IGNORED = NON_LEARNING_FIELDS | {"epochs", "max_train_minutes", "early_stopping_patience"}


def config_differences(saved, config, *, ignore=NON_LEARNING_FIELDS):
    """The fields where `config` differs from `saved`, its earlier JSON form.

    Args:
        saved: A configuration read back from JSON (a run's config.json, a
            search's search.json), maybe written before some fields existed:
            a field it lacks counts as that field's default.
        config: The configuration dataclass of this run.
        ignore: Field names not compared.

    Returns:
        `{field: (saved value, this run's value)}`, sorted by field; empty
        when they agree.
    """
    expected = json.loads(json.dumps(config_to_dict(config)))
    defaults = json.loads(json.dumps({
        f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING
    }))
    saved = {**defaults, **saved}
    return {
        key: (saved.get(key, "(missing)"), expected.get(key, "(missing)"))
        for key in sorted(set(saved) | set(expected))
        if key not in ignore and saved.get(key, "(missing)") != expected.get(key, "(missing)")
    }


# Folders a run makes in its directory and deletes when it ends (Keras'
# BackupAndRestore state): one already there, in a directory without a run's
# configuration, is somebody else's.
RUN_DELETED_DIRS = ("backup",)

# Files a run writes into its --output-dir (both tasks), always after its
# config.json: found without one, they are not a run's, and a run would
# replace them.
RUN_FILES = ("metrics.json", "model.keras", "best.keras", "vocabulary.json", "feature_config.json",
             "history.csv", os.path.join("checkpoints", "best.weights.h5"))

# The folder of a hyperparameter search (`train.py --tune`) in its --output-dir.
SEARCH_DIR = "tuning"


def check_run_directory(directory, config, *, what="run", config_file="config.json",
                        ignore=NON_LEARNING_FIELDS):
    """Refuse to write a run into `directory` if it holds one made with other settings.

    Called before a run writes anything, so that a run with other flags
    (or a mistyped `--output-dir`) cannot overwrite, or resume from, a run it
    is not: the files there are left as they are. A finished run with these
    settings is the caller's to refuse (`check_not_finished`).

    Args:
        directory: The run's output directory.
        config: The run's configuration dataclass.
        what: What the directory holds, for the message ("run", "ensemble
            member", ...).
        config_file: The configuration file a run writes there.
        ignore: Field names not compared (`config_differences`).

    Returns:
        The saved configuration (a dict) when `directory` holds a run with
        these settings (finished or killed), None when it holds none.

    Raises:
        ValueError: naming the file and each differing field (its value
            there, this run's value), or saying that the file is not a run's
            configuration.
    """
    problem = output_dir_error(directory, what)
    if problem is not None:
        raise ValueError(problem)
    if os.path.isdir(os.path.join(directory, SEARCH_DIR)):
        # `train.py --tune` made it: its best model is exported to directory/export, where this would go too.
        raise ValueError(
            f"--output-dir {directory} holds a hyperparameter search ({os.path.join(directory, SEARCH_DIR)}), "
            f"whose best model is exported to {os.path.join(directory, 'export')}; a {what} there would add its "
            f"export beside it, and a server of that directory would serve the newer. Nothing was written: give "
            f"another --output-dir."
        )
    path = os.path.join(directory, config_file)
    if not os.path.exists(path):
        # Not a run's (a run writes its config first): the run would delete or replace it.
        found = [(f"{name}/", f"deletes its {name}/ when it ends") for name in RUN_DELETED_DIRS
                 if os.path.exists(os.path.join(directory, name))]
        found += [(name, f"would replace its {name}") for name in RUN_FILES
                  if os.path.exists(os.path.join(directory, name))]
        if found:
            shown, fate = found[0]
            raise ValueError(
                f"--output-dir {directory} holds {shown} but no {config_file}, so it is not a {what} of this "
                f"project, and a {what} {fate}. Nothing was written: give another --output-dir, or move "
                f"{os.path.join(directory, shown.rstrip('/'))} away."
            )
        return None
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as error:
        saved, problem = None, f"cannot be read as JSON ({error})"
    else:
        problem = None if isinstance(saved, dict) else f"holds a JSON {type(saved).__name__}, not an object"
        if problem is None and not set(saved) & {field.name for field in dataclasses.fields(config)}:
            problem = f"holds none of a {what}'s settings (keys {sorted(saved)[:5]})"
    if problem is not None:
        raise ValueError(
            f"{path} {problem}: expected the config.json of an earlier {what}. Nothing was written: "
            f"give another --output-dir, or remove {directory} to use it."
        )
    differing = config_differences(saved, config, ignore=ignore)
    if differing:
        raise ValueError(
            f"{path}: this {what} was made with other settings (field: its value, this run's value) "
            f"{differing}. Its files are left as they are: run the command that made it (a killed "
            f"run resumes), give another --output-dir, or remove {directory} to start again."
        )
    return saved


def output_dir_error(directory, what="run"):
    """Why `directory` cannot be an --output-dir for a `what`'s files (it is a
    file, or no directory can be written or made there), as the message that
    refuses it; None when it can. Found before the data is read and the model
    built, not with an errno after."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        return (f"--output-dir {directory} is a file: expected a directory for the {what}'s files. Nothing was "
                "written: give another --output-dir.")
    unwritable = _directory_error(directory)
    if unwritable is not None:
        return (f"--output-dir {directory}: {unwritable}; expected a directory for the {what}'s files. "
                "Nothing was written: give another --output-dir.")
    return None


def _directory_error(directory):
    """Why `directory` (made with its missing parents if need be) cannot hold
    files, or None: its nearest existing ancestor is a file, or a directory
    that cannot be written."""
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"directory {existing} is not writable"
    if existing != os.path.abspath(directory):
        # Its missing part is to be made there. os.access grants root every directory, and some
        # file systems (/proc, /sys) refuse new entries whatever their mode: make (and remove) one.
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".writable-", dir=existing))
        except OSError as error:
            return f"no directory can be made in {existing} ({error.strerror or error})"
    return None


def check_not_finished(directory, *, overwrite, finished_file="metrics.json"):
    """Refuse to train again a finished run in `directory` unless `overwrite`.

    Called after `check_run_directory` has found a run with these settings
    there: training would replace its model. A run is finished when it has
    written `finished_file` (its metrics) and holds no `backup/` (a killed
    run, including a killed `--overwrite` one, resumes without the flag).

    Raises:
        ValueError: naming the directory and what its metrics say.
    """
    if (overwrite or not os.path.isfile(os.path.join(directory, finished_file))
            or any(os.path.exists(os.path.join(directory, name)) for name in RUN_DELETED_DIRS)):
        return
    raise ValueError(
        f"{directory} holds a finished run with these settings ({finished_summary(directory, finished_file)}); "
        f"training it again would replace its model and files. Nothing was written: give --overwrite to "
        f"train it again, or another --output-dir."
    )


def finished_summary(directory, finished_file):
    """What a finished run's metrics file says of it, for a message ("metrics.json: 27 epochs, ...")."""
    path = os.path.join(directory, finished_file)
    try:
        with open(path, encoding="utf-8") as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return path
    if not isinstance(metrics, dict):
        return path
    epochs = metrics.get("epochs")
    parts = [f"{epochs} epoch{'' if epochs == 1 else 's'}" if isinstance(epochs, int) else None]
    parts += [f"{name} {metrics[name]:.4g}" for name in ("val_cer", "val_bpc")
              if isinstance(metrics.get(name), (int, float)) and not isinstance(metrics.get(name), bool)]
    parts = [part for part in parts if part]
    return f"{path}: {', '.join(parts)}" if parts else path


def output_file_error(output, *, name="--output", kind="JSON file"):
    """Why a file cannot be written at `output`, or None when it can.

    Checked before a long job runs, so that its results are not lost at the
    end: `output` must not be a directory, and its nearest existing ancestor
    must be a writable directory (`write_text` makes missing parents). `name`
    and `kind` word the message ("--output", "JSON file").
    """
    if os.path.isdir(output):
        return f"{name} {output} is a directory; expected the path of a {kind} to write."
    problem = _directory_error(os.path.dirname(os.path.abspath(output)))
    if problem is None:
        return None
    if problem.endswith("is a file, not a directory"):
        return f"{name} {output}: {problem}; expected a path whose parent is a directory."
    return f"{name} {output}: {problem}; expected a path that can be written."


def write_text(path, text):
    """Write `text` to `path` through a temporary file beside it, making missing
    parents: a failed write leaves an existing `path` as it was. An existing
    link is written through, and the file gets the mode `open(path, "w")` gives."""
    path = os.path.realpath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with open(handle, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # not mkstemp's 0o600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path, payload):
    """Write `payload` as JSON to `path` atomically (`write_text`)."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def print_lines(lines):
    """Print `lines` to stdout. A reader that has gone (`transcribe.py ... | head -1`)
    ends the output quietly: the rest of stdout goes to /dev/null, so neither these
    prints nor Python's flush at exit end in a BrokenPipeError traceback."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

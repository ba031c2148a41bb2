"""Train a recurrent model: `python train.py --task transcription|language_model [flags]`.

Parse the flags into the task's configuration dataclass, then hand it to the
task's run, which builds the datasets and the model, fits, evaluates and
exports. With `--tune`, the task's hyperparameters are searched with
keras-tuner instead (`tuning.run_search`) and the best model is evaluated and
exported. `python train.py --task TASK --help` lists every flag of a task.
"""

import argparse
import importlib
import logging
import os
import shlex
import signal
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training import TASKS  # noqa: E402
from training.cli import add_config_flags, config_from_namespace, unrecognized_arguments  # noqa: E402
from tuning.config import TuningConfig  # noqa: E402
from tuning.search_spaces import TUNED_HYPERPARAMETERS  # noqa: E402
from tuning.tasks import tuning_task  # noqa: E402


def parse_command(argv=None):
    """Return `(task module, task config, TuningConfig)` for the command line `argv`."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", choices=sorted(TASKS), default="transcription")
    known, _ = pre.parse_known_args(argv)
    module = importlib.import_module(TASKS[known.task])

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task",
        choices=sorted(TASKS),
        default="transcription",
        help="what to train (default: 'transcription')",
    )
    add_config_flags(parser, module.Config, group_title=f"{known.task} options")
    add_config_flags(parser, TuningConfig, group_title="hyperparameter search (with --tune)")
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.error(unrecognized_arguments(parser, sys.argv[1:] if argv is None else list(argv), extras))
    try:
        config = config_from_namespace(module.Config, args)
        tuning = TuningConfig.from_flags(args)
        init_from = getattr(config, "init_from", None)
        if init_from is not None and not os.path.isdir(init_from):  # checked before the data is prepared
            problem = "is a file, not a directory" if os.path.exists(init_from) else "does not exist"
            raise ValueError(f"--init-from {init_from} {problem}; expected the --output-dir of an earlier "
                             "train.py run of this task.")
        if getattr(config, "candidates", None) is not None:
            module.read_candidates(config)  # a bad file is refused now, not after a search or a training
        if tuning.tune:
            tuning_task(known.task).search_ranges(tuning)  # an empty range fails here
            if getattr(config, "ensemble", 1) > 1:
                raise ValueError(
                    "--ensemble trains several runs of one configuration; --tune searches configurations. "
                    "Tune first, then train an ensemble of the best one's flags."
                )
            # What the search chooses or bounds itself: a value given here would be ignored.
            searched = {name: "--min-{0}/--max-{0}".format(name.replace("_", "-")) for name in TUNED_HYPERPARAMETERS}
            searched.update(epochs="--max-epochs (a trial's epochs)",
                            max_train_minutes="--time-budget-minutes (the whole search's)")
            given = [name for name in searched if hasattr(args, name) and getattr(args, name) != parser.get_default(name)]
            if given:
                raise ValueError(
                    "with --tune, " + "; ".join(f"--{name.replace('_', '-')} is set by the search: give {searched[name]}"
                                                for name in given)
                    + " instead (the value given would be ignored)."
                )
            if config.overwrite:
                raise ValueError(
                    "--overwrite trains a finished run again; --tune resumes the search in --output-dir "
                    "(its finished trials are kept): give another --output-dir to search again."
                )
            if getattr(config, "init_from", None) is not None:
                raise ValueError(
                    "--init-from starts one run from another's weights; --tune trains models of "
                    "other sizes from scratch, so the two do not combine. Tune first, then fine-tune."
                )
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    return module, config, tuning


def parse_args(argv=None):
    """Return `(task module, task config)` for the command line `argv`."""
    module, config, _ = parse_command(argv)
    return module, config


def next_steps(task, config, result):
    """Commands that use what a finished run wrote (printed at the end of `main`).

    `result` is what the run returned: the metrics of a training run (its
    `export_dir`), or the summary of a search (`best`, with the best model's
    run directory and export).
    """
    if task == "transcription":
        tool, export_name, example = "transcribe.py", "transcriber", "FILE.wav"
    else:
        tool, export_name, example = "generate.py", "language_model", "--prompt TEXT"
    if "best" in result:  # a search: the best model's run directory and its export
        model_dir, export = result["best"]["model"]["path"], result["best"].get("export")
    else:
        model_dir, export = config.output_dir, result.get("export_dir")
        if getattr(config, "ensemble", 1) > 1:  # the ensemble exists only as its export
            model_dir = export
    lines = []
    if model_dir:
        lines.append(f"  python {tool} --model-dir {shlex.quote(str(model_dir))} {example}")
    if export:
        lines.append(
            f"  python -m serving --model_name={export_name} "
            f"--model_base_path={shlex.quote(os.path.dirname(str(export)))} --rest_api_port=8501"
            "    # TF Serving's REST API"
        )
    return "Next:\n" + "\n".join(lines) if lines else ""


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    # The project's own progress messages; TFDS' routine absl notices about
    # the project's local builders ("custom data configuration") are noise.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for package in ("data", "pipelines", "models", "training", "tuning", "serving", "layers"):
        logging.getLogger(package).setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.ERROR)
    module, config, tuning = parse_command(argv)
    task = {path: name for name, path in TASKS.items()}[module.__name__]
    # SIGTERM (a scheduler, `kill`, the distributed launcher) ends the run as
    # Ctrl-C does, so that half-written exports and caches are removed.
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if tuning.tune:
            from tuning.run_search import run_search

            result = run_search(tuning_task(task), config, tuning)
        else:
            result = module.run(config)
    except (ValueError, OSError) as error:
        # Bad data or settings (a missing file, undecodable text, audio that
        # is not audio under --strict, ...): the message names the file or
        # field. The traceback is kept for bug reports with TRAIN_TRACEBACK=1.
        if os.environ.get("TRAIN_TRACEBACK"):
            traceback.print_exc()
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("TRAIN_TRACEBACK"):
            traceback.print_exc()
        print(f"train.py: interrupted. What {config.output_dir} holds is kept: run the same command again to "
              "resume from the last finished epoch (or trial).", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if isinstance(result, dict) and result.get("role") != "worker":  # a search's workers export nothing
        steps = next_steps(task, config, result)
        if steps:
            print(steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())

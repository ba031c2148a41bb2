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
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training import TASKS  # noqa: E402
from training.cli import add_config_flags, config_from_namespace  # noqa: E402
from tuning.config import TuningConfig  # noqa: E402
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
    args = parser.parse_args(argv)
    try:
        config = config_from_namespace(module.Config, args)
        tuning = TuningConfig.from_flags(args)
        if getattr(config, "candidates", None) is not None:
            module.read_candidates(config)  # a bad file is refused now, not after a search or a training
        if tuning.tune:
            tuning_task(known.task).search_ranges(tuning)  # an empty range fails here
            if getattr(config, "ensemble", 1) > 1:
                raise ValueError(
                    "--ensemble trains several runs of one configuration; --tune searches configurations. "
                    "Tune first, then train an ensemble of the best one's flags."
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


def main(argv=None):
    # The project's own progress messages; TFDS' routine absl notices about
    # the project's local builders ("custom data configuration") are noise.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for package in ("data", "pipelines", "models", "training", "tuning", "serving", "layers"):
        logging.getLogger(package).setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.ERROR)
    module, config, tuning = parse_command(argv)
    try:
        if tuning.tune:
            from tuning.run_search import run_search

            task = {path: name for name, path in TASKS.items()}[module.__name__]
            run_search(tuning_task(task), config, tuning)
        else:
            module.run(config)
    except (ValueError, OSError) as error:
        # Bad data or settings (a missing file, undecodable text, audio that
        # is not audio under --strict, ...): the message names the file or
        # field. The traceback is kept for bug reports with TRAIN_TRACEBACK=1.
        if os.environ.get("TRAIN_TRACEBACK"):
            traceback.print_exc()
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

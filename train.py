"""Train a recurrent model: `python train.py --task transcription|language_model [flags]`.

Parse the flags into the task's configuration dataclass, then hand it to the
task's run, which builds the datasets and the model, fits, evaluates and
exports. `python train.py --task TASK --help` lists every flag of a task.
"""

import argparse
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training import TASKS  # noqa: E402
from training.cli import add_config_flags, config_from_namespace  # noqa: E402


def parse_args(argv=None):
    """Return `(task module, task config)` for the command line `argv`."""
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
    args = parser.parse_args(argv)
    try:
        config = config_from_namespace(module.Config, args)
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    return module, config


def main(argv=None):
    module, config = parse_args(argv)
    module.run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())

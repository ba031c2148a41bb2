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

# Nothing imported here imports TensorFlow (about 5 s): the flags are built from
# the task's configuration module, and --help or a bad flag answers at once;
# the task's module (TensorFlow, Keras) is imported once the flags are read.
from training import CONFIG_MODULES, TASKS  # noqa: E402
from training.cli import (  # noqa: E402
    _directory_error,
    _flag,
    add_config_flags,
    config_from_namespace,
    output_dir_error,
    take_dash_values,
    unrecognized_arguments,
)
from tuning.config import TuningConfig  # noqa: E402
from tuning.search_ranges import TUNED_HYPERPARAMETERS  # noqa: E402


def parse_command(argv=None):
    """Return `(task module, task config, TuningConfig)` for the command line `argv`."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", choices=sorted(TASKS), default="transcription")
    known, _ = pre.parse_known_args(argv)
    config_module = importlib.import_module(CONFIG_MODULES[known.task])  # Config alone: no TensorFlow yet

    parser = take_dash_values(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument(
        "--task",
        choices=sorted(TASKS),
        default="transcription",
        help="what to train (default: 'transcription')",
    )
    add_config_flags(parser, config_module.Config, group_title=f"{known.task} options")
    add_config_flags(parser, TuningConfig, group_title="hyperparameter search (with --tune)")
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.error(unrecognized_arguments(parser, sys.argv[1:] if argv is None else list(argv), extras))
    try:
        config = config_from_namespace(config_module.Config, args)
        tuning = TuningConfig.from_flags(args)
        init_from = getattr(config, "init_from", None)
        if init_from is not None and not os.path.isdir(init_from):  # checked before the data is prepared
            problem = "is a file, not a directory" if os.path.exists(init_from) else "does not exist"
            raise ValueError(f"--init-from {init_from} {problem}; expected the --output-dir of an earlier "
                             "train.py run of this task.")
        check_effective_flags(args, config, tuning)
        if tuning.tune:
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
        # Where the run writes, then what it reads: before TensorFlow (about 5 s) and any data.
        what = "search" if tuning.tune else "ensemble run" if getattr(config, "ensemble", 1) > 1 else "run"
        problem = output_dir_error(config.output_dir, what)
        if problem is not None:
            raise ValueError(problem)
        check_directories(config)
        check_datasets(config)
        if getattr(config, "candidates", None) is not None:
            config_module.read_candidates(config)  # a bad file is refused now, not after a search or a training
        module = importlib.import_module(TASKS[known.task])  # the run: TensorFlow and Keras
        if tuning.tune:
            from tuning.tasks import tuning_task

            tuning_task(known.task).search_ranges(tuning)  # an empty range fails here
    except (ValueError, TypeError, FileNotFoundError) as error:
        parser.error(str(error))
    return module, config, tuning


def check_effective_flags(args, config, tuning):
    """A ValueError when a flag given in `args` would have no effect beside the others.

    `args` holds only the flags given (their defaults are `argparse.SUPPRESS`);
    `config` and `tuning` are what they make. A value that the run would ignore
    is refused, naming the flag and why, rather than trained without.
    """
    given = vars(args)
    if "mix_fraction" in given and getattr(config, "mix_dataset", None) is None:
        raise ValueError("--mix-fraction is the share of training batches taken from --mix-dataset, and no "
                         "--mix-dataset is given: the value would be ignored. Give --mix-dataset SPEC too, or "
                         "drop --mix-fraction.")
    if getattr(config, "feature_kind", None) == "mfcc":
        for name, what in (("frequency_warp", "stretches the mel axis"),
                           ("random_eq", "adds a gain curve over the mel axis")):
            if given.get(name, 0) > 0:
                raise ValueError(f"{_flag(name)} {given[name]} with --feature-kind mfcc: it {what} of log_mel "
                                 "features, and MFCCs have none, so training would leave it out. Give "
                                 f"{_flag(name)} 0, or drop it.")
    if "n_mfcc" in given and getattr(config, "feature_kind", None) != "mfcc":
        raise ValueError(f"--n-mfcc is the number of coefficients kept with --feature-kind mfcc; with "
                         f"--feature-kind {config.feature_kind} the value would be ignored. Give --feature-kind "
                         "mfcc too, or drop --n-mfcc.")
    if "spec_augment_max_frequency" in given and getattr(config, "spec_augment", None) is False:
        why = "--no-spec-augment" if "spec_augment" in given else "off by default when --dataset is only synthetic"
        raise ValueError(f"--spec-augment-max-frequency is the widest SpecAugment frequency mask, and SpecAugment "
                         f"is off ({why}): the value would be ignored. Give --spec-augment too, or drop "
                         "--spec-augment-max-frequency.")
    if given.get("data_dir") is not None:
        from data.speech_sources import CATALOG, spec_parts

        specs = [spec for spec in (config.dataset, config.mix_dataset) if spec is not None]
        if not any(part in CATALOG for spec in specs for part in spec_parts(spec)):
            raise ValueError(f"--data-dir is the TFDS data directory of the catalog datasets ({', '.join(CATALOG)}), "
                             f"and neither --dataset nor --mix-dataset names one ({' and '.join(specs)}): the "
                             "value would be ignored. Drop --data-dir.")
    if given.get("tfds_data_dir") is not None:
        from data.text_sources import TFDS_PREFIX

        if not config.dataset.startswith(TFDS_PREFIX):
            raise ValueError(f"--tfds-data-dir is the TFDS data directory of '{TFDS_PREFIX}NAME' datasets, and "
                             f"--dataset {config.dataset} is not one: the value would be ignored. Drop "
                             "--tfds-data-dir.")
    if tuning.tune:
        # Read by a training run only: a search's trials and its best model train without them
        # (--lr-schedule is not one: each trial follows it, tuning.task_hypermodel).
        unused = {
            "early_stopping_patience": "the trials and the best model train up to --max-epochs epochs, without "
                                       "early stopping",
            "sample_prompt": "a search prints no sample (python generate.py --model-dir on its best model does)",
            "sample_length": "a search prints no sample (python generate.py --model-dir on its best model does)",
            "temperature": "a search prints no sample (python generate.py --model-dir on its best model does)",
        }
        ignored = [name for name in unused if name in given]
        if ignored:
            raise ValueError("with --tune, " + "; ".join(f"{_flag(name)} has no effect: {unused[name]}"
                                                          for name in ignored)
                             + (". Drop it." if len(ignored) == 1 else ". Drop them."))
        if "hyperband_factor" in given and tuning.tuner != "hyperband":
            raise ValueError(f"--hyperband-factor is Hyperband's reduction factor; --tuner {tuning.tuner} does not "
                             "use it, so the value would be ignored. Give --tuner hyperband, or drop it.")
    elif getattr(config, "sample_length", None) == 0:
        ignored = [name for name in ("sample_prompt", "temperature") if name in given]
        if ignored:
            raise ValueError(f"--sample-length 0 prints no sample, so {' and '.join(map(_flag, ignored))} would "
                             "be ignored. Give a --sample-length above 0, or drop them.")


def check_datasets(config):
    """A ValueError (or FileNotFoundError) naming the flag for a --dataset or
    --mix-dataset that names no data: no such folder or file, options the spec
    does not take. What the data holds is the run's to read."""
    if hasattr(config, "mix_dataset"):
        from data.speech_sources import check_speech_spec

        check_speech_spec(config.dataset)
        if config.mix_dataset is not None:
            check_speech_spec(config.mix_dataset, "mix_dataset")
    else:
        from data.text_sources import check_text_source

        check_text_source(config.dataset)


def _dataset_paths(config):
    """The folders (transcription) or the text file (language model) that `config`'s
    --dataset and --mix-dataset read, as `(flag, path)` pairs."""
    if hasattr(config, "mix_dataset"):  # speech: folders, 'synthetic', catalog names, joined by '+'
        from data.speech_sources import spec_folder, spec_parts

        return [(flag, folder)
                for flag, spec in (("--dataset", config.dataset), ("--mix-dataset", config.mix_dataset))
                if spec is not None and spec.strip()
                for folder in map(spec_folder, spec_parts(spec)) if folder is not None]
    from data.text_sources import TFDS_PREFIX, text_source_path

    if config.dataset.startswith(TFDS_PREFIX):
        return []
    return [("--dataset", text_source_path(config.dataset))]


def check_directories(config):
    """A ValueError, naming the flag, for an --output-dir that holds the data or a --cache-dir
    that cannot be made; checked before any data is read."""
    out = os.path.realpath(config.output_dir)
    for flag, path in _dataset_paths(config):
        data = os.path.realpath(path)
        if os.path.commonpath([out, data]) == out:
            # A run writes config.json, metrics.json, model.keras, logs/, export/, ... there, and the
            # messages of a later run offer to remove its --output-dir "to start again".
            where = "holds" if out != data else "is the folder of" if os.path.isdir(data) else "is"
            raise ValueError(
                f"--output-dir {config.output_dir} {where} {flag} {path}: a run writes its "
                "config.json, metrics.json, model, logs and export there, and removing an --output-dir to "
                "start again would delete the data. Nothing was written: give an --output-dir outside it.")
    if hasattr(config, "cache_dir"):
        from pipelines.feature_cache import DEFAULT_CACHE_DIR

        cache = os.path.expanduser(config.cache_dir or DEFAULT_CACHE_DIR)
        # An existing directory may hold every feature already (a shared, read-only cache): left to the run.
        if not os.path.isdir(cache):
            problem = "is a file, not a directory" if os.path.exists(cache) else _directory_error(cache)
            if problem is not None:
                given = "--cache-dir" if config.cache_dir else "the default --cache-dir"
                raise ValueError(f"{given} {cache}: {problem}; expected a directory where corpora are generated "
                                 "and features cached. Give another --cache-dir.")


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
    if model_dir and task == "transcription":
        lines.append(f'  python -m data.say "what say you to this" {example}    # speech to try it on (or your own '
                     'wav/flac)')
    if model_dir:
        lines.append(f"  python {tool} --model-dir {shlex.quote(str(model_dir))} {example}")
    if export:
        lines.append(
            f"  python -m serving --model_name={export_name} "
            f"--model_base_path={shlex.quote(os.path.dirname(str(export)))} --rest_api_port=8501"
            "    # TF Serving's REST API"
        )
    return "Next:\n" + "\n".join(lines) if lines else ""


def _cache_note(config, error):
    """What to add to the message of `error` when it is about a file of the cache
    directory (an existing one that cannot be written): the flag that chose it."""
    if (not isinstance(error, OSError) or not isinstance(error.filename, (str, bytes)) or not error.filename
            or not hasattr(config, "cache_dir")):
        return ""
    from pipelines.feature_cache import DEFAULT_CACHE_DIR

    cache = os.path.realpath(os.path.expanduser(config.cache_dir or DEFAULT_CACHE_DIR))
    path = os.path.realpath(os.fsdecode(error.filename))
    if os.path.commonpath([cache, path]) != cache:
        return ""
    return f" (in --cache-dir {cache}: expected a directory this run can write corpora and features into)"


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
            from tuning.tasks import tuning_task

            result = run_search(tuning_task(task), config, tuning)
        else:
            result = module.run(config)
    except (ValueError, OSError) as error:
        # Bad data or settings (a missing file, undecodable text, audio that
        # is not audio under --strict, ...): the message names the file or
        # field. The traceback is kept for bug reports with TRAIN_TRACEBACK=1.
        if os.environ.get("TRAIN_TRACEBACK"):
            traceback.print_exc()
        print(f"train.py: error: {error}{_cache_note(config, error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("TRAIN_TRACEBACK"):
            traceback.print_exc()
        from training import trained_weights
        from training.data_seed import BACKUP_STATE_FILE

        backup_dir = os.path.join(config.output_dir, module.BACKUP_DIR)
        if tuning.tune or os.path.exists(os.path.join(backup_dir, BACKUP_STATE_FILE)):
            resume = "resume from the last finished epoch (or trial)."
        else:  # killed before its first epoch ended (or after training: the backup was replaced by the weights)
            trained = os.path.exists(os.path.join(backup_dir, trained_weights.STATE_FILE))
            resume = ("evaluate and save the weights it trained." if trained
                      else "start again: no epoch had finished.")
        print(f"train.py: interrupted. What {config.output_dir} holds is kept: run the same command again to "
              f"{resume}", file=sys.stderr)
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

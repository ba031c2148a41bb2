"""Export a finished training run for serving: `python -m serving.export_run RUN_DIR`.

    python -m serving.export_run runs/transcription        # -> runs/transcription/export/transcriber/N
    python -m serving.export_run runs/language_model --export_base /srv/models

Reads what a run of `train.py` leaves in its output directory (`model.keras`,
`vocabulary.json`, `config.json`, `metrics.json`, and `feature_config.json`
for transcription, which is how the task is recognised) and writes the next
version under `<export_base>/<transcriber|language_model>/`, as the run
itself does at its end. For runs made with `--no-export`, or before the
export existed.

An ensemble run (`train.py --task transcription --ensemble N`) is exported
again from its members, into its own directory:

    python -m serving.export_run runs/fsdd_ensemble --candidates digits.txt

Several transcription runs trained on the same features and vocabulary
with the same frame stacking (say, one command with different `--seed`s)
are packed into one ensemble SavedModel with the same signatures (see
`serving.transcription_export.export_transcriber`):

    python -m serving.export_run runs/fsdd_s1 runs/fsdd_s2 runs/fsdd_s3 runs/fsdd_s4 \
        --export_base runs/fsdd_ensemble/export          # -> runs/fsdd_ensemble/export/transcriber/1

`--candidates FILE` (one text per line) exports a transcriber, or an
ensemble, that decodes with a closed vocabulary: its `text` is always one of
those texts (digit words, commands), the most likely under its `log_probs`:

    python -m serving.export_run runs/fsdd --candidates digits.txt   # -> the next version

`--candidate_warps 0.92,0.96,1,1.04,1.08` adds test-time warping to that
choice: the features are also read with the mel axis stretched by each
factor, and a candidate's score is its mean likelihood over them (one model
pass per factor):

    python -m serving.export_run runs/fsdd --candidates digits.txt --candidate_warps 0.92,0.96,1,1.04,1.08
"""

import argparse
import json
import os
import sys
import typing


def _read_json(path, required=True):
    if not os.path.isfile(path):
        if required:
            raise SystemExit(f"{path} does not exist; expected a file written by train.py.")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as error:
        raise SystemExit(f"{path} cannot be read as JSON ({error}); expected the file train.py wrote there.") from None
    if not isinstance(value, dict):
        raise SystemExit(f"{path} holds a JSON {type(value).__name__}, not an object; "
                         "expected the file train.py wrote there.")
    return value


class _Run(typing.NamedTuple):
    """What a finished run left in its directory; the model is loaded on demand."""

    run_dir: str
    vocabulary: object  # pipelines.vocabulary.Vocabulary
    feature_config: dict | None  # None for a language-model run
    config: dict
    metrics: dict

    def load_model(self):
        import keras

        # The builders import (and so register) every custom layer a saved model may hold.
        import models.language_model  # noqa: F401
        import models.transcription  # noqa: F401

        from models.language_model_io import unreadable_model_error

        path = os.path.join(self.run_dir, "model.keras")
        try:
            return keras.saving.load_model(path)
        except Exception as error:  # Keras raises several types for a damaged file
            raise SystemExit(str(unreadable_model_error(path, error))) from None


def _read_run(run_dir):
    """The `_Run` of `run_dir`; a SystemExit when it has no model.keras."""
    model_path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(model_path):
        best = os.path.join(run_dir, "tuning", "best")  # tuning.run_search's best model, a run directory
        hint = (f" It is a tuning run (train.py --tune): use {best} (its best model)."
                if os.path.isfile(os.path.join(best, "model.keras")) else "")
        raise SystemExit(f"{model_path} does not exist; expected the directory of a finished train.py run.{hint}")
    from models.language_model_io import load_vocabulary_file

    metrics = _read_json(os.path.join(run_dir, "metrics.json"), required=False) or {}
    vocabulary_path = os.path.join(run_dir, "vocabulary.json")
    try:
        vocabulary = load_vocabulary_file(vocabulary_path)
    except FileNotFoundError:
        raise SystemExit(f"{vocabulary_path} does not exist; expected the directory of a finished train.py run.") from None
    except ValueError as error:
        raise SystemExit(str(error)) from None
    feature_config_path = os.path.join(run_dir, "feature_config.json")
    feature_config = _read_json(feature_config_path, required=False)
    if feature_config is not None:
        from pipelines.audio_features import FeatureConfig

        try:
            FeatureConfig.from_dict(feature_config)  # a field of another version, a value out of range
        except (TypeError, ValueError) as error:
            raise SystemExit(f"{feature_config_path}: {error}") from None
    return _Run(
        run_dir=run_dir,
        vocabulary=vocabulary,
        feature_config=feature_config,
        config=_read_json(os.path.join(run_dir, "config.json"), required=False) or {},
        metrics={k: v for k, v in metrics.items() if k not in ("history", "skipped_files", "sample")},
    )


def ensemble_members(run_dir):
    """The member run directories of an ensemble run (`train.py --ensemble N`), else None.

    Read from its config.json: the members of seeds SEED..SEED+N-1
    (`training.transcription_ensemble.member_dir`).
    """
    if os.path.isfile(os.path.join(run_dir, "model.keras")):
        return None
    config = _read_json(os.path.join(run_dir, "config.json"), required=False) or {}
    if not isinstance(config.get("ensemble"), int) or config["ensemble"] <= 1:
        return None
    from training.transcription_ensemble import member_dir

    return [member_dir(run_dir, config["seed"] + k) for k in range(config["ensemble"])]


def _own_export_base(run_dir):
    """Where a run exports by default: `run_dir/export`; a search's best model
    (`DIR/tuning/best`) into the search's `DIR/export`, beside the version the
    search itself exported there (the one its "Next:" line serves)."""
    tuning_dir = os.path.dirname(os.path.abspath(run_dir))
    if (os.path.basename(os.path.abspath(run_dir)) == "best" and os.path.basename(tuning_dir) == "tuning"
            and os.path.isfile(os.path.join(tuning_dir, "best.json"))):
        return os.path.normpath(os.path.join(run_dir, os.pardir, os.pardir, "export"))
    return os.path.join(run_dir, "export")


def _expand(run_dirs):
    """`(run directories, default export base)`: ensemble runs replaced by their members."""
    expanded = []
    for run_dir in run_dirs:
        expanded.extend(ensemble_members(run_dir) or [run_dir])
    # One ensemble run exports into its own directory, as a single run does.
    default_base = _own_export_base(run_dirs[0]) if len(run_dirs) == 1 else None
    return expanded, default_base


def export_ensemble(run_dirs, export_base, candidates=None, candidate_warps=None):
    """Pack the models of several transcription runs into one SavedModel.

    The runs must share the feature configuration, the vocabulary and the
    frame stacking (their frame counts must agree); a SystemExit names the
    run and the field that differs, before any model is loaded. Returns the
    new version directory. `candidates`: texts for closed-vocabulary
    decoding in the export, `candidate_warps`: its test-time warps
    (`export_transcriber`).
    """
    from pipelines.audio_features import FeatureConfig
    from serving.transcription_export import export_transcriber

    if export_base is None:
        raise SystemExit("Packing several runs into an ensemble needs --export_base (where to write it).")
    runs = [_read_run(run_dir) for run_dir in run_dirs]
    for run in runs:
        if run.feature_config is None:
            raise SystemExit(
                f"{run.run_dir} has no feature_config.json: only transcription runs can be packed into an ensemble."
            )
    first = runs[0]
    for run in runs[1:]:
        if run.vocabulary != first.vocabulary:
            ours, theirs = "".join(run.vocabulary.characters), "".join(first.vocabulary.characters)
            extra, missing = "".join(sorted(set(ours) - set(theirs))), "".join(sorted(set(theirs) - set(ours)))
            parts = [f"characters {extra!r} not in the first's"] if extra else []
            parts += [f"characters {missing!r} only in the first's"] if missing else []
            how = "; ".join(parts) or f"the same characters in another order ({ours!r} against {theirs!r})"
            raise SystemExit(f"{run.run_dir}: its vocabulary.json differs from {first.run_dir}'s ({how}); "
                             "an ensemble's members need one vocabulary.")
        for key in sorted(set(first.feature_config) | set(run.feature_config)):
            if run.feature_config.get(key) != first.feature_config.get(key):
                raise SystemExit(
                    f"{run.run_dir}: feature_config.json field {key!r} is {run.feature_config.get(key)!r}, "
                    f"but {first.feature_config.get(key)!r} in {first.run_dir}; "
                    "an ensemble's members need one feature configuration."
                )
        if run.config.get("frame_stack") != first.config.get("frame_stack"):
            raise SystemExit(
                f"{run.run_dir}: config.json field 'frame_stack' is {run.config.get('frame_stack')!r}, "
                f"but {first.config.get('frame_stack')!r} in {first.run_dir}; "
                "an ensemble's members need the same frame count."
            )
    return export_transcriber(
        [run.load_model() for run in runs], first.vocabulary, FeatureConfig.from_dict(first.feature_config),
        export_base,
        trained_on={"ensemble": [{"dataset": run.config.get("dataset"), "run_dir": os.path.abspath(run.run_dir)}
                                 for run in runs]},
        metrics={"members": [run.metrics for run in runs]},
        config={"members": [run.config for run in runs]},
        candidates=candidates,
        candidate_warps=candidate_warps,
    )


def export_run(run_dir, export_base=None, candidates=None, candidate_warps=None):
    """Export the model of `run_dir`; returns the new version directory.

    `run_dir` may be a list of transcription run directories: they are
    packed into one ensemble (`export_ensemble`; `export_base` required).
    An ensemble run's directory (`train.py --ensemble N`) stands for its
    members (exported into `run_dir/export` when it is the only one); a
    search's best model, `DIR/tuning/best`, exports into the search's
    `DIR/export` (the next version after the search's own).
    `candidates` (transcription only): texts for closed-vocabulary decoding
    in the export; `candidate_warps`: its test-time warps
    (`serving.transcription_export.export_transcriber`).
    """
    run_dirs, default_base = _expand(list(run_dir) if isinstance(run_dir, (list, tuple)) else [run_dir])
    if len(run_dirs) > 1:
        return export_ensemble(run_dirs, export_base or default_base, candidates, candidate_warps)
    (run_dir,) = run_dirs
    run = _read_run(run_dir)
    if candidates is not None and run.feature_config is None:
        raise SystemExit(
            f"{run_dir} is a language-model run (no feature_config.json); "
            "--candidates is closed-vocabulary decoding for transcription runs."
        )
    export_base = export_base or default_base
    trained_on = {"dataset": run.config.get("dataset"), "run_dir": os.path.abspath(run_dir)}
    if run.feature_config is not None:
        from pipelines.audio_features import FeatureConfig
        from serving.transcription_export import export_transcriber

        return export_transcriber(run.load_model(), run.vocabulary, FeatureConfig.from_dict(run.feature_config),
                                  export_base, trained_on=trained_on, metrics=run.metrics, config=run.config,
                                  candidates=candidates, candidate_warps=candidate_warps)
    from serving.language_model_export import export_language_model

    for key in ("dataset_location", "characters", "train_characters", "validation_characters"):
        if key in run.metrics:
            trained_on[key] = run.metrics[key]
    return export_language_model(run.load_model(), run.vocabulary, export_base, trained_on=trained_on,
                                 metrics=run.metrics, config=run.config)


def main(argv=None):
    from training.cli import take_dash_values

    # `--candidate_warps -1,1` reaches the check of its factors, as `--candidate_warps=-1,1` does.
    parser = take_dash_values(
        argparse.ArgumentParser(prog="python -m serving.export_run", description=__doc__.split("\n")[0]))
    parser.add_argument("run_dir", nargs="+",
                        help="Output directory of a train.py run (an ensemble run stands for its members); several "
                             "transcription runs are packed "
                             "into one ensemble (then --export_base is required).")
    parser.add_argument("--export_base", default=None,
                        help="Where to export (default RUN_DIR/export for a single run or ensemble run; "
                             "DIR/export for a search's best model, DIR/tuning/best).")
    parser.add_argument("--candidates", default=None, metavar="FILE",
                        help="Transcription: decode in the export with a closed vocabulary, the texts in FILE "
                             "(one per line); the served text is always one of them.")
    parser.add_argument("--candidate_warps", default=None, metavar="F1,F2,...",
                        help="With --candidates: also read the features with the mel axis stretched by each "
                             "factor (e.g. 0.92,0.96,1,1.04,1.08) and choose by the mean likelihood over them; "
                             "one model pass per factor.")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    members, seen = _expand(args.run_dir)[0], {}
    for member in members:
        real = os.path.realpath(member)
        if real in seen:
            parser.error(f"run_dir: {member} is given twice (as {seen[real]} too); expected each ensemble member "
                         "once (an ensemble run stands for its members).")
        seen[real] = member
    if args.export_base is not None:
        existing = os.path.abspath(args.export_base)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            parser.error(f"--export_base {args.export_base}: {existing} is not a directory; expected a directory "
                         "(existing or to be created) to export into.")
        # A model's folder of versions (a server's --model_base_path) or one of its versions: the
        # export would go to <it>/transcriber/1, which no server watching that folder sees.
        from serving.model_paths import version_directories

        base = os.path.abspath(args.export_base)
        versions = [str(version) for version in sorted(version_directories(base))]
        if versions or os.path.isfile(os.path.join(base, "saved_model.pb")):
            what = (f"holds SavedModel versions ({', '.join(versions)}): it is a model's folder"
                    if versions else "is a SavedModel version directory")
            parser.error(f"--export_base {args.export_base} {what}; expected the folder that holds the model "
                         "folders (it writes <export_base>/transcriber/N or <export_base>/language_model/N), "
                         f"e.g. {os.path.dirname(base) if versions else os.path.dirname(os.path.dirname(base))}")
    candidates = None
    if args.candidates is not None:
        from models.candidates import load_candidates, read_candidates_file

        try:
            candidates = load_candidates(args.candidates)
            first = _read_run(members[0])
            if first.feature_config is not None:  # a language-model run is refused by export_run
                # Checked against the first run's vocabulary before any model is loaded
                # (an ensemble's members share one); a bad text is named with its line.
                candidates = read_candidates_file(args.candidates, first.vocabulary)
        except ValueError as error:
            parser.error(f"--candidates {args.candidates}: {error}")
    candidate_warps = None
    if args.candidate_warps is not None:
        if candidates is None:
            parser.error("--candidate_warps averages closed-vocabulary scores over warps; give --candidates too")
        try:
            candidate_warps = [float(value) for value in args.candidate_warps.split(",")]
        except ValueError:
            parser.error(f"--candidate_warps: expected comma-separated numbers such as "
                         f"0.92,0.96,1,1.04,1.08, got {args.candidate_warps!r}")
        from models.candidates import check_candidate_warps

        kind = (_read_run(members[0]).feature_config or {}).get("kind", "log_mel")
        try:
            check_candidate_warps(candidate_warps, candidates, feature_kind=kind)
        except ValueError as error:
            parser.error(f"--candidate_warps {args.candidate_warps}: {error} ({members[0]})")
    try:
        print(export_run(args.run_dir, args.export_base, candidates, candidate_warps))
    except OSError as error:  # e.g. a file where the export's model directory goes
        where = error.filename or args.export_base or "the export base"
        parser.error(f"cannot write the export at {where}: {error.strerror or error}; expected a directory "
                     "for numbered SavedModel versions (or a path where one can be made)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

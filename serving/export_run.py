"""Export a finished training run for serving: `python -m serving.export_run RUN_DIR`.

    python -m serving.export_run runs/transcription        # -> runs/transcription/export/transcriber/N
    python -m serving.export_run runs/language_model --export_base /srv/models

Reads what a run of `train.py` leaves in its output directory (`model.keras`,
`vocabulary.json`, `config.json`, `metrics.json`, and `feature_config.json`
for transcription, which is how the task is recognised) and writes the next
version under `<export_base>/<transcriber|language_model>/`, as the run
itself does at its end. For runs made with `--no-export`, or before the
export existed.

Several transcription runs trained on the same features and vocabulary
with the same frame stacking (say, one command with different `--seed`s)
are packed into one ensemble SavedModel with the same signatures (see
`serving.transcription_export.export_transcriber`):

    python -m serving.export_run runs/fsdd_s1 runs/fsdd_s2 runs/fsdd_s3 runs/fsdd_s4 \
        --export_base runs/fsdd_ensemble/export          # -> runs/fsdd_ensemble/export/transcriber/1
"""

import argparse
import json
import os
import sys


def _read_json(path, required=True):
    if not os.path.isfile(path):
        if required:
            raise SystemExit(f"{path} does not exist; expected a file written by train.py.")
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_run(run_dir):
    """`(model, vocabulary, feature_config dict or None, config, metrics)` of a finished run."""
    import keras

    # The builders import (and so register) every custom layer a saved model may hold.
    import models.language_model  # noqa: F401
    import models.transcription  # noqa: F401
    from pipelines.vocabulary import Vocabulary

    model_path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(model_path):
        raise SystemExit(f"{model_path} does not exist; expected the directory of a finished train.py run.")
    vocabulary = Vocabulary.load(os.path.join(run_dir, "vocabulary.json"))
    config = _read_json(os.path.join(run_dir, "config.json"), required=False) or {}
    metrics = _read_json(os.path.join(run_dir, "metrics.json"), required=False) or {}
    metrics = {k: v for k, v in metrics.items() if k not in ("history", "skipped_files", "sample")}
    feature_config = _read_json(os.path.join(run_dir, "feature_config.json"), required=False)
    return keras.saving.load_model(model_path), vocabulary, feature_config, config, metrics


def export_ensemble(run_dirs, export_base):
    """Pack the models of several transcription runs into one SavedModel.

    The runs must share the feature configuration, the vocabulary and the
    frame stacking (their frame counts must agree); a SystemExit names the
    run and the field that differs. Returns the new version directory.
    """
    from pipelines.audio_features import FeatureConfig
    from serving.transcription_export import export_transcriber

    if export_base is None:
        raise SystemExit("Packing several runs into an ensemble needs --export_base (where to write it).")
    members = [_read_run(run_dir) for run_dir in run_dirs]
    for run_dir, member in zip(run_dirs, members):
        if member[2] is None:
            raise SystemExit(
                f"{run_dir} has no feature_config.json: only transcription runs can be packed into an ensemble."
            )
    _, vocabulary, feature_config, config, _ = members[0]
    for run_dir, (_, other_vocabulary, other_features, other_config, _) in zip(run_dirs[1:], members[1:]):
        if other_vocabulary != vocabulary:
            raise SystemExit(f"{run_dir}: its vocabulary.json differs from {run_dirs[0]}'s; "
                             "an ensemble's members need one vocabulary.")
        for key in sorted(set(feature_config) | set(other_features)):
            if other_features.get(key) != feature_config.get(key):
                raise SystemExit(
                    f"{run_dir}: feature_config.json field {key!r} is {other_features.get(key)!r}, "
                    f"but {feature_config.get(key)!r} in {run_dirs[0]}; an ensemble's members need one feature configuration."
                )
        if other_config.get("frame_stack") != config.get("frame_stack"):
            raise SystemExit(
                f"{run_dir}: config.json field 'frame_stack' is {other_config.get('frame_stack')!r}, "
                f"but {config.get('frame_stack')!r} in {run_dirs[0]}; an ensemble's members need the same frame count."
            )
    trained_on = {
        "ensemble": [
            {"dataset": member[3].get("dataset"), "run_dir": os.path.abspath(run_dir)}
            for run_dir, member in zip(run_dirs, members)
        ]
    }
    metrics = {"members": [member[4] for member in members]}
    return export_transcriber(
        [member[0] for member in members], vocabulary, FeatureConfig.from_dict(feature_config), export_base,
        trained_on=trained_on, metrics=metrics, config={"members": [member[3] for member in members]},
    )


def export_run(run_dir, export_base=None):
    """Export the model of `run_dir`; returns the new version directory.

    `run_dir` may be a list of transcription run directories: they are
    packed into one ensemble (`export_ensemble`; `export_base` required).
    """
    if isinstance(run_dir, (list, tuple)):
        if len(run_dir) > 1:
            return export_ensemble(list(run_dir), export_base)
        (run_dir,) = run_dir
    model, vocabulary, feature_config, config, metrics = _read_run(run_dir)
    export_base = export_base or os.path.join(run_dir, "export")
    trained_on = {"dataset": config.get("dataset"), "run_dir": os.path.abspath(run_dir)}
    if feature_config is not None:
        from pipelines.audio_features import FeatureConfig
        from serving.transcription_export import export_transcriber

        return export_transcriber(model, vocabulary, FeatureConfig.from_dict(feature_config),
                                  export_base, trained_on=trained_on, metrics=metrics, config=config)
    from serving.language_model_export import export_language_model

    for key in ("dataset_location", "characters", "train_characters", "validation_characters"):
        if key in metrics:
            trained_on[key] = metrics[key]
    return export_language_model(model, vocabulary, export_base, trained_on=trained_on,
                                 metrics=metrics, config=config)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m serving.export_run", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", nargs="+",
                        help="Output directory of a train.py run; several transcription runs are packed "
                             "into one ensemble (then --export_base is required).")
    parser.add_argument("--export_base", default=None,
                        help="Where to export (default RUN_DIR/export for a single run).")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(export_run(args.run_dir, args.export_base))
    return 0


if __name__ == "__main__":
    sys.exit(main())

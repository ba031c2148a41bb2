"""Export a finished training run for serving: `python -m serving.export_run RUN_DIR`.

    python -m serving.export_run runs/transcription        # -> runs/transcription/export/transcriber/N
    python -m serving.export_run runs/language_model --export_base /srv/models

Reads what a run of `train.py` leaves in its output directory (`model.keras`,
`vocabulary.json`, `config.json`, `metrics.json`, and `feature_config.json`
for transcription, which is how the task is recognised) and writes the next
version under `<export_base>/<transcriber|language_model>/`, as the run
itself does at its end. For runs made with `--no-export`, or before the
export existed.
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


def export_run(run_dir, export_base=None):
    """Export the model of `run_dir`; returns the new version directory."""
    import keras

    # The builders import (and so register) every custom layer a saved model may hold.
    import models.language_model  # noqa: F401
    import models.transcription  # noqa: F401
    from pipelines.vocabulary import Vocabulary

    model_path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(model_path):
        raise SystemExit(f"{model_path} does not exist; expected the directory of a finished train.py run.")
    export_base = export_base or os.path.join(run_dir, "export")
    vocabulary = Vocabulary.load(os.path.join(run_dir, "vocabulary.json"))
    config = _read_json(os.path.join(run_dir, "config.json"), required=False) or {}
    metrics = _read_json(os.path.join(run_dir, "metrics.json"), required=False) or {}
    metrics = {k: v for k, v in metrics.items() if k not in ("history", "skipped_files", "sample")}
    model = keras.saving.load_model(model_path)
    feature_config = _read_json(os.path.join(run_dir, "feature_config.json"), required=False)
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
    parser.add_argument("run_dir", help="Output directory of a train.py run.")
    parser.add_argument("--export_base", default=None, help="Where to export (default RUN_DIR/export).")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(export_run(args.run_dir, args.export_base))
    return 0


if __name__ == "__main__":
    sys.exit(main())

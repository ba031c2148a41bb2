"""Check the in-graph features (and decoded text) against librosa on real audio.

    python -m serving.feature_fidelity --manifest ../shared/data/fsdd/manifest.tsv \\
        [--export runs/transcription/export/transcriber/1] [--limit 0]

For every utterance of a manifest (`path` and `text` columns, paths relative
to the manifest), loaded with the project's loader: the mean absolute
difference between `layers.log_mel.LogMel` (tf.signal, what the export runs)
and `pipelines.audio_features.compute_features` (librosa, what training
used), on the normalised features. With `--export`, also the share of
utterances whose decoded text is the same through the export's
`serving_default` (waveform in, features in the graph) and `from_features`
(the librosa features in). The issue's bar: mean difference <= 1e-3 and the
same text for >= 99% of utterances. Prints a JSON report; exits 1 below the bar.
"""

import argparse
import csv
import json
import os
import sys
import time

import numpy as np


def _rows(manifest, limit):
    """The manifest's rows (paths made absolute), the first `limit` (0: all);
    ValueError when it has no `path` column or no rows."""
    with open(manifest, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows = list(reader)
    if "path" not in (reader.fieldnames or []):
        raise ValueError(f"--manifest {manifest} has no `path` column in its header ({reader.fieldnames}); "
                         "expected a TSV with a header naming `path` (and `text`)")
    if not rows:
        raise ValueError(f"--manifest {manifest} lists no utterances (a header and no rows); expected a "
                         "manifest with at least one row")
    root = os.path.dirname(os.path.abspath(manifest))
    rows = [dict(row, path=os.path.join(root, row["path"])) for row in rows]
    return rows[:limit] if limit else rows


def _padded(arrays, width=None):
    width = width or max(len(a) for a in arrays)
    batch = np.zeros((len(arrays), width, *arrays[0].shape[1:]), np.float32)
    for row, array in enumerate(arrays):
        batch[row, : len(array)] = array
    return batch, np.array([len(a) for a in arrays], np.int32)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m serving.feature_fidelity", description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", required=True, help="manifest.tsv with a `path` column.")
    parser.add_argument("--export", default=None, help="A transcriber version directory (also compares decoded text).")
    parser.add_argument("--limit", type=int, default=0, help="Check only the first N utterances (0: all).")
    parser.add_argument("--batch_size", type=int, default=32, help="Utterances per TensorFlow call.")
    args = parser.parse_args(argv)
    if args.limit < 0:
        parser.error(f"--limit must be 0 (all) or a positive integer, got {args.limit}")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be a positive integer, got {args.batch_size}")
    if not os.path.isfile(args.manifest):
        parser.error(f"--manifest {args.manifest} is not a file; expected a manifest.tsv with a `path` column")
    if args.export and not os.path.isfile(os.path.join(args.export, "saved_model.pb")):
        parser.error(f"--export {args.export} is not a SavedModel version directory (no saved_model.pb)")
    try:
        rows = _rows(args.manifest, args.limit)
    except UnicodeDecodeError as error:  # a ValueError too
        parser.error(f"--manifest {args.manifest}: {error}; expected a UTF-8 manifest.tsv")
    except OSError as error:
        parser.error(f"--manifest {args.manifest}: {error.strerror or error}; expected a readable manifest.tsv")
    except ValueError as error:
        parser.error(str(error))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import tensorflow as tf

    from layers.log_mel import LogMel
    from pipelines.audio_features import FeatureConfig, compute_features
    from pipelines.audio_loading import AudioError, load_audio
    from serving.export import load_version, read_metadata

    loaded, config = None, FeatureConfig()
    if args.export:
        try:
            config = FeatureConfig.from_dict(read_metadata(args.export, task="transcription")["feature_config"])
            loaded = load_version(args.export)
        except (OSError, ValueError) as error:
            parser.error(f"--export {args.export}: {error}")
    layer = LogMel(config)
    started = time.perf_counter()
    differences, max_differences, same_text, skipped, examples = [], [], [], [], []
    for start in range(0, len(rows), args.batch_size):
        waveforms, references = [], []
        for row in rows[start: start + args.batch_size]:
            try:
                waveform = load_audio(row["path"], config.sample_rate, min_samples=config.n_fft)
            except AudioError as error:
                skipped.append(str(error))
                continue
            waveforms.append(waveform)
            references.append(compute_features(waveform, config))
        if not waveforms:
            continue
        batch, lengths = _padded(waveforms)
        features, feature_length = layer([batch, lengths])
        features = np.asarray(features)
        for row, reference in enumerate(references):
            difference = np.abs(features[row, : len(reference)] - reference)
            differences.append(float(difference.mean()))
            max_differences.append(float(difference.max()))
            if int(feature_length[row]) != len(reference):
                raise RuntimeError(f"LogMel gave {int(feature_length[row])} frames, librosa {len(reference)}.")
        if loaded is not None:
            served = loaded.signatures["serving_default"](
                waveform=tf.constant(batch), waveform_length=tf.constant(lengths))
            librosa_batch, librosa_lengths = _padded(references)
            offline = loaded.signatures["from_features"](
                features=tf.constant(librosa_batch), feature_length=tf.constant(librosa_lengths))
            for a, b in zip(served["text"].numpy(), offline["text"].numpy()):
                same_text.append(a == b)
                if a != b and len(examples) < 5:
                    examples.append({"in_graph": a.decode(), "librosa": b.decode()})
    report = {
        "manifest": args.manifest,
        "export": args.export,
        "feature_config": config.to_dict(),
        "utterances": len(differences),
        "skipped": len(skipped),
        "skipped_examples": skipped[:3],
        "mean_abs_difference": float(np.mean(differences)) if differences else None,
        "worst_utterance_mean_abs_difference": float(np.max(differences)) if differences else None,
        "max_abs_difference": float(np.max(max_differences)) if max_differences else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    passed = bool(differences) and report["mean_abs_difference"] <= 1e-3
    if loaded is not None:
        report["same_text_fraction"] = float(np.mean(same_text)) if same_text else None
        report["different_text_examples"] = examples
        passed = passed and bool(same_text) and report["same_text_fraction"] >= 0.99
    report["passed"] = passed
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""Transcribe audio files with a trained model: `python transcribe.py --model-dir DIR FILE...`.

DIR is the `--output-dir` of `python train.py --task transcription` (it holds
model.keras, vocabulary.json and feature_config.json), or an exported
SavedModel version (DIR/export/transcriber/N, or an ensemble packed by
`python -m serving.export_run RUN RUN ...`), whose own greedy `text` output is
then printed. Files may be wav,
flac or anything libsndfile reads, at any sample rate and channel count:
they are mixed to mono, resampled and featurised exactly as in training.
Prints one `file<TAB>text` line per file; a file that cannot be used is
reported on stderr with the reason, and the exit status is then 1.

Example:

    python transcribe.py --model-dir runs/transcription speech.wav other.flac
    python transcribe.py --model-dir runs/transcription --beam-width 16 speech.wav
    python transcribe.py --model-dir runs/fsdd --candidates digits.txt 7_lucas_0.wav
    python transcribe.py --model-dir runs/fsdd_ensemble/export/transcriber/1 7_lucas_0.wav
    python transcribe.py --model-dir runs/asterisk --lm runs/lm_ljspeech --lm-weight 0.5 prompt.wav

`--candidates FILE --candidate-warps 0.92,0.96,1,1.04,1.08` also reads each
file with the mel axis stretched by each factor and prints the candidate of
highest mean likelihood over them (as an export made by `serving.export_run`
with the same two flags does).
`--lm RUN_DIR` decodes with CTC prefix beam search fused with a character
language model (`models.ctc_lm_decoding`; `--beam-width` sets its beams).
`--lexicon FILE` (a word list, or any text: its words) makes that search spell
only the file's words, with or without `--lm`.
"""

import argparse
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from models.candidates import check_candidate_warps, read_candidates_file  # noqa: E402
from models.ctc_lm_decoding import CharacterLanguageModelScorer, Lexicon, ctc_beam_search_with_lm  # noqa: E402
from pipelines.audio_loading import UNREADABLE, AudioError  # noqa: E402
from training.cli import print_lines  # noqa: E402

# TensorFlow and Keras (about 5 s to import) are imported where they are used,
# after the arguments are checked: --help and a bad argument answer at once.


class ExportedTranscriber:
    """An exported transcriber's `from_features` signature, called as `transcribe_features` calls a model.

    Its outputs include the export's own greedy `text`, which for an
    ensemble export is the members' best-scored hypothesis rather than a
    greedy decoding of the mean probability in `log_probs`.
    """

    def __init__(self, export_dir):
        import tensorflow as tf

        from pipelines.audio_features import FeatureConfig
        from pipelines.vocabulary import Vocabulary
        from serving.export import load_version, read_metadata

        metadata = read_metadata(export_dir, task="transcription")
        self.vocabulary = Vocabulary.from_config(metadata["vocabulary"])
        self.feature_config = FeatureConfig.from_dict(metadata["feature_config"])
        self._tf = tf
        self._signature = load_version(export_dir).signatures["from_features"]

    def predict_on_batch(self, inputs):
        outputs = self._signature(
            features=self._tf.constant(inputs["features"], self._tf.float32),
            feature_length=self._tf.constant(inputs["feature_length"], self._tf.int32),
        )
        outputs = {key: value.numpy() for key, value in outputs.items()}
        outputs["text"] = [text.decode("utf-8") for text in outputs["text"]]
        return outputs


def load_scorer(run_dir, vocabulary):
    """The `CharacterLanguageModelScorer` of `--lm run_dir`; every error names `--lm run_dir`."""
    from models.language_model_io import is_transcription_run

    flag = f"argument --lm {run_dir}"
    if is_transcription_run(run_dir):
        raise ValueError(
            f"{flag}: it is a speech transcription run; expected a character language model run "
            "(the --output-dir of train.py --task language_model)"
        )
    try:
        return CharacterLanguageModelScorer.from_run(run_dir, vocabulary)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{flag}: {error}") from None
    except ValueError as error:
        raise ValueError(f"{flag}: {error}") from None


def audio_features(path, feature_config, *, max_duration_s=None):
    """`load_features` of one file; a directory is an `AudioError` saying so."""
    from pipelines.speech_dataset import load_features

    if os.path.isdir(path):
        raise AudioError(path, UNREADABLE, "is a directory; expected an audio file (wav, flac, ...)")
    return load_features(path, feature_config, max_duration_s=max_duration_s, limit_name="--max-duration-s")


def transcribe_features(
    model, vocabulary, features, *, beam_width=1, batch_size=16, candidates=None, scorer=None, lm_weight=0.5,
    lm_bonus=0.0, lexicon=None, candidate_warps=None,
):
    """Texts of a list of `(frames, n_features)` arrays, decoded in padded batches.

    With `candidates` (texts), each text is the most likely candidate
    (closed-vocabulary decoding, `ctc_choose_text`) instead, and with
    `candidate_warps` as well the most likely by its mean likelihood over
    the features warped by each factor (as an export made with
    `--candidate_warps` chooses); with `scorer`
    (a `CharacterLanguageModelScorer`), the best of a prefix beam search of
    `beam_width` beams fused with that language model; with `lexicon` (a
    `Lexicon`) that search spells only its words.
    """
    from models.ctc_decoding import ctc_choose_text, ctc_decode_text

    texts = []
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size]
        lengths = np.array([len(f) for f in chunk], "int32")
        batch = np.zeros((len(chunk), lengths.max(), chunk[0].shape[1]), "float32")
        for row, f in enumerate(chunk):
            batch[row, : len(f)] = f
        if candidate_warps is not None:
            texts.extend(_warped_choice(model, vocabulary, batch, lengths, candidates, candidate_warps))
            continue
        outputs = model.predict_on_batch({"features": batch, "feature_length": lengths})
        if candidates is not None:
            chosen, _ = ctc_choose_text(
                outputs["log_probs"], outputs["frame_length"], candidates, vocabulary=vocabulary
            )
            texts.extend(chosen)
            continue
        if scorer is not None or lexicon is not None:
            texts.extend(
                ctc_beam_search_with_lm(
                    outputs["log_probs"], outputs["frame_length"], vocabulary=vocabulary, scorer=scorer,
                    beam_width=beam_width, lm_weight=lm_weight, char_bonus=lm_bonus, lexicon=lexicon,
                )
            )
            continue
        if beam_width == 1 and "text" in outputs:  # an export's own greedy decoding
            texts.extend(outputs["text"])
            continue
        texts.extend(
            ctc_decode_text(
                outputs["log_probs"],
                outputs["frame_length"],
                vocabulary=vocabulary,
                strategy="beam_search" if beam_width > 1 else "greedy",
                beam_width=beam_width,
            )
        )
    return texts


def _warped_choice(model, vocabulary, batch, lengths, candidates, warps):
    """Closed-vocabulary choices by the mean likelihood over frequency warps of `batch`."""
    from models.transcription_evaluation import closed_vocabulary_texts

    return closed_vocabulary_texts(
        model.predict_on_batch, {"features": batch, "feature_length": lengths}, candidates,
        vocabulary=vocabulary, warps=warps,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="audio files (wav, flac, ...; any sample rate)")
    parser.add_argument(
        "--model-dir", default="runs/transcription",
        help="output directory of a transcription training run (default: runs/transcription), "
             "or an exported version directory such as DIR/export/transcriber/1",
    )
    parser.add_argument(
        "--beam-width", type=int, default=None,
        help="CTC beam width; 1 decodes greedily (default: 1, or 16 with --lm or --lexicon)",
    )
    parser.add_argument(
        "--candidates", default=None,
        help="text file, one allowed transcription per line: print the most likely one "
             "(closed-vocabulary decoding, e.g. digit words or commands)",
    )
    parser.add_argument(
        "--candidate-warps", default=None, metavar="F1,F2,...",
        help="with --candidates: also read each file with the mel axis stretched by each factor "
             "(e.g. 0.92,0.96,1,1.04,1.08) and print the candidate of highest mean likelihood over them",
    )
    parser.add_argument(
        "--lm", default=None, metavar="RUN_DIR",
        help="language-model run (train.py --task language_model on text from data.lm_text): "
             "decode with it fused into CTC prefix beam search",
    )
    parser.add_argument(
        "--lexicon", default=None, metavar="FILE",
        help="word list, or any text (its words): the beam search spells only these words",
    )
    parser.add_argument(
        "--lm-weight", type=float, default=None, help="with --lm: weight of the language model (default: 0.5)"
    )
    parser.add_argument(
        "--lm-bonus", type=float, default=None,
        help="with --lm or --lexicon: score bonus per character of the beam search (default: 0)",
    )
    parser.add_argument(
        "--max-duration-s", type=float, default=None,
        help="refuse files longer than this many seconds (default: no limit)",
    )
    args = parser.parse_args(argv)
    if args.beam_width is not None and args.beam_width < 1:
        parser.error(f"argument --beam-width: expected a positive integer, got {args.beam_width}")
    if args.candidates is not None and (args.beam_width or 1) > 1:
        parser.error("--candidates and --beam-width choose the decoding two ways; give one of them")
    for other in ("lm", "lexicon"):
        if args.candidates is not None and getattr(args, other) is not None:
            parser.error(f"--candidates and --{other} choose the decoding two ways; give one of them")
    candidate_warps = None
    if args.candidate_warps is not None:
        if args.candidates is None:
            parser.error("--candidate-warps averages closed-vocabulary scores over warps; give --candidates too")
        try:
            candidate_warps = check_candidate_warps(
                [float(value) for value in args.candidate_warps.split(",")], args.candidates
            )
        except ValueError:
            parser.error(f"argument --candidate-warps: expected comma-separated distinct factors in "
                         f"[0.5, 1.5] such as 0.92,0.96,1,1.04,1.08, got {args.candidate_warps!r}")
    # Given without the search they tune, they would change nothing: say so rather than ignore them.
    if args.lm_weight is not None and args.lm is None:
        parser.error("--lm-weight weighs the language model of --lm; give --lm too")
    if args.lm_bonus is not None and args.lm is None and args.lexicon is None:
        parser.error("--lm-bonus is a bonus of the beam search with --lm or --lexicon; give one of them too")
    args.lm_weight = 0.5 if args.lm_weight is None else args.lm_weight
    args.lm_bonus = 0.0 if args.lm_bonus is None else args.lm_bonus
    if not 0 <= args.lm_weight < float("inf"):
        parser.error(f"argument --lm-weight: expected a finite number >= 0, got {args.lm_weight}")
    if not math.isfinite(args.lm_bonus):
        parser.error(f"argument --lm-bonus: expected a finite number, got {args.lm_bonus}")
    # NaN compared false with every duration (no limit at all); 0 or less refused every file.
    if args.max_duration_s is not None and not 0 < args.max_duration_s < float("inf"):
        parser.error(f"argument --max-duration-s: expected a finite number of seconds > 0, got {args.max_duration_s}")
    from serving.model_paths import export_base_error, model_dir_error, with_export_hint

    try:
        dir_error = model_dir_error(args.model_dir, "transcription")  # before TensorFlow is imported
        if dir_error is not None:
            raise dir_error
        from training.transcription import MODEL_FILE, load_transcriber  # registers the saved model's classes

        if os.path.isfile(os.path.join(args.model_dir, "saved_model.pb")):
            model = ExportedTranscriber(args.model_dir)
            vocabulary, feature_config = model.vocabulary, model.feature_config
        else:
            base_error = export_base_error(args.model_dir, "transcription", run_files=(MODEL_FILE,))
            if base_error is not None:
                raise base_error
            try:
                model, vocabulary, feature_config = load_transcriber(args.model_dir)
            except FileNotFoundError as error:
                raise with_export_hint(error, args.model_dir, "transcriber") from None
        try:
            check_candidate_warps(candidate_warps, args.candidates, feature_kind=feature_config.kind)
        except ValueError as error:
            parser.error(f"argument --candidate-warps: {args.model_dir}: {error} (got {args.candidate_warps!r})")
        # Checked before any audio is read.
        candidates = None if args.candidates is None else read_candidates_file(args.candidates, vocabulary)
        scorer = None if args.lm is None else load_scorer(args.lm, vocabulary)
        lexicon = None if args.lexicon is None else Lexicon.from_file(args.lexicon, vocabulary)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))

    names, features, failed = [], [], 0
    for path in args.files:
        try:
            features.append(audio_features(path, feature_config, max_duration_s=args.max_duration_s))
            names.append(path)
        except AudioError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
    if features:
        texts = transcribe_features(
            model, vocabulary, features, beam_width=args.beam_width or (16 if scorer or lexicon else 1),
            candidates=candidates, scorer=scorer, lm_weight=args.lm_weight, lm_bonus=args.lm_bonus, lexicon=lexicon,
            candidate_warps=candidate_warps,
        )
        # `transcribe.py ... | head`: no traceback when the reader has what it wanted.
        # A file name that is not UTF-8 is printed as the bytes it was given as.
        sys.stdout.reconfigure(errors="surrogateescape")
        print_lines(f"{name}\t{text}" for name, text in zip(names, texts))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

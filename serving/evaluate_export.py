"""Error rates of an exported transcriber on a dataset split, through the SavedModel alone.

    python -m serving.evaluate_export --export runs/fsdd/export/transcriber/1 \\
        --dataset '../shared/data/fsdd:held_out_speakers=lucas' --split test

The export is loaded with `tf.saved_model.load` and called through its
`serving_default` signature (waveform in, features and greedy decoding in the
graph), exactly as TF Serving would run it; nothing of the training code
touches the audio except the loader, which reads and resamples each file to
the export's sample rate (`assets/metadata.json`). References are normalised
as in training; utterances without a usable transcript (empty, or with
characters outside the export's vocabulary, which the model cannot spell:
each printed to stderr with its file and characters, as training skips
them) or with unreadable audio are skipped and counted by reason
(`skipped_by_reason`; listed with `--verbose`), and so are utterances longer
than the training run's `max_duration_s` (from the export's metadata), which
training skipped too, so the figures are those of the run's metrics.json
for the same split. Prints a JSON report
with corpus-level CER and WER (jiwer) and a few reference/hypothesis pairs;
`--output FILE` also writes it.

`--candidates FILE` (one text per line) also scores closed-vocabulary
decoding: each utterance's transcription is the candidate with the highest
CTC likelihood under the export's `log_probs` output (for isolated words or
fixed phrases, e.g. the ten digit words of FSDD); the report then has a
`closed_vocabulary` section beside the greedy figures.

`--lm RUN_DIR` also decodes with CTC prefix beam search fused with a character
language model (`train.py --task language_model` on text made by
`python -m data.lm_text`; `models.ctc_lm_decoding`). `--lm-weight` and
`--lm-bonus` take one value or a comma-separated list; every combination is
decoded from the same `log_probs` and reported under `language_model`. Choose
the setting on the validation split, then report the test split with it alone.

`--lexicon FILE` (a word list, or any text: its words) constrains that beam
search to texts made of the file's words (`models.ctc_lm_decoding.Lexicon`);
with `--lm` the two combine, without it the section holds plain beam search
over the lexicon's words (reported with weight 0).

`--dataset` takes every spec `train.py` takes (a folder, `FOLDER:held_out_speakers=...`,
`synthetic[:options]`, a prepared TFDS name). For a held-out speaker the
test split is every recording of that speaker (never trained on, never used to
choose the checkpoint).
"""

import argparse
import collections
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def evaluate_export(
    export_dir, dataset, *, split="validation", batch_size=16, cache_dir=None, data_dir=None, limit=0, examples=10,
    candidates=None, lm_run=None, lm_weights=(0.5,), lm_bonuses=(0.0,), lm_beam_width=16, lexicon_file=None,
):
    """Transcribe every utterance of `dataset`'s `split` with the export; return the report dict.

    The report lists the first `examples` wrongly transcribed utterances
    (all of them when `examples` is 0). With `candidates` (texts), it also
    scores closed-vocabulary decoding (`models.ctc_decoding.ctc_choose_text`
    on the export's `log_probs`) under `closed_vocabulary`. With `lm_run`
    (a language-model run directory), it also decodes with every
    `(lm_weights x lm_bonuses)` setting of `ctc_beam_search_with_lm` under
    `language_model`; with `lexicon_file` (a word list or text) that
    search only spells the file's words (plain beam search over them when
    there is no `lm_run`).
    """
    import tensorflow as tf

    from data.speech_sources import resolve_speech_source
    from models.error_rates import error_rates
    from pipelines.speech_dataset import DEFAULT_CACHE_DIR
    from pipelines.vocabulary import Vocabulary

    from serving.export import load_version, read_metadata

    metadata = read_metadata(export_dir, task="transcription")
    vocabulary = Vocabulary.from_config(metadata["vocabulary"])
    sample_rate = int(metadata["sample_rate"])
    min_samples = int(metadata["feature_config"]["n_fft"])  # one FFT frame
    max_duration_s = training_max_duration(metadata)
    source = resolve_speech_source(
        dataset, cache_dir=os.path.abspath(os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR)), data_dir=data_dir
    )
    if split not in source.splits:
        raise ValueError(
            f"Received an invalid value for argument `split`: {dataset!r} has splits "
            f"{sorted(source.splits)}, got {split!r}."
        )
    serve = load_version(export_dir).signatures["serving_default"]
    if candidates is not None:
        from models.candidates import check_candidates
        from models.ctc_decoding import ctc_choose_text

        candidates = check_candidates(candidates, vocabulary=vocabulary)  # before any audio is read
    chosen = []
    scorer = None
    if lm_run is not None:
        from models.ctc_lm_decoding import CharacterLanguageModelScorer

        scorer = CharacterLanguageModelScorer.from_run(lm_run, vocabulary)
    lexicon = None
    if lexicon_file is not None:  # read and checked before any audio is
        from models.ctc_lm_decoding import Lexicon

        lexicon = Lexicon.from_file(lexicon_file, vocabulary)
    searched = scorer is not None or lexicon is not None
    outputs_kept = []  # (log_probs, frame_length) of every utterance, for the language-model grid

    references, hypotheses, keys, speakers, skipped = [], [], [], [], []
    reasons = collections.Counter()  # skipped utterances by reason, named as training names them
    pending = []  # (key, reference, waveform, speaker)

    def flush():
        width = max(len(w) for _, _, w, _ in pending)
        batch = np.zeros((len(pending), width), np.float32)
        for row, (_, _, waveform, _) in enumerate(pending):
            batch[row, : len(waveform)] = waveform
        lengths = np.array([len(w) for _, _, w, _ in pending], np.int32)
        outputs = serve(waveform=tf.constant(batch), waveform_length=tf.constant(lengths))
        texts = [text.decode("utf-8") for text in outputs["text"].numpy()]
        if searched:
            log_probs, frame_length = outputs["log_probs"].numpy(), outputs["frame_length"].numpy()
            outputs_kept.extend((log_probs[row, : frame_length[row]], frame_length[row]) for row in range(len(pending)))
        if candidates is not None:
            chosen.extend(
                ctc_choose_text(outputs["log_probs"], outputs["frame_length"], candidates, vocabulary=vocabulary)[0]
            )
        for (key, reference, _, speaker), text in zip(pending, texts):
            keys.append(key)
            speakers.append(speaker)
            references.append(reference)
            hypotheses.append(text)
        pending.clear()

    started = time.monotonic()
    audio_seconds = 0.0
    usable = usable_utterances(
        source.splits[split](), vocabulary=vocabulary, sample_rate=sample_rate, max_duration_s=max_duration_s,
        min_samples=min_samples, skipped=skipped, reasons=reasons,
    )
    for utterance, reference, waveform in usable:
        audio_seconds += len(waveform) / sample_rate
        pending.append((utterance.source, reference, waveform, utterance.speaker))
        if len(pending) == batch_size:
            flush()
        if limit and len(keys) + len(pending) >= limit:
            break  # before the next utterance is read
    if pending:
        flush()
    if not references:
        raise ValueError(f"No usable utterance in split {split!r} of {dataset!r} ({len(skipped)} skipped).")

    def scored(decoded):
        """CER, WER, sentence accuracy and wrong examples of one decoding of the utterances."""
        decoded_rates = error_rates(references, decoded)
        decoded_wrong = [(k, r, h) for k, r, h in zip(keys, references, decoded) if r != h]
        return {
            "cer": decoded_rates["cer"],
            "wer": decoded_rates["wer"],
            "sentence_accuracy": 1.0 - len(decoded_wrong) / len(references),
            "examples": [
                {"file": k, "reference": r, "hypothesis": h}
                for k, r, h in (decoded_wrong[:examples] if examples else decoded_wrong)
            ],
        }

    greedy = scored(hypotheses)
    by_speaker = {}
    for speaker in sorted(set(speakers)):
        rows = [i for i, s in enumerate(speakers) if s == speaker]
        speaker_rates = error_rates([references[i] for i in rows], [hypotheses[i] for i in rows])
        by_speaker[speaker or "(unknown)"] = {"utterances": len(rows), **speaker_rates}
    report = {
        "export": os.path.abspath(export_dir),
        "dataset": dataset,
        "description": source.description,
        "split": split,
        "utterances": len(references),
        "audio_seconds": round(audio_seconds, 1),
        "max_duration_s": max_duration_s,
        "skipped": len(skipped),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "skipped_files": [[str(s), r] for s, r in skipped],
        "cer": greedy["cer"],
        "wer": greedy["wer"],
        "sentence_accuracy": greedy["sentence_accuracy"],
        "by_speaker": by_speaker,
        "seconds": round(time.monotonic() - started, 1),
        "examples": greedy["examples"],
    }
    if candidates is not None:
        report["closed_vocabulary"] = {
            "candidates": len(candidates),
            "references_not_among_candidates": sum(reference not in candidates for reference in references),
            **scored(chosen),
        }
    if searched:
        from models.ctc_lm_decoding import ctc_beam_search_with_lm

        settings = []
        for weight in lm_weights if scorer is not None else (0.0,):
            for bonus in lm_bonuses:
                decoded = [
                    ctc_beam_search_with_lm(
                        log_probs[None], [length], vocabulary=vocabulary, scorer=scorer,
                        beam_width=lm_beam_width, lm_weight=weight, char_bonus=bonus, lexicon=lexicon,
                    )[0]
                    for log_probs, length in outputs_kept
                ]
                settings.append({"lm_weight": weight, "char_bonus": bonus, **scored(decoded)})
        report["language_model"] = {
            "run": None if lm_run is None else os.path.abspath(lm_run),
            "lexicon": None if lexicon is None else {"file": os.path.abspath(lexicon_file), "words": len(lexicon)},
            "beam_width": lm_beam_width,
            "settings": settings,
        }
    return report


def usable_utterances(utterances, *, vocabulary, sample_rate, max_duration_s, min_samples, skipped, reasons,
                      program="evaluate_export"):
    """`(utterance, transcript, waveform)` for each utterance a model can be scored on.

    Transcripts are normalised as in training. Utterances with an empty
    transcript, with characters outside `vocabulary` (the model cannot
    spell them; printed to stderr with the file and the characters, as
    `program`'s), or whose audio cannot be used (`AudioError`: unreadable,
    silent, shorter than `min_samples`, longer than `max_duration_s`) are
    passed over: `(file, detail)` appended to `skipped` and their reason,
    named as training names it, counted in `reasons` (a Counter).
    Lazy: an utterance is read when the next one is asked for.
    """
    from pipelines.audio_loading import AudioError
    from pipelines.speech_dataset import EMPTY_TRANSCRIPT, OUT_OF_VOCABULARY, utterance_waveform
    from pipelines.vocabulary import normalize_transcript

    for utterance in utterances:
        reference = normalize_transcript(utterance.text or "")
        if not reference:
            skipped.append((utterance.source, "empty transcript"))
            reasons[EMPTY_TRANSCRIPT] += 1
            continue
        unknown = vocabulary.unknown_characters(reference)
        if unknown:  # the model cannot spell it: its errors would be charged to the model
            detail = (f"{OUT_OF_VOCABULARY}: transcript {reference!r} has characters {''.join(unknown)!r} "
                      "outside the vocabulary")
            print(f"{program}: skipping {utterance.source}: {detail}", file=sys.stderr)
            skipped.append((utterance.source, detail))
            reasons[OUT_OF_VOCABULARY] += 1
            continue
        try:
            waveform = utterance_waveform(utterance, sample_rate, max_duration_s=max_duration_s,
                                          min_samples=min_samples)
        except AudioError as error:
            skipped.append((utterance.source, str(error)))
            reasons[error.reason] += 1
            continue
        yield utterance, reference, waveform


def training_config(metadata):
    """The training configuration dict an export's metadata records (`{}` when none).

    An ensemble packed by `serving.export_run` records its members'; the
    first member's is returned (they share features, frame stacking and
    limits).
    """
    config = metadata.get("config") or {}
    members = config.get("members")
    if isinstance(members, list) and members and isinstance(members[0], dict):
        config = members[0]
    return config


def training_max_duration(metadata):
    """The `max_duration_s` the export's training run skipped longer utterances by, or None.

    Read from the metadata's `config` (`training_config`); None when it
    records none.
    """
    value = training_config(metadata).get("max_duration_s")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return None
    return float(value)


def _numbers(text):
    """The floats of a comma-separated list (argparse type)."""
    try:
        values = tuple(float(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {text!r}") from None
    return values


def _version_hint(path):
    """Where the version directory is when `path` is a run's directory (an ensemble's
    or a tuning run's too) or a base directory of versions: "; use --export V", or ""."""
    from serving.model_paths import newest_export, version_directories

    if not os.path.isdir(path):
        return ""
    versions = version_directories(path)
    newest = versions[max(versions)] if versions else newest_export(path, "transcriber")
    return "" if newest is None else f"; use --export {newest}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", required=True, help="A version directory, e.g. runs/x/export/transcriber/1.")
    parser.add_argument("--dataset", required=True, help="A dataset spec, as train.py's --dataset.")
    parser.add_argument("--split", default="validation", help="train, validation or test (default: validation).")
    parser.add_argument("--batch-size", type=int, default=16, help="Utterances per call (default: 16).")
    parser.add_argument("--cache-dir", default=None, help="As train.py's --cache-dir.")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory for catalog names.")
    parser.add_argument("--limit", type=int, default=0, help="Evaluate at most this many utterances (0: all).")
    parser.add_argument("--examples", type=int, default=10, help="Wrong transcriptions listed (0: all; default 10).")
    parser.add_argument("--candidates", default=None,
                        help="A text file, one allowed transcription per line: also score closed-vocabulary "
                             "decoding (the most likely candidate by CTC).")
    parser.add_argument("--lm", default=None, metavar="RUN_DIR",
                        help="A language-model run (train.py --task language_model): also decode with it fused "
                             "into CTC prefix beam search.")
    parser.add_argument("--lm-weight", type=_numbers, default=(0.5,),
                        help="Weight(s) of the language model's log-probability, e.g. 0.3,0.5 (default: 0.5).")
    parser.add_argument("--lm-bonus", type=_numbers, default=(0.0,),
                        help="Score bonus(es) per character, e.g. 0,1 (default: 0).")
    parser.add_argument("--lexicon", default=None, metavar="FILE",
                        help="A word list, or any text (its words): also decode with a prefix beam search that "
                             "spells only these words (with --lm, fused with the language model).")
    parser.add_argument("--lm-beam-width", type=int, default=16,
                        help="Beams of the --lm / --lexicon search (default: 16).")
    parser.add_argument("--output", default=None, help="Also write the JSON report here.")
    parser.add_argument("--verbose", action="store_true", help="Also list skipped files.")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be a positive integer, got {args.batch_size}.")
    if args.examples < 0:
        parser.error(f"--examples must be 0 (all) or a positive integer, got {args.examples}.")
    if args.lm_beam_width < 1:
        parser.error(f"--lm-beam-width must be a positive integer, got {args.lm_beam_width}.")
    if any(not (0 <= w < float("inf")) for w in args.lm_weight):
        parser.error(f"--lm-weight must be finite numbers >= 0, got {','.join(map(str, args.lm_weight))}.")
    if any(not math.isfinite(b) for b in args.lm_bonus):
        parser.error(f"--lm-bonus must be finite numbers, got {','.join(map(str, args.lm_bonus))}.")
    if args.limit < 0:
        parser.error(f"--limit must be 0 (all) or a positive integer, got {args.limit}.")
    if not os.path.isfile(os.path.join(args.export, "saved_model.pb")):
        parser.error(f"--export {args.export!r} is not a SavedModel version directory (no saved_model.pb)"
                     + _version_hint(args.export) + ".")
    if args.output is not None:
        from training.cli import output_file_error

        error = output_file_error(args.output)  # before the evaluation, not after it
        if error is not None:
            parser.error(error)
    candidates = None
    if args.candidates is not None:
        from models.candidates import read_candidates_file
        from pipelines.vocabulary import Vocabulary
        from serving.export import read_metadata

        try:
            # Checked against the export's vocabulary before any audio is read.
            vocabulary = Vocabulary.from_config(read_metadata(args.export, task="transcription")["vocabulary"])
            candidates = read_candidates_file(args.candidates, vocabulary)
        except (ValueError, OSError) as error:
            parser.error(str(error))
    try:
        report = evaluate_export(
            args.export, args.dataset, split=args.split, batch_size=args.batch_size,
            cache_dir=args.cache_dir, data_dir=args.data_dir, limit=args.limit,
            examples=args.examples, candidates=candidates, lm_run=args.lm, lm_weights=args.lm_weight,
            lm_bonuses=args.lm_bonus, lm_beam_width=args.lm_beam_width, lexicon_file=args.lexicon,
        )
    except (ValueError, OSError) as error:
        print(f"evaluate_export: error: {error}", file=sys.stderr)
        return 2
    if not args.verbose:
        report = dict(report, skipped_files=report["skipped_files"][:5])
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        from training.cli import write_text

        try:
            write_text(args.output, text + "\n")
        except OSError as error:
            print(f"evaluate_export: error: --output {args.output}: {error.strerror or error} "
                  "(the report is printed above).", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Word-spliced speech: new utterances cut between words from a corpus's training recordings.

    python -m data.word_splice --export runs/asterisk/export/transcriber/1 \\
        --dataset '../shared/data/asterisk_en:test_fraction=0.1' --output-dir runs/asterisk_spliced
    python train.py --task transcription --dataset '../shared/data/asterisk_en:test_fraction=0.1' \\
        --mix-dataset runs/asterisk_spliced --mix-fraction 0.5 ...

A model trained on a few hundred prompts learns them as wholes: it reads
its own training words poorly once they come in another order. This command
makes training utterances that hold the same words in new orders, from the
same recordings:

1. A trained transcriber (`--export`, a version directory of
   `serving.export`, usually a run on the same `--dataset`) reads every
   recording of the dataset's training split. CTC forced alignment of the
   transcript through its `log_probs` (`models.ctc_alignment`) gives each
   word's first and last frame; each recording is cut halfway between the
   end of one word and the start of the next. Recordings whose greedy
   transcription is further than `--max-cer` from the transcript are left
   out (the model does not hear their words where the transcript has them),
   and so are recordings training would skip (empty transcripts, characters
   outside the export's vocabulary, unreadable audio, longer than the run's
   `max_duration_s`): each is counted by reason.
2. Each new utterance joins pieces of one to `--max-words` consecutive words
   of random recordings until it holds a number of words drawn uniformly
   from `--words-per-utterance` (default 3-8), or, with
   `--words-per-utterance corpus`, as many as a random training transcript
   (lengths as the corpus's). On asterisk_en, 3-8 (5.5 words, 3.2 s on
   average) gave 39.3% test CER over three seeds where the corpus's lengths
   (3.9 words, 2.3 s) gave 42.6% (README, "asterisk_en").
   Piece edges cut inside a recording fade in and out over `--fade-ms`.
3. `--output-dir` gets `wavs/` (16-bit PCM at the export's sample rate),
   `manifest.tsv` (`path`, `text`, `speaker`, `split`, and `pieces`: each
   piece's source and seconds), `alignments.tsv` (every recording used:
   transcript, the export's greedy text and its CER, each word's seconds;
   for checking the cuts by ear) and `splice.json` (the settings and counts).
   The folder is a `--dataset`/`--mix-dataset` spec as any manifest folder.

Only the training split is read: validation and test recordings (a held-out
speaker's too) are never cut, so a model trained with the folder mixed in is
evaluated on them as before. `--count` utterances are marked `train`; the
`--validation-count` more, spliced the same way from the same recordings,
are marked `validation` (a folder needs one to be a dataset): they measure
how a model reads training words in new orders, not new prompts.

The aligned recordings are held in memory (float32; about 230 MB an hour
at 16 kHz): for a large corpus, `--max-recordings` takes that many from the
split's start.
"""

import argparse
import collections
import dataclasses
import itertools
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

PROGRAM = "word_splice"


@dataclasses.dataclass(frozen=True)
class AlignedRecording:
    """A recording cut between its words.

    Args:
        source: The file (or dataset key) it came from.
        speaker: Its speaker, `""` when unknown.
        words: Its transcript's words.
        waveform: float32 `(samples,)` at the export's sample rate.
        cuts: `len(words) + 1` sample offsets, strictly increasing: word `k` is
            `waveform[cuts[k]:cuts[k + 1]]`; the first is 0 and the last
            the waveform's length.
    """

    source: str
    speaker: str
    words: tuple
    waveform: np.ndarray
    cuts: tuple


@dataclasses.dataclass(frozen=True)
class SplicedUtterance:
    """One made utterance: `waveform`, its `text`, `speaker`, `split` and `pieces`
    (`(source, start_sample, end_sample)` of each piece, in order)."""

    waveform: np.ndarray
    text: str
    speaker: str
    split: str
    pieces: tuple


def word_cuts(word_spans, *, num_samples, first_frame, frame_stack, hop_length, n_fft):
    """Sample offsets that cut a recording between its words.

    Output frame `j` of a model that stacks `frame_stack` feature frames
    reads feature frames `j * frame_stack` onwards, and feature frame `i`
    (after `first_frame` trimmed ones) the `n_fft` samples from
    `(first_frame + i) * hop_length`; the boundary between output frames
    `j - 1` and `j` is taken halfway between their windows' centres,
    `(first_frame + j * frame_stack) * hop_length + (n_fft - hop_length) / 2`.
    Between two words the cut is halfway between the last frame of the
    first and the first frame of the second.

    Args:
        word_spans: `(first_frame, last_frame)` of each word in order
            (`models.ctc_alignment.word_frames`).
        num_samples: The recording's length.
        first_frame, frame_stack, hop_length, n_fft: As above.

    Returns:
        A tuple of `len(word_spans) + 1` non-decreasing offsets, 0 first and
        `num_samples` last.
    """
    cuts = [0]
    for (_, last), (first, _) in zip(word_spans, word_spans[1:]):
        boundary = (last + 1 + first) / 2  # in output frames
        sample = (first_frame + boundary * frame_stack) * hop_length + (n_fft - hop_length) / 2
        cuts.append(int(min(max(round(sample), cuts[-1]), num_samples)))
    cuts.append(num_samples)
    return tuple(cuts)


def splice_utterances(recordings, *, count, split="train", max_words=3, seed=0, word_counts=None,
                      max_samples=None, fade_samples=0):
    """`count` new utterances joined from pieces of `recordings`.

    Args:
        recordings: Non-empty sequence of `AlignedRecording`s.
        count: How many utterances to make.
        split: The split they are marked with.
        max_words: Most consecutive words in one piece.
        seed: Seed of the draws (the same arguments give the same utterances).
        word_counts: Words per utterance to draw from (default: the
            recordings' own counts).
        max_samples: No utterance grows past this many samples (its first
            piece excepted); None: no limit.
        fade_samples: Raised-cosine fade-in and fade-out of this length at
            every piece edge cut inside a recording (none at a recording's
            own start and end).

    Returns:
        A list of `SplicedUtterance`s.
    """
    if not recordings:
        raise ValueError("Received an invalid value for argument `recordings`, expected at least one "
                         "aligned recording, got none.")
    if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
        raise ValueError(f"Received an invalid value for argument `max_words`, expected a positive integer, "
                         f"got {max_words!r}.")
    rng = np.random.default_rng(seed)
    word_counts = np.asarray(word_counts if word_counts is not None else [len(r.words) for r in recordings])
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade_samples) + 0.5) / fade_samples) if fade_samples else None
    made = []
    for _ in range(count):
        target = int(rng.choice(word_counts))
        words, parts, pieces, length = [], [], [], 0
        while len(words) < target:
            recording = recordings[int(rng.integers(len(recordings)))]
            span = int(rng.integers(1, min(max_words, target - len(words), len(recording.words)) + 1))
            start = int(rng.integers(0, len(recording.words) - span + 1))
            begin, end = recording.cuts[start], recording.cuts[start + span]
            if parts and max_samples is not None and length + end - begin > max_samples:
                break
            piece = np.array(recording.waveform[begin:end], np.float32)
            if ramp is not None:
                edge = min(fade_samples, len(piece) // 2)
                if start > 0:
                    piece[:edge] *= ramp[:edge]
                if start + span < len(recording.words):
                    piece[len(piece) - edge:] *= ramp[:edge][::-1]
            parts.append(piece)
            pieces.append((recording.source, begin, end, recording.speaker))
            words.extend(recording.words[start : start + span])
            length += len(piece)
        speakers = sorted({speaker for *_, speaker in pieces if speaker})
        made.append(SplicedUtterance(
            waveform=np.concatenate(parts), text=" ".join(words), speaker="+".join(speakers), split=split,
            pieces=tuple((source, begin, end) for source, begin, end, _ in pieces),
        ))
    return made


def align_recordings(usable, transcribe, *, vocabulary, feature_config, frame_stack=None, max_cer=0.5,
                     batch_size=16):
    """Cut recordings between their words with a transcriber's forced alignment.

    Args:
        usable: Iterable of `(utterance, transcript, waveform)`
            (`serving.evaluate_export.usable_utterances`).
        transcribe: `(waveform (batch, samples) float32, waveform_length
            (batch,) int32) -> (log_probs (batch, frames, classes),
            frame_length (batch,), texts)`, e.g. an export's
            `serving_default`.
        vocabulary: The transcriber's `Vocabulary`.
        feature_config: Its `FeatureConfig` (framing and trimming).
        frame_stack: Feature frames per output frame; None: read off the
            longest utterance of the first call. Checked on every utterance.
        max_cer: Recordings whose greedy text has a higher CER against the
            transcript are left out.
        batch_size: Recordings per `transcribe` call.

    Returns:
        `(recordings, rows, reasons)`: the `AlignedRecording`s, one dict
        per recording read for `alignments.tsv` (with `used`), and a
        `collections.Counter` of the recordings left out by reason.
    """
    from models.ctc_alignment import ctc_forced_alignment, word_frames
    from models.error_rates import error_rates
    from pipelines.audio_features import kept_frame_range

    space_id = vocabulary.encode(" ")[0]
    recordings, rows, reasons = [], [], collections.Counter()
    pending = []
    stack = frame_stack

    def flush():
        nonlocal stack
        width = max(len(w) for _, _, w in pending)
        batch = np.zeros((len(pending), width), np.float32)
        for row, (_, _, waveform) in enumerate(pending):
            batch[row, : len(waveform)] = waveform
        lengths = np.array([len(w) for _, _, w in pending], np.int32)
        log_probs, frame_length, texts = transcribe(batch, lengths)
        kept = [kept_frame_range(waveform, feature_config) for _, _, waveform in pending]
        if stack is None:  # ceil(F / T) is the stacking when T >= it: read off the longest utterance
            longest = int(np.argmax(lengths))
            stack = max(1, -(-(kept[longest][1] - kept[longest][0] + 1) // max(int(frame_length[longest]), 1)))
        for row, (utterance, transcript, waveform) in enumerate(pending):
            frames = int(frame_length[row])
            first, last = kept[row]
            feature_frames = last - first + 1
            if -(-feature_frames // stack) != frames:
                raise ValueError(
                    f"{utterance.source}: {feature_frames} feature frames gave {frames} output frames, expected "
                    f"ceil({feature_frames} / {stack}) (frame stacking by {stack}); "
                    "expected a transcriber whose outputs follow its features frame by frame."
                )
            cer = error_rates([transcript], [texts[row]])["cer"]
            row_info = {"path": utterance.source, "text": transcript, "hypothesis": texts[row],
                        "cer": cer, "words": "", "used": False}
            rows.append(row_info)
            if cer > max_cer:
                reasons["transcribed_with_cer_over_max_cer"] += 1
                continue
            labels = vocabulary.encode(transcript)
            positions, _ = ctc_forced_alignment(log_probs[row, :frames], labels, blank_id=vocabulary.blank_id)
            if positions is None:
                reasons["too_short_to_align"] += 1
                continue
            words = tuple(transcript.split())
            cuts = word_cuts(word_frames(positions, labels, space_id=space_id), num_samples=len(waveform),
                             first_frame=first, frame_stack=stack, hop_length=feature_config.hop_length,
                             n_fft=feature_config.n_fft)
            if any(end <= begin for begin, end in zip(cuts, cuts[1:])):
                reasons["a_word_without_samples"] += 1  # its last words aligned past the audio's end
                continue
            rate = feature_config.sample_rate
            row_info["words"] = " ".join(
                f"{word}@{cuts[k] / rate:.3f}-{cuts[k + 1] / rate:.3f}" for k, word in enumerate(words)
            )
            row_info["used"] = True
            recordings.append(AlignedRecording(utterance.source, utterance.speaker or "", words, waveform, cuts))
        pending.clear()

    for item in usable:
        pending.append(item)
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return recordings, rows, reasons


def write_folder(output_dir, utterances, rows, summary, *, sample_rate, overwrite=False):
    """Write the spliced folder (wavs/, manifest.tsv, alignments.tsv, splice.json).

    Written in a staging directory beside `output_dir` and renamed into
    place: a failure leaves no half-written folder, and an existing
    `output_dir` is replaced only with `overwrite`, after the new one is
    complete.
    """
    import soundfile as sf

    occupied = _occupied_error(output_dir, overwrite)
    if occupied is not None:
        raise ValueError(occupied)
    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.", suffix=".tmp", dir=parent)
    try:
        os.makedirs(os.path.join(staging, "wavs"))
        lines = ["path\ttext\tspeaker\tsplit\tpieces"]
        index = collections.Counter()
        for utterance in utterances:
            name = f"wavs/{utterance.split}_{index[utterance.split]:05d}.wav"
            index[utterance.split] += 1
            sf.write(os.path.join(staging, name), np.clip(utterance.waveform, -1.0, 1.0), sample_rate,
                     subtype="PCM_16", format="WAV")
            pieces = "; ".join(f"{_cell(source)}@{begin / sample_rate:.3f}-{end / sample_rate:.3f}"
                               for source, begin, end in utterance.pieces)
            lines.append("\t".join([name, utterance.text, _cell(utterance.speaker), utterance.split, pieces]))
        with open(os.path.join(staging, "manifest.tsv"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(staging, "alignments.tsv"), "w", encoding="utf-8") as f:
            f.write("path\ttext\thypothesis\tcer\tused\twords\n")
            for row in rows:
                f.write("\t".join([_cell(row["path"]), row["text"], _cell(row["hypothesis"]), f"{row['cer']:.4f}",
                                   "yes" if row["used"] else "no", row["words"]]) + "\n")
        with open(os.path.join(staging, "splice.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(staging, 0o777 & ~_umask())  # not mkdtemp's 0o700
        if os.path.exists(output_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.", suffix=".old", dir=parent)
            os.replace(output_dir, os.path.join(old, "folder"))
            os.replace(staging, output_dir)
            shutil.rmtree(old)
        else:
            os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def _occupied_error(output_dir, overwrite):
    """Why `output_dir` may not be written (it holds something, and not `overwrite`), or None."""
    if overwrite or not os.path.exists(output_dir) or (os.path.isdir(output_dir) and not os.listdir(output_dir)):
        return None
    return (f"--output-dir {output_dir} exists and is not empty; nothing was written: give --overwrite to "
            "replace it, or another --output-dir.")


def _cell(text):
    """`text` as one TSV cell: tabs and line breaks become spaces."""
    return " ".join(str(text).replace("\t", " ").splitlines())


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def word_splice(export_dir, dataset, output_dir, *, count=2000, validation_count=50, max_words=3, seed=1234,
                words_per_utterance=(3, 8), max_cer=0.5, fade_ms=5.0, max_recordings=0, batch_size=16,
                cache_dir=None, data_dir=None, overwrite=False):
    """Align `dataset`'s training split with the export and write the spliced folder; return its summary.

    `words_per_utterance`: `(least, most)` words of each made utterance,
    drawn uniformly; None: as many as a random aligned recording has.
    """
    import tensorflow as tf

    from data.speech_sources import resolve_speech_source
    from pipelines.audio_features import FeatureConfig
    from pipelines.speech_dataset import DEFAULT_CACHE_DIR
    from pipelines.vocabulary import Vocabulary
    from serving.evaluate_export import training_config, training_max_duration, usable_utterances
    from serving.export import load_version, read_metadata

    metadata = read_metadata(export_dir, task="transcription")
    vocabulary = Vocabulary.from_config(metadata["vocabulary"])
    feature_config = FeatureConfig.from_dict(metadata["feature_config"])
    sample_rate = feature_config.sample_rate
    max_duration_s = training_max_duration(metadata)
    frame_stack = training_config(metadata).get("frame_stack")
    if isinstance(frame_stack, bool) or not isinstance(frame_stack, int) or frame_stack < 1:
        frame_stack = None  # not recorded: read off the outputs
    source = resolve_speech_source(
        dataset, cache_dir=os.path.abspath(os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR)), data_dir=data_dir
    )
    serve = load_version(export_dir).signatures["serving_default"]

    def transcribe(waveform, waveform_length):
        outputs = serve(waveform=tf.constant(waveform), waveform_length=tf.constant(waveform_length))
        texts = [text.decode("utf-8") for text in outputs["text"].numpy()]
        return outputs["log_probs"].numpy(), outputs["frame_length"].numpy(), texts

    skipped, reasons = [], collections.Counter()
    usable = usable_utterances(
        source.splits["train"](), vocabulary=vocabulary, sample_rate=sample_rate, max_duration_s=max_duration_s,
        min_samples=feature_config.n_fft, skipped=skipped, reasons=reasons, program=PROGRAM,
    )
    if max_recordings:
        usable = itertools.islice(usable, max_recordings)
    recordings, rows, left_out = align_recordings(
        usable, transcribe, vocabulary=vocabulary, feature_config=feature_config, frame_stack=frame_stack,
        max_cer=max_cer, batch_size=batch_size,
    )
    reasons.update(left_out)
    if not recordings:
        raise ValueError(
            f"No recording of the training split of {dataset!r} could be cut ({len(rows)} transcribed, "
            f"{sum(reasons.values())} left out: {dict(sorted(reasons.items())) or 'none'}); expected a "
            f"transcriber trained on speech like this data (--export {export_dir})."
        )
    max_samples = int(max_duration_s * sample_rate) if max_duration_s else None
    fade_samples = int(round(fade_ms * sample_rate / 1000))
    word_counts = [len(r.words) for r in recordings]
    if words_per_utterance is not None:
        least, most = words_per_utterance
        word_counts = list(range(least, most + 1))
    utterances = splice_utterances(recordings, count=count, max_words=max_words, seed=seed,
                                   word_counts=word_counts, max_samples=max_samples, fade_samples=fade_samples)
    if validation_count:  # the command asks for one at least: a folder needs a validation split
        utterances += splice_utterances(recordings, count=validation_count, split="validation",
                                        max_words=max_words, seed=[seed, 1], word_counts=word_counts,
                                        max_samples=max_samples, fade_samples=fade_samples)
    minutes = collections.Counter()
    for utterance in utterances:
        minutes[utterance.split] += len(utterance.waveform) / sample_rate / 60
    summary = {
        "export": os.path.abspath(export_dir),
        "dataset": dataset,
        "description": source.description,
        "split_read": "train",
        "count": count,
        "validation_count": validation_count,
        "max_words": max_words,
        "seed": seed,
        "max_cer": max_cer,
        "fade_ms": fade_ms,
        "max_recordings": max_recordings,
        "sample_rate": sample_rate,
        "recordings_read": len(rows) + len(skipped),
        "recordings_used": len(recordings),
        "recordings_left_out": sum(reasons.values()),
        "left_out_by_reason": dict(sorted(reasons.items())),
        "words_per_utterance": None if words_per_utterance is None else list(words_per_utterance),
        "words_used": sum(len(r.words) for r in recordings),
        "distinct_words": len({word for r in recordings for word in r.words}),
        "aligner_cer_on_used": float(np.mean([row["cer"] for row in rows if row["used"]])),
        "minutes": {split: round(value, 2) for split, value in sorted(minutes.items())},
    }
    write_folder(output_dir, utterances, rows, summary, sample_rate=sample_rate, overwrite=overwrite)
    return summary


def _word_range(text):
    """`(least, most)` of "MIN-MAX" or "N", None for "corpus" (argparse type)."""
    if text.strip() == "corpus":
        return None
    least, dash, most = text.partition("-")
    try:
        least, most = int(least), int(most if dash else least)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected MIN-MAX or N, positive integers, or 'corpus', got {text!r}") from None
    if not 1 <= least <= most:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX with 1 <= MIN <= MAX, got {text!r}")
    return least, most


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", required=True,
                        help="A transcriber's version directory, e.g. runs/x/export/transcriber/1.")
    parser.add_argument("--dataset", required=True, help="A dataset spec, as train.py's --dataset; its training "
                                                         "split is read.")
    parser.add_argument("--output-dir", required=True, help="The folder to write (a manifest folder).")
    parser.add_argument("--count", type=int, default=2000, help="Training utterances to make (default: 2000).")
    parser.add_argument("--validation-count", type=int, default=50,
                        help="Validation utterances to make besides, from the same recordings (at least 1: a "
                             "dataset needs a validation split; default: 50).")
    parser.add_argument("--max-words", type=int, default=3,
                        help="Most consecutive words of a recording in one piece (default: 3).")
    parser.add_argument("--words-per-utterance", type=_word_range, default=(3, 8), metavar="MIN-MAX",
                        help="Words of each made utterance, drawn uniformly from MIN to MAX (default: 3-8); "
                             "'corpus': as many as a random training recording has.")
    parser.add_argument("--seed", type=int, default=1234, help="Seed of the draws (default: 1234).")
    parser.add_argument("--max-cer", type=float, default=0.5,
                        help="Leave out recordings the export transcribes with a higher CER (default: 0.5).")
    parser.add_argument("--fade-ms", type=float, default=5.0,
                        help="Fade at piece edges cut inside a recording, in milliseconds (default: 5).")
    parser.add_argument("--max-recordings", type=int, default=0,
                        help="Align at most this many recordings of the split (0: all).")
    parser.add_argument("--batch-size", type=int, default=16, help="Recordings per export call (default: 16).")
    parser.add_argument("--cache-dir", default=None, help="As train.py's --cache-dir.")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory for catalog names.")
    parser.add_argument("--overwrite", action="store_true", help="Replace a non-empty --output-dir.")
    args = parser.parse_args(argv)
    for name in ("count", "max_words", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}.")
    if args.validation_count < 1:
        parser.error(f"--validation-count must be a positive integer (a folder without a validation split is not "
                     f"a dataset --mix-dataset can read), got {args.validation_count}.")
    if args.max_recordings < 0:
        parser.error(f"--max-recordings must be 0 (all) or a positive integer, got {args.max_recordings}.")
    if not 0 <= args.max_cer < float("inf"):
        parser.error(f"--max-cer must be a number >= 0, got {args.max_cer}.")
    if not 0 <= args.fade_ms <= 100:
        parser.error(f"--fade-ms must be between 0 and 100 milliseconds, got {args.fade_ms}.")
    if not os.path.isfile(os.path.join(args.export, "saved_model.pb")):
        from serving.evaluate_export import _version_hint

        parser.error(f"--export {args.export!r} is not a SavedModel version directory (no saved_model.pb)"
                     + _version_hint(args.export) + ".")
    from training.cli import output_dir_error

    error = output_dir_error(args.output_dir, what="spliced folder") or _occupied_error(
        args.output_dir, args.overwrite)
    if error is not None:
        parser.error(error)
    try:
        summary = word_splice(
            args.export, args.dataset, args.output_dir, count=args.count, validation_count=args.validation_count,
            max_words=args.max_words, seed=args.seed, words_per_utterance=args.words_per_utterance,
            max_cer=args.max_cer, fade_ms=args.fade_ms,
            max_recordings=args.max_recordings, batch_size=args.batch_size, cache_dir=args.cache_dir,
            data_dir=args.data_dir, overwrite=args.overwrite,
        )
    except (ValueError, OSError) as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, sort_keys=True))
    print(f"Next: python train.py --task transcription --dataset '{args.dataset}' --mix-dataset "
          f"{args.output_dir} --mix-fraction 0.5 ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())

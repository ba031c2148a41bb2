"""Text for a language model that scores transcriptions: one normalised sentence per line.

    python -m data.lm_text ../shared/data/ljspeech_text/metadata.csv runs/ljspeech_lm.txt --format ljspeech
    python train.py --task language_model --dataset runs/ljspeech_lm.txt --output-dir runs/lm_ljspeech

Each line (for `--format ljspeech`, the normalised third field of
`id|raw|normalized`) is normalised as transcripts are (lowercase a-z,
apostrophe, single spaces; `pipelines.vocabulary.normalize_transcript`).
Lines that still hold digits (no single spelling), other characters outside
the transcription alphabet (letters without a-z spelling: ß, æ, ø, ł, Greek...)
or nothing are dropped and counted.

`--transcripts SPEC` also mixes in the transcripts of the TRAINING split of a
speech dataset (any `train.py --dataset` spec), so the language model knows
the task's own words ("press the pound key") without ever reading a
validation or test transcript; `--transcript-repeats N` weighs them N times.
They are spread evenly through the text, so the language model's 90/10
character split gets its share of both.

    python -m data.lm_text ../shared/data/ljspeech_text/metadata.csv runs/lm_asterisk.txt --format ljspeech \
        --transcripts '../shared/data/asterisk_en:test_fraction=0.1' --transcript-repeats 5

The output is written whole or not at all (through a temporary file beside
it); an output that is the input file, a directory, or inside a
`--transcripts` dataset folder is refused before anything is read.

The language model trained on the output knows the transcription alphabet and
reads a line break as the end of a sentence, which is what
`models.ctc_lm_decoding` expects.
"""

import argparse
import io
import os
import sys

FORMATS = ("lines", "ljspeech")


def normalised_lines(lines, *, fmt="lines", source="input"):
    """`(sentences, dropped)`: the normalised non-empty lines and how many were dropped
    (empty, or holding a character outside `SPEECH_ALPHABET`: a digit, ß, æ, ...)."""
    from pipelines.vocabulary import SPEECH_ALPHABET, normalize_transcript

    if fmt not in FORMATS:
        raise ValueError(f"Received an invalid value for argument `fmt`, expected one of {FORMATS}, got {fmt!r}.")
    sentences, dropped = [], 0
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if fmt == "ljspeech":
            fields = line.split("|")
            if len(fields) != 3:
                raise ValueError(
                    f"{source}, line {number}: expected LJSpeech metadata 'id|raw|normalized' (3 fields "
                    f"separated by '|'), got {len(fields)} field(s)."
                )
            line = fields[2]
        text = normalize_transcript(line)
        if not text or any(c not in SPEECH_ALPHABET for c in text):  # digits, ß, æ, ...
            dropped += 1
            continue
        sentences.append(text)
    return sentences, dropped


def training_transcripts(spec, *, cache_dir=None):
    """The transcripts of the training split of dataset `spec`, in order, kept and
    normalised as `normalised_lines` keeps and normalises lines.

    Raises:
        ValueError: the split has no usable transcript (the message names `spec`).
    """
    from data.speech_sources import resolve_speech_source
    from pipelines.feature_cache import DEFAULT_CACHE_DIR

    source = resolve_speech_source(spec, cache_dir=os.path.abspath(cache_dir or DEFAULT_CACHE_DIR))
    texts, dropped = normalised_lines((u.text or "" for u in source.splits["train"]()), source=spec)
    if not texts:
        raise ValueError(f"the training split of {spec!r} has no usable transcript ({dropped} without text or with digits).")
    return texts


def interleave(sentences, extra, repeats):
    """`sentences` with `repeats` copies of `extra` spread evenly through them."""
    extra = list(extra) * repeats
    if not extra:
        return list(sentences)
    out, step = [], len(sentences) / len(extra)
    taken = 0
    for index, sentence in enumerate(sentences):
        while taken < len(extra) and taken * step <= index:
            out.append(extra[taken])
            taken += 1
        out.append(sentence)
    return out + extra[taken:]


def _same_file(a, b):
    """True when paths `a` and `b` name one file (the same path, a link to it, or a hard link)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def _dataset_folders(spec):
    """The existing folders a `--transcripts` spec reads (each part of an 'A+B' spec)."""
    folders = []
    for part in spec.split("+") if "+" in spec and not os.path.isdir(os.path.expanduser(spec)) else [spec]:
        part = os.path.expanduser(part.strip())
        folder = part if os.path.isdir(part) else part.rpartition(":")[0]
        if folder and os.path.isdir(folder):
            folders.append(os.path.realpath(folder))
    return folders


def check_output(output, *, inputs=(), transcripts=None):
    """Why `output` cannot be written without losing data, or None when it can.

    `output` must not be a directory, nor any of `inputs` (the same file by
    any path or link: writing it would replace the source text), nor lie
    inside a folder the `transcripts` spec reads (it would overwrite or add
    to the dataset). Its parent directory is made when missing, so a parent
    that is a file is refused too.
    """
    from training.cli import output_file_error

    if os.path.isdir(output):
        return output_file_error(output, name="output", kind="text file")
    for source in inputs:
        if _same_file(output, source):
            return (f"output {output} is the input file {source}; expected a new file "
                    "(writing it would replace the source text).")
    real = os.path.realpath(output)
    for folder in _dataset_folders(transcripts) if transcripts else ():
        if os.path.commonpath([real, folder]) == folder:
            return (f"output {output} is inside the --transcripts dataset folder {folder}; "
                    "expected a path outside it (writing there would change the dataset).")
    return output_file_error(output, name="output", kind="text file")


def write_lines(path, lines):
    """Write `lines` to `path`, one a line (`training.cli.write_text`: a
    failed write leaves an existing `path` as it was)."""
    from training.cli import write_text

    write_text(path, "\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="A UTF-8 text file (one sentence per line) or LJSpeech metadata.csv.")
    parser.add_argument("output", help="Where the normalised text is written.")
    parser.add_argument("--format", choices=FORMATS, default="lines",
                        help="'lines' (default): every line is a sentence; 'ljspeech': the third field of id|raw|normalized.")
    parser.add_argument("--transcripts", default=None, metavar="SPEC",
                        help="Also mix in the training-split transcripts of this speech dataset (a train.py --dataset spec).")
    parser.add_argument("--transcript-repeats", type=int, default=1, help="Copies of those transcripts (default: 1).")
    parser.add_argument("--cache-dir", default=None, help="As train.py's --cache-dir (where datasets are prepared).")
    args = parser.parse_args(argv)
    if args.transcript_repeats < 1:
        parser.error(f"--transcript-repeats must be a positive integer, got {args.transcript_repeats}.")
    problem = check_output(args.output, inputs=[args.input], transcripts=args.transcripts)
    if problem:  # before anything is read or written
        parser.error(problem)
    from data.text_sources import decode_utf8

    if os.path.isdir(args.input):
        print(f"lm_text: error: {args.input} is a directory; expected a text file.", file=sys.stderr)
        return 2
    try:
        with open(args.input, "rb") as f:
            content = decode_utf8(f.read(), args.input)
        sentences, dropped = normalised_lines(io.StringIO(content, newline=None), fmt=args.format, source=args.input)
    except OSError as error:
        print(f"lm_text: error: {args.input}: {error.strerror or error}", file=sys.stderr)
        return 2
    except ValueError as error:  # decode_utf8's and normalised_lines' messages name the file
        print(f"lm_text: error: {error}", file=sys.stderr)
        return 2
    if not sentences:
        print(f"lm_text: error: {args.input} has no line left after normalising ({dropped} dropped).", file=sys.stderr)
        return 2
    transcripts = []
    if args.transcripts is not None:
        try:
            transcripts = training_transcripts(args.transcripts, cache_dir=args.cache_dir)
        except (OSError, ValueError) as error:
            print(f"lm_text: error: --transcripts {args.transcripts}: {error}", file=sys.stderr)
            return 2
        sentences = interleave(sentences, transcripts, args.transcript_repeats)
    try:
        write_lines(args.output, sentences)
    except OSError as error:
        print(f"lm_text: error: output {args.output}: cannot write the text ({error}).", file=sys.stderr)
        return 2
    mixed = f", {len(transcripts)} training transcripts x {args.transcript_repeats} mixed in" if transcripts else ""
    print(f"{args.output}: {len(sentences)} sentences, {sum(map(len, sentences))} characters ({dropped} lines dropped{mixed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Text for a language model that scores transcriptions: one normalised sentence per line.

    python -m data.lm_text ../shared/data/ljspeech_text/metadata.csv runs/ljspeech_lm.txt --format ljspeech
    python train.py --task language_model --dataset runs/ljspeech_lm.txt --output-dir runs/lm_ljspeech

Each line (for `--format ljspeech`, the normalised third field of
`id|raw|normalized`) is normalised as transcripts are (lowercase a-z,
apostrophe, single spaces; `pipelines.vocabulary.normalize_transcript`).
Lines that still hold digits (no single spelling) or nothing are dropped and
counted. The language model trained on the output knows the transcription
alphabet and reads a line break as the end of a sentence, which is what
`models.ctc_lm_decoding` expects.
"""

import argparse
import sys

FORMATS = ("lines", "ljspeech")


def normalised_lines(lines, *, fmt="lines", source="input"):
    """`(sentences, dropped)`: the normalised non-empty lines and how many were dropped."""
    from pipelines.vocabulary import normalize_transcript

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
        if not text or any(c.isdigit() for c in text):
            dropped += 1
            continue
        sentences.append(text)
    return sentences, dropped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="A UTF-8 text file (one sentence per line) or LJSpeech metadata.csv.")
    parser.add_argument("output", help="Where the normalised text is written.")
    parser.add_argument("--format", choices=FORMATS, default="lines",
                        help="'lines' (default): every line is a sentence; 'ljspeech': the third field of id|raw|normalized.")
    args = parser.parse_args(argv)
    try:
        with open(args.input, encoding="utf-8-sig") as f:
            sentences, dropped = normalised_lines(f, fmt=args.format, source=args.input)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        print(f"lm_text: error: {args.input}: {error}", file=sys.stderr)
        return 2
    if not sentences:
        print(f"lm_text: error: {args.input} has no line left after normalising ({dropped} dropped).", file=sys.stderr)
        return 2
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("\n".join(sentences) + "\n")
    print(f"{args.output}: {len(sentences)} sentences, {sum(map(len, sentences))} characters ({dropped} lines dropped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

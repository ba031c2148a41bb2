"""Speak a text into a WAV file with the synthetic corpus's voices: audio to try a model on.

    python -m data.say "set an alarm for seven" speech.wav
    python -m data.say "three four" digits.wav --voice en-us+f2 --sample-rate 8000

The same engine the synthetic corpus speaks with (libespeak-ng from the
`espeakng-loader` wheel, offline), so `make train`'s model has heard voices
like it: `python transcribe.py --model-dir runs/transcription speech.wav`
and the local server's `:transcribe` take the file. The file is 16-bit PCM
at espeak-ng's own 22,050 Hz unless `--sample-rate` asks for another rate
(resampled with librosa). An existing file is kept unless `--overwrite`.
"""

import argparse
import os
import sys

import numpy as np


def say(text, path, *, voice="en", rate=175, pitch=50, sample_rate=None, seed=0):
    """Synthesise `text` and write it to the WAV file `path`; returns `(seconds, sample_rate)`.

    espeak-ng varies its timing from call to call within a process; as the
    corpus does, each text is spoken in a new process seeded with `seed`,
    so the same arguments give the same file.

    Raises:
        ValueError: for a text espeak-ng speaks as silence (nothing to
            say) or an unknown voice; nothing is written then.
    """
    import soundfile as sf

    from data.espeak_synthesizer import synthesize_in_subprocess

    (pcm,), espeak_rate = synthesize_in_subprocess(
        [{"text": text, "voice": voice, "rate": rate, "pitch": pitch}], seed=seed)
    if not np.any(pcm):
        raise ValueError(f"espeak-ng says nothing for the text {text!r}; expected words to speak.")
    rate_out = espeak_rate
    if sample_rate is not None and sample_rate != espeak_rate:
        import librosa

        audio = librosa.resample(pcm.astype(np.float32) / 32768.0, orig_sr=espeak_rate, target_sr=sample_rate)
        pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
        rate_out = sample_rate
    sf.write(path, pcm, rate_out, subtype="PCM_16", format="WAV")
    return pcm.shape[0] / rate_out, rate_out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m data.say", description=__doc__.splitlines()[0])
    parser.add_argument("text", help="What to say (English).")
    parser.add_argument("output", help="The WAV file to write.")
    parser.add_argument("--voice", default="en",
                        help="espeak-ng voice, with an optional variant: en, en-us+f2, en-gb-x-rp+m3, ... "
                             "(default en).")
    parser.add_argument("--rate", type=int, default=175, help="Words per minute, 80-450 (default 175).")
    parser.add_argument("--pitch", type=int, default=50, help="Base pitch, 0-100 (default 50).")
    parser.add_argument("--sample-rate", type=int, default=None,
                        help="Write at this rate in Hz (default espeak-ng's 22050).")
    parser.add_argument("--seed", type=int, default=0,
                        help="espeak-ng's random seed (its small timing variations; default 0): the same "
                             "arguments give the same file.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing output file.")
    args = parser.parse_args(argv)
    if not args.text.strip():
        parser.error("text: expected words to speak, got an empty text")
    if not 80 <= args.rate <= 450:
        parser.error(f"--rate: expected 80-450 words per minute, got {args.rate}")
    if not 0 <= args.pitch <= 100:
        parser.error(f"--pitch: expected 0-100, got {args.pitch}")
    if args.sample_rate is not None and not 1000 <= args.sample_rate <= 192000:
        parser.error(f"--sample-rate: expected a rate in Hz from 1000 to 192000, got {args.sample_rate}")
    if os.path.isdir(args.output):
        parser.error(f"output: {args.output} is a directory; expected a WAV file name")
    if os.path.exists(args.output) and not args.overwrite:
        parser.error(f"output: {args.output} exists; give --overwrite to replace it, or another name")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        parser.error(f"output: {os.path.dirname(args.output)} is not a directory; expected the WAV file's folder "
                     "to exist")
    try:
        seconds, rate = say(args.text, args.output, voice=args.voice, rate=args.rate, pitch=args.pitch,
                            sample_rate=args.sample_rate, seed=args.seed)
    except ValueError as error:
        parser.error(str(error))
    print(f"{args.output}: {seconds:.2f} s at {rate} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate text with a trained character language model: `python generate.py --model-dir DIR`.

DIR is the `--output-dir` of `python train.py --task language_model` (its
best.keras, else model.keras, with vocabulary.json), or an exported
SavedModel version (DIR/export/language_model/N), whose `serving_default`
signature then generates (`generate_seeded` with `--seed`). Each prompt is
read once and every new character is fed alone with the recurrent state
carried from the step before
(`models.text_generation.generate_text`); all samples are generated as one
batch. Prints each prompt followed by its continuation; with several
samples, a `=== sample K ===` line before each; `--json` prints one JSON
object per sample (`prompt`, `text`: the continuation) instead.

Example:

    python generate.py --model-dir runs/language_model --prompt 'ROMEO:' --length 300
    python generate.py --model-dir runs/language_model --prompt $'KING HENRY:\\n' --num-samples 3 --seed 1
    python generate.py --model-dir runs/language_model --temperature 0 --length 100    # greedy
    python generate.py --model-dir runs/language_model/export/language_model/1 --prompt 'ROMEO:'

Without `--prompt` a sample starts at the beginning of a line (a newline, if
the model's text had one). `--seed` makes sampling repeatable. Without it an
export draws fresh random numbers on every call (seeded from the clock, so
that server replicas and restarts do not repeat one another); with it the
export's `generate_seeded` signature samples from the seed (the same seed
gives the same text every time, though not the text the run directory gives
with that seed: the two draw their random numbers differently). An export
made before that signature existed refuses `--seed`. Bad arguments (a prompt with characters the model never
saw, a missing model, a speech transcription run or export, a `--length`
above 100000 or more than 1000 samples in all) are reported naming the
argument, exit status 2.
"""

import argparse
import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training.cli import print_lines  # noqa: E402

# TensorFlow and Keras are imported where a model is loaded, after the
# arguments are parsed: `--help` and a bad argument answer at once instead
# of after the ~5 s `import tensorflow` takes.

# Upper bounds of --length and of the samples generated at once (prompts x --num-samples): the
# run directory keeps every generated id of every sample in memory (and an export's int32
# `max_new_chars` and its TensorArray would overflow or exhaust memory long before a bad
# --length is done). The local server accepts at most 2000 characters a request by default.
MAX_LENGTH = 100_000
MAX_SAMPLES = 1000
# --seed is an int64 of the export's `generate_seeded` signature (and must be non-negative for numpy).
MAX_SEED = 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38


class ExportedGenerator:
    """An exported language model's `serving_default` signature (`generate_seeded`
    when given a seed), called as `generate` is."""

    def __init__(self, export_dir):
        import tensorflow as tf

        from pipelines.vocabulary import Vocabulary
        from serving.export import load_version, read_metadata
        from serving.language_model_export import SEEDED_SIGNATURE

        metadata = read_metadata(export_dir, task="language_model")
        self.vocabulary = Vocabulary.from_config(metadata["vocabulary"])
        self._tf = tf
        self._signatures = load_version(export_dir).signatures
        self.seeded_signature = SEEDED_SIGNATURE

    @property
    def can_seed(self):
        return self.seeded_signature in self._signatures

    def generate(self, prompts, *, length, temperature, seed=None):
        tf = self._tf
        inputs = dict(
            prompt=tf.constant(prompts, tf.string),
            max_new_chars=tf.constant(length, tf.int32),
            # Above float32's largest value (3.4e38) the constant would be inf, which the export
            # refuses; there the logits / temperature are 0 already (uniform sampling, as the run's).
            temperature=tf.constant(min(temperature, FLOAT32_MAX), tf.float32),
        )
        if seed is None:
            outputs = self._signatures["serving_default"](**inputs)
        else:
            outputs = self._signatures[self.seeded_signature](**inputs, seed=tf.constant(seed, tf.int64))
        return [text.decode("utf-8") for text in outputs["text"].numpy()]


class RunGenerator:
    """The Keras model of a language-model run directory, with its one-step model built once."""

    def __init__(self, run_dir):
        from models.language_model_io import load_language_model_run
        from models.text_generation import build_step_model

        self.model, self.vocabulary, self.path = load_language_model_run(run_dir)
        self._step_model = build_step_model(self.model)

    def generate(self, prompts, *, length, temperature, seed=None):
        from models.text_generation import generate_text

        return generate_text(
            self.model, self.vocabulary, list(prompts), length=length, temperature=temperature,
            seed=seed, step_model=self._step_model,
        )


def load_generator(model_dir):
    """A `RunGenerator` or, for an exported version directory, an `ExportedGenerator`."""
    from serving.model_paths import export_base_error, export_task, model_dir_error, with_export_hint

    dir_error = model_dir_error(model_dir, "language_model")  # before TensorFlow is imported
    if dir_error is not None:
        raise dir_error
    if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        if export_task(model_dir) == "transcription":
            raise ValueError(
                f"{model_dir} is a speech transcription export, not a language model: "
                f"use transcribe.py --model-dir {model_dir}"
            )
        return ExportedGenerator(model_dir)
    from models.language_model_io import RUN_MODEL_FILES

    base_error = export_base_error(model_dir, "language_model", run_files=RUN_MODEL_FILES)
    if base_error is not None:
        raise base_error
    try:
        return RunGenerator(model_dir)
    except FileNotFoundError as error:
        raise with_export_hint(error, model_dir, "language_model") from None


def check_prompts(prompts, vocabulary):
    """Raise a ValueError naming `--prompt` for an empty prompt or one with unknown characters."""
    for prompt in prompts:
        if not prompt:
            raise ValueError("argument --prompt: expected at least one character, got ''")
        unknown = vocabulary.unknown_characters(prompt)
        if unknown:
            raise ValueError(
                f"argument --prompt: {prompt!r} holds characters {unknown!r} the model was not trained on; "
                f"expected characters of its vocabulary ({''.join(vocabulary.characters)!r})"
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", default="runs/language_model",
        help="output directory of a language-model training run (default: runs/language_model), "
             "or an exported version directory such as DIR/export/language_model/1",
    )
    parser.add_argument(
        "--prompt", action="append", default=None,
        help="text to continue (repeat the flag for several prompts; default: the start of a line)",
    )
    parser.add_argument(
        "--num-samples", type=int, default=1,
        help=f"samples per prompt; at most {MAX_SAMPLES} samples in all, over every prompt (default: 1)",
    )
    parser.add_argument(
        "--length", type=int, default=500,
        help=f"characters to generate per sample, at most {MAX_LENGTH} (default: 500)",
    )
    parser.add_argument(
        "--temperature", type=float, default=0.8,
        help="sampling temperature; 0 picks the most likely character (default: 0.8)",
    )
    parser.add_argument(
        "--seed", type=int, default=None,
        help="random seed from 0 to 2**63 - 1: the same seed gives the same samples (default: fresh ones each time)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per sample")
    args = parser.parse_args(argv)
    if args.num_samples < 1:
        parser.error(f"argument --num-samples: expected a positive integer, got {args.num_samples}")
    if args.num_samples > MAX_SAMPLES:
        parser.error(f"argument --num-samples: expected at most {MAX_SAMPLES}, got {args.num_samples}")
    if args.prompt is not None and len(args.prompt) * args.num_samples > MAX_SAMPLES:
        parser.error(
            f"arguments --prompt and --num-samples: {len(args.prompt)} prompts x {args.num_samples} samples is "
            f"{len(args.prompt) * args.num_samples} samples; expected at most {MAX_SAMPLES} in all"
        )
    if args.length < 0:
        parser.error(f"argument --length: expected a non-negative integer, got {args.length}")
    if args.length > MAX_LENGTH:
        parser.error(f"argument --length: expected at most {MAX_LENGTH} characters per sample, got {args.length}")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        parser.error(f"argument --seed: expected an integer from 0 to 2**63 - 1, got {args.seed}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        parser.error(f"argument --temperature: expected a finite number >= 0 (0 is greedy), got {args.temperature}")
    try:
        generator = load_generator(args.model_dir)
        if args.seed is not None and isinstance(generator, ExportedGenerator) and not generator.can_seed:
            raise ValueError(
                f"argument --seed: the export {args.model_dir} has no {generator.seeded_signature!r} signature "
                "(it was made before there was one) and draws fresh random numbers on every call; "
                "expected a training run directory, or export the run again "
                "(python -m serving.export_run RUN_DIR)"
            )
        from models.text_generation import default_prompt

        prompts = args.prompt if args.prompt is not None else [default_prompt(generator.vocabulary)]
        check_prompts(prompts, generator.vocabulary)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))

    batch = [prompt for prompt in prompts for _ in range(args.num_samples)]
    texts = generator.generate(batch, length=args.length, temperature=args.temperature, seed=args.seed)
    lines = []
    for index, (prompt, text) in enumerate(zip(batch, texts), start=1):
        if args.json:
            lines.append(json.dumps({"prompt": prompt, "text": text}))
            continue
        if len(batch) > 1:
            lines.append(f"=== sample {index} ===")
        lines.append(prompt + text)
    print_lines(lines)  # `generate.py ... | head`: no traceback when the reader has what it wanted
    return 0


if __name__ == "__main__":
    sys.exit(main())

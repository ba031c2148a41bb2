"""A tiny stand-in language-model task for the tuning tests (no real corpus).

It goes through the real search space (`tuning.search_spaces
.language_model_space`, hence `build_language_model` and the Elman layers)
with a few hundred characters of text, so a trial takes a second or two.
The subprocess tests run `python -m tests.tuning_toy_task OUTPUT_DIR
[tuning flags]` from the project root; with `TOY_TASK_HOLD_FILE=PATH` in the
environment, the search writes PATH and waits, never to finish, when it
builds the model of its second trial (the resume test kills it there).
With `TOY_TASK_MEET_DIR=DIR` and `TOY_TASK_MEET_COUNT=N`, a distributed
worker's first trial writes `DIR/<tuner id>` and waits until N workers have,
so every worker gets a trial (the distributed test: otherwise one worker
could run them all before another first asks).
"""

import argparse
import dataclasses
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from pipelines.vocabulary import Vocabulary
from training.cli import add_config_flags, config_from_namespace
from tuning.config import TuningConfig
from tuning.search_ranges import SearchRanges
from tuning.search_spaces import language_model_space
from tuning.tuning_task import TuningTask

TEXT = (
    "the quick brown fox jumps over the lazy dog. " * 6
    + "a stitch in time saves nine. " * 6
)

# Tiny models: the tests check the machinery, not the accuracy.
TOY_RANGES = SearchRanges(
    min_hidden_size=8,
    max_hidden_size=32,
    min_num_layers=1,
    max_num_layers=2,
    min_learning_rate=1e-3,
    max_learning_rate=1e-2,
    min_dropout=0.0,
    max_dropout=0.1,
)


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """The stand-in task's options."""

    output_dir: str = "runs/toy"  # where the outputs go
    sequence_length: int = 16  # characters per window
    batch_size: int = 16  # windows per batch
    embedding_dim: int = 8  # character embedding size


def _windows(ids, length):
    starts = range(0, len(ids) - length - 1, length // 2)
    x = np.stack([ids[s : s + length] for s in starts]).astype("int32")
    y = np.stack([ids[s + 1 : s + length + 1] for s in starts]).astype("int32")
    return x, y


def prepare(config):
    vocabulary = Vocabulary.from_text(TEXT)
    ids = np.array(vocabulary.encode(TEXT))
    split = int(len(ids) * 0.8)
    train = tf.data.Dataset.from_tensor_slices(_windows(ids[:split], config.sequence_length))
    validation = tf.data.Dataset.from_tensor_slices(_windows(ids[split:], config.sequence_length))
    return (
        train.batch(config.batch_size),
        validation.batch(config.batch_size),
        {"vocabulary": vocabulary, "data_identity": {"vocabulary": "".join(vocabulary.characters), "characters": len(TEXT)}},
    )


def compile_model(model, *, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def build_model(hp, ranges, config, context):
    hold = os.environ.get("TOY_TASK_HOLD_FILE")
    if hold and os.path.exists(os.path.join(config.output_dir, "tuning", "search", "trial_1", "trial.json")):
        # The resume test kills the search here, in the middle of its second
        # trial, which therefore never completes before the kill.
        with open(hold, "w"):
            pass
        while True:
            time.sleep(1)
    return language_model_space(
        hp,
        ranges=ranges,
        compile_model=compile_model,
        vocabulary_size=context["vocabulary"].size,
        embedding_dim=config.embedding_dim,
        seed=1,
    )


class _MeetOtherWorkers(keras.callbacks.Callback):
    """Holds a worker's first trial until `TOY_TASK_MEET_COUNT` workers have one."""

    met = False  # per process: only the first trial waits

    def on_train_begin(self, logs=None):
        meet_dir = os.environ.get("TOY_TASK_MEET_DIR")
        tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
        if not meet_dir or not tuner_id.startswith("tuner") or _MeetOtherWorkers.met:
            return
        os.makedirs(meet_dir, exist_ok=True)
        with open(os.path.join(meet_dir, tuner_id), "w"):
            pass
        count = int(os.environ["TOY_TASK_MEET_COUNT"])
        deadline = time.monotonic() + 150
        while len(os.listdir(meet_dir)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{tuner_id}: fewer than {count} workers in {meet_dir} after 150 s")
            time.sleep(0.1)
        _MeetOtherWorkers.met = True


def make_callbacks(config, context, validation):
    return [_MeetOtherWorkers()]


def evaluate(model, config, context, validation):
    return {"val_loss": float(model.evaluate(validation, verbose=0))}


def export(model, config, context, metrics):
    return None


TOY_TASK = TuningTask(
    name="toy_language_model",
    objective="val_loss",
    default_ranges=TOY_RANGES,
    prepare=prepare,
    build_model=build_model,
    make_callbacks=make_callbacks,
    evaluate=evaluate,
    export=export,
)


def main(argv=None):
    """`python -m tests.tuning_toy_task OUTPUT_DIR [tuning flags]`: search the toy task."""
    from tuning.run_search import run_search

    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    add_config_flags(parser, TuningConfig)
    args = parser.parse_args(argv)
    tuning = config_from_namespace(TuningConfig, args)
    result = run_search(TOY_TASK, ToyConfig(output_dir=args.output_dir), tuning)
    print(f"[toy] done as {result['role']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

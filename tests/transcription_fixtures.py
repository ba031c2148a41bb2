"""Tiny made-up speech data for the transcription tests (no audio, no files).

Each character gets a fixed random feature prototype; an utterance is its
characters' prototypes, each held for 2-3 frames, with noise and a
silence gap, so a small CTC model can learn it in a few seconds.
"""

import numpy as np
import tensorflow as tf

from pipelines.epochs import without_autotuning
from pipelines.speech_dataset import SpeechData
from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary

NUM_FEATURES = 8
WORDS = ("ab", "ba", "cab", "bad", "dab", "cad")


def make_utterances(count, *, seed=0, num_features=NUM_FEATURES, noise=0.1):
    """`count` pairs of (features (frames, num_features), transcript)."""
    vocabulary = Vocabulary(SPEECH_ALPHABET)
    prototypes = np.random.default_rng(1234).normal(size=(vocabulary.size, num_features))
    rng = np.random.default_rng(seed)
    utterances = []
    for _ in range(count):
        text = " ".join(rng.choice(WORDS, size=rng.integers(1, 3)))
        frames = [np.zeros((2, num_features))]
        for char_id in vocabulary.encode(text):
            frames.append(np.repeat(prototypes[char_id][None], rng.integers(2, 4), axis=0))
            frames.append(np.zeros((1, num_features)))  # a gap makes repeats separable
        features = np.concatenate(frames) + rng.normal(scale=noise, size=(sum(len(f) for f in frames), num_features))
        utterances.append((features.astype("float32"), text))
    return utterances


def make_dataset(utterances, batch_size, vocabulary=None, max_frames=32, max_label_length=8):
    """Padded batches of `({"features", "feature_length"}, labels)`.

    Every batch is padded to the same `max_frames` and `max_label_length`
    (the lengths inside still differ), so the tests trace the training step
    once instead of once per batch shape.
    """
    vocabulary = vocabulary or Vocabulary(SPEECH_ALPHABET)
    longest = max(len(features) for features, _ in utterances)
    if longest > max_frames:
        raise ValueError(f"An utterance has {longest} frames, more than max_frames={max_frames}.")

    def generate():
        for features, text in utterances:
            yield (
                {"features": features, "feature_length": np.int32(len(features))},
                np.asarray(vocabulary.encode(text), "int32"),
            )

    signature = (
        {
            "features": tf.TensorSpec((None, utterances[0][0].shape[1]), tf.float32),
            "feature_length": tf.TensorSpec((), tf.int32),
        },
        tf.TensorSpec((None,), tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.padded_batch(
        batch_size,
        padded_shapes=({"features": [max_frames, utterances[0][0].shape[1]], "feature_length": []}, [max_label_length]),
        padding_values=({"features": 0.0, "feature_length": 0}, np.int32(vocabulary.pad_id)),
    ).cache().apply(without_autotuning)  # as the real pipelines: no autotuning thread to wait for


def make_speech_data(train=24, validation=8, test=0, batch_size=8, **kwargs):
    """A `SpeechData` as `build_speech_datasets` returns it, of made-up features."""
    return SpeechData(
        train=make_dataset(make_utterances(train, seed=1, **kwargs), batch_size),
        validation=make_dataset(make_utterances(validation, seed=2, **kwargs), batch_size),
        test=make_dataset(make_utterances(test, seed=3, **kwargs), batch_size) if test else None,
        counts={"train": train, "validation": validation, "test": test},
        skipped=[("bad.wav", "silent")],
        description="made-up features for tests",
    )

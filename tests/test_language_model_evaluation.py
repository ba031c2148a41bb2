"""Tests for `models.language_model_evaluation.long_context_loss`."""

import keras
import numpy as np
import pytest

from models.language_model import build_language_model
from models.language_model_evaluation import long_context_loss
from pipelines.text_dataset import text_window_dataset


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    model = build_language_model(vocabulary_size=9, embedding_dim=4, hidden_size=8, seed=3)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_one_chunk_is_the_whole_text_read_once(model):
    ids = np.random.default_rng(0).integers(2, 9, 41)
    log_probs = keras.ops.convert_to_numpy(keras.ops.log_softmax(model(ids[None, :-1]), axis=-1))[0]
    expected = -np.mean(log_probs[np.arange(40), ids[1:]])
    assert long_context_loss(model, ids, num_chunks=1) == pytest.approx(expected, rel=1e-5)


def test_chunks_as_long_as_windows_give_the_keras_validation_loss(model):
    ids = np.random.default_rng(1).integers(2, 9, 41)  # 5 windows of 8
    windows = text_window_dataset(ids, sequence_length=8, batch_size=2)
    expected = model.evaluate(windows, verbose=0)
    assert long_context_loss(model, ids, num_chunks=5, batch_size=3) == pytest.approx(expected, rel=1e-5)


def test_errors(model):
    with pytest.raises(ValueError, match="Received 4 ids, expected at least num_chunks \\+ 1 = 5"):
        long_context_loss(model, np.arange(4), num_chunks=4)
    with pytest.raises(ValueError, match="argument `batch_size`, expected a positive integer, got 0"):
        long_context_loss(model, np.arange(40), batch_size=0)

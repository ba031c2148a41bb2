"""Tests for the text half of the pipeline: the 90/10 split and the windows."""

import numpy as np
import pytest

from pipelines.text_dataset import text_window_dataset
from pipelines.text_split import split_text
from pipelines.vocabulary import Vocabulary


def _batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_split_is_the_tfds_cut():
    text = "".join(chr(ord("a") + i % 26) for i in range(1003))
    train, validation = split_text(text, sequence_length=10)
    assert len(train) == int(1003 * 0.9) == 902
    assert train + validation == text
    train, validation = split_text(text, sequence_length=10, validation_fraction=0.5)
    assert (len(train), len(validation)) == (501, 502)


def test_split_errors_name_the_source_and_the_lengths():
    with pytest.raises(ValueError) as error:
        split_text("x" * 50, sequence_length=50, source="tiny.txt")
    assert str(error.value) == (
        "sequence_length=50 is longer than the text of 'tiny.txt' (50 characters); "
        "expected a text of at least 501 characters for this sequence length, or "
        "a smaller --sequence-length."
    )
    # 100 characters: 90 train, 10 validation; 10 < 16 needed.
    with pytest.raises(ValueError) as error:
        split_text("x" * 100, sequence_length=15, source="short.txt")
    assert str(error.value) == (
        "Text of 'short.txt' is too short: 100 characters give a validation split "
        "of 10 characters, but sequence_length=15 needs at least 16 in each split "
        "(validation is the last 10%); expected a text of at least 151 characters, "
        "or a smaller --sequence-length."
    )
    # The advertised minimum is exact: one character less fails.
    assert tuple(map(len, split_text("x" * 151, sequence_length=15))) == (135, 16)
    with pytest.raises(ValueError, match="too short"):
        split_text("x" * 150, sequence_length=15)
    # A training split too short (validation_fraction large).
    with pytest.raises(ValueError, match="give a training split of 3 characters"):
        split_text("x" * 20, sequence_length=4, validation_fraction=0.85, source="f")
    with pytest.raises(ValueError, match="argument `sequence_length`, expected a positive integer, got 0"):
        split_text("abc", sequence_length=0)
    with pytest.raises(ValueError, match="argument `validation_fraction`, expected a float in \\(0, 1\\), got 1.0"):
        split_text("abc", sequence_length=1, validation_fraction=1.0)


def test_windows_in_text_order():
    ids = np.arange(12)  # 11 predictions -> 3 windows of 3 (ids 9..11 left over)
    batches = _batches(text_window_dataset(ids, sequence_length=3, batch_size=2))
    assert [x.tolist() for x, _ in batches] == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8]]]
    assert [y.tolist() for _, y in batches] == [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9]]]
    assert batches[0][0].dtype == np.int32
    dropped = _batches(text_window_dataset(ids, sequence_length=3, batch_size=2, drop_remainder=True))
    assert len(dropped) == 1


def test_labels_are_the_next_characters_and_every_character_is_predicted_once():
    text = "the quick brown fox jumps over the lazy dog.\n" * 10
    vocab = Vocabulary.from_text(text)
    ids = vocab.encode(text)
    dataset = text_window_dataset(ids, sequence_length=16, batch_size=8, shuffle=True, seed=3)
    inputs, labels = (np.concatenate(parts) for parts in zip(*_batches(dataset)))
    assert inputs.shape == labels.shape == ((len(ids) - 1) // 16, 16) == (28, 16)
    for x, y in zip(inputs, labels):
        assert vocab.decode(y)[:-1] == vocab.decode(x)[1:]
    # With ids equal to positions, windows start every 16 and tile the text once.
    positions = np.arange(len(ids))
    dataset = text_window_dataset(positions, sequence_length=16, batch_size=8, shuffle=True, seed=3)
    inputs, labels = (np.concatenate(parts) for parts in zip(*_batches(dataset)))
    np.testing.assert_array_equal(labels, inputs + 1)
    assert sorted(inputs[:, 0].tolist()) == list(range(0, 28 * 16, 16))
    assert inputs[:, 0].tolist() != sorted(inputs[:, 0].tolist())  # shuffled


def test_shuffle_is_seeded_and_reshuffles_each_epoch():
    ids = np.arange(401)
    def first_column(seed):
        dataset = text_window_dataset(ids, sequence_length=4, batch_size=100, shuffle=True, seed=seed)
        return [x.numpy()[:, 0].tolist() for x, _ in dataset], [x.numpy()[:, 0].tolist() for x, _ in dataset]
    epoch1, epoch2 = first_column(7)
    assert first_column(7) == (epoch1, epoch2)
    assert epoch1 != epoch2
    assert sorted(sum(epoch1, [])) == list(range(0, 400, 4))
    assert first_column(8)[0] != epoch1


def test_window_errors():
    with pytest.raises(ValueError, match="Received 5 ids, expected at least sequence_length \\+ 1 = 6"):
        text_window_dataset(np.arange(5), sequence_length=5, batch_size=1)
    with pytest.raises(ValueError, match="do not fill one batch of batch_size=4"):
        text_window_dataset(np.arange(10), sequence_length=3, batch_size=4, drop_remainder=True)
    with pytest.raises(ValueError, match="argument `batch_size`, expected a positive integer, got 0"):
        text_window_dataset(np.arange(10), sequence_length=3, batch_size=0)
    with pytest.raises(ValueError, match="expected a 1-D sequence of ids, got shape \\(2, 5\\)"):
        text_window_dataset(np.zeros((2, 5)), sequence_length=3, batch_size=1)

"""Tempo augmentation: known interpolated values, lengths, no padding leak."""

import numpy as np
import pytest
import tensorflow as tf

from pipelines.time_stretch import stretch_batches, stretch_factors, time_stretch


def _batch():
    x = np.zeros((2, 6, 1), np.float32)
    x[0, :, 0] = np.arange(6)
    x[1, :3, 0] = [10, 20, 30]
    x[1, 3:, 0] = 99.0  # padding garbage: must never leak into valid frames
    return x, np.array([6, 3], np.int32)


def test_factor_one_is_the_identity_on_valid_frames():
    x, lengths = _batch()
    features, new_lengths = time_stretch(x, lengths, 1.0)
    np.testing.assert_array_equal(new_lengths, lengths)
    np.testing.assert_allclose(features[0, :, 0], np.arange(6))
    np.testing.assert_allclose(features[1, :, 0], [10, 20, 30, 0, 0, 0])


def test_known_values_at_one_and_a_half():
    x, lengths = _batch()
    features, new_lengths = time_stretch(x, lengths, 1.5)
    # ceil(6 * 1.5) = 9 frames; output frame j samples input (j + 0.5) / 1.5 - 0.5.
    assert features.shape == (2, 9, 1)
    np.testing.assert_array_equal(new_lengths, [8, 4])
    assert new_lengths.dtype == tf.int32
    expected = [0.0, 0.5, 7 / 6, 11 / 6, 2.5, 19 / 6, 23 / 6, 4.5, 0.0]
    np.testing.assert_allclose(features[0, :, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(features[1, :, 0], [10, 15, 10 + 70 / 6, 10 + 110 / 6, 0, 0, 0, 0, 0], rtol=1e-5)


def test_slowing_down_only_adds_frames():
    x, lengths = _batch()
    for factor in stretch_factors(0.3):
        _, new_lengths = time_stretch(x, lengths, factor)
        assert np.all(new_lengths.numpy() >= lengths)
    assert stretch_factors(0.3) == pytest.approx([1.0, 1.1, 1.2, 1.3])
    assert stretch_factors(0.0) == [1.0]


def test_stretch_batches_draws_factors_per_batch_and_keeps_labels():
    x, lengths = _batch()
    labels = np.array([[1, 2], [3, 0]], np.int32)
    dataset = tf.data.Dataset.from_tensors(({"features": x, "feature_length": lengths}, labels)).repeat(40)
    seen = set()
    for inputs, out_labels in stretch_batches(dataset, 0.3, seed=7):
        np.testing.assert_array_equal(out_labels, labels)
        factor = inputs["features"].shape[1] / 6
        assert any(np.ceil(6 * f - 1e-4) == inputs["features"].shape[1] for f in stretch_factors(0.3))
        seen.add(round(factor, 3))
        assert inputs["feature_length"].numpy()[0] <= inputs["features"].shape[1]
    assert len(seen) > 1  # 40 batches do not all draw the same factor
    first = [b[0]["features"].shape[1] for b in stretch_batches(dataset, 0.3, seed=7)]
    again = [b[0]["features"].shape[1] for b in stretch_batches(dataset, 0.3, seed=7)]
    assert first == again  # reproducible from the seed
    # Its own draws, not the bits of the batch seeds SpecAugment reads from the same stream.
    pairs = list(tf.data.Dataset.random(seed=7, rerandomize_each_iteration=True).batch(2).take(40))
    raw = [int(tf.random.stateless_uniform([], seed=p, maxval=len(stretch_factors(0.3)), dtype=tf.int32))
           for p in pairs]
    widths = [int(np.ceil(6 * stretch_factors(0.3)[i] - 1e-4)) for i in raw]
    assert first != widths


def test_samples_at_the_nominal_factor_whatever_the_batch_padding():
    # Padded time 7 at factor 1.5 gives ceil(10.5) = 11 output frames: frame j must still sample
    # (j + 0.5) / 1.5 - 0.5 (not (j + 0.5) * 7 / 11 - 0.5, the scale of a resize to 11 frames),
    # so an utterance is stretched the same whatever padding its batch has.
    ramp = np.arange(7, dtype=np.float32)  # value = frame index: the output reads back its sample point
    expected = np.maximum((np.arange(10) + 0.5) / 1.5 - 0.5, 0.0)  # floor(6.5 * 1.5 - 0.5) + 1 = 10 frames
    for time in (7, 8, 9):
        x = np.full((1, time, 1), 99.0, np.float32)
        x[0, :7, 0] = ramp
        features, new_lengths = time_stretch(x, np.array([7], np.int32), 1.5)
        np.testing.assert_array_equal(new_lengths, [10])
        np.testing.assert_allclose(features[0, :10, 0], expected, atol=1e-5)
        np.testing.assert_array_equal(features[0, 10:, 0], 0.0)

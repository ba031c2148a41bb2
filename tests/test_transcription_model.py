"""The CTC transcription model: shapes, masking, CTC loss values, saving."""

import numpy as np
import pytest
import keras

from layers import ElmanCell, ElmanRNN
from models.ctc_loss import ctc_loss
from models.ctc_model import CTCModel
from models.frame_stacking import FrameStacking
from models.frequency_warp import FrequencyWarp, warp_bands
from models.random_eq import RandomEQ
from models.transcription import build_transcription_model
from pipelines.vocabulary import Vocabulary

SMALL = dict(num_features=6, vocabulary_size=5, hidden_size=8, num_layers=2, dropout=0.0)


def _inputs(lengths, time, num_features=6, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "features": rng.normal(size=(len(lengths), time, num_features)).astype("float32"),
        "feature_length": np.asarray(lengths, "int32"),
    }


# ---- FrameStacking ---------------------------------------------------------


def test_frame_stacking_values_lengths_and_mask():
    x = np.arange(2 * 5, dtype="float32").reshape(2, 5, 1)
    stacked, length, mask = FrameStacking(2)([x, np.array([5, 3], "int32")])
    np.testing.assert_array_equal(
        np.asarray(stacked)[:, :, :],
        [[[0, 1], [2, 3], [4, 0]], [[5, 6], [7, 0], [0, 0]]],
    )
    np.testing.assert_array_equal(length, [3, 2])
    np.testing.assert_array_equal(mask, [[True, True, True], [True, True, False]])


def test_frame_stacking_one_only_zeroes_padding():
    x = np.ones((1, 4, 2), "float32")
    stacked, length, mask = FrameStacking(1)([x, np.array([3], "int32")])
    np.testing.assert_array_equal(np.asarray(stacked)[0, :, 0], [1, 1, 1, 0])
    np.testing.assert_array_equal(length, [3])
    np.testing.assert_array_equal(mask, [[True, True, True, False]])


@pytest.mark.parametrize("stack", [0, -1, 1.5, True, "3"])
def test_frame_stacking_rejects_bad_stack(stack):
    with pytest.raises(ValueError, match="argument `stack`, expected a positive integer"):
        FrameStacking(stack)


# ---- FrequencyWarp ---------------------------------------------------------


def test_frequency_warp_is_identity_at_inference():
    x = np.random.default_rng(0).normal(size=(2, 5, 10)).astype("float32")
    np.testing.assert_array_equal(FrequencyWarp(0.2)(x), x)
    np.testing.assert_array_equal(FrequencyWarp(0.0)(x, training=True), x)


def test_frequency_warp_stretches_the_band_axis_linearly():
    bands = np.tile(np.arange(10, dtype="float32"), (4, 3, 1))  # value = band index
    warped = np.asarray(FrequencyWarp(0.3, seed=3)(bands, training=True))
    for row in warped:
        # Same warp for every frame of an utterance; band j reads position j * alpha.
        np.testing.assert_allclose(row, np.broadcast_to(row[0], row.shape))
        alpha = row[0, 1]
        assert 0.7 <= alpha <= 1.3
        np.testing.assert_allclose(row[0], np.minimum(np.arange(10) * alpha, 9.0), atol=1e-5)
    assert len({round(float(row[0, 1]), 4) for row in warped}) > 1  # alpha differs per utterance


def test_frequency_warp_interpolates_every_frame_like_numpy():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(5, 4, 12)).astype("float32")
    features[:, 0] = np.arange(12)  # frame 0 reads back each utterance's alpha
    warped = np.asarray(FrequencyWarp(0.4, seed=7)(features, training=True))
    bands = np.arange(12)
    for utterance, row in zip(features, warped):
        alpha = row[0, 1]
        position = np.minimum(bands * alpha, 11.0)
        for frame, out in zip(utterance, row):
            np.testing.assert_allclose(out, np.interp(position, bands, frame), atol=1e-5)


def test_warp_bands_with_given_factors_matches_numpy():
    # The deterministic warp the export's test-time warps use.
    features = np.random.default_rng(2).normal(size=(3, 4, 8)).astype("float32")
    alphas = np.array([[1.0], [0.75], [1.25]], "float32")
    warped = np.asarray(warp_bands(features, alphas))
    np.testing.assert_array_equal(warped[0], features[0])  # 1 is the identity
    bands = np.arange(8)
    for utterance, out, (alpha,) in zip(features[1:], warped[1:], alphas[1:]):
        position = np.minimum(bands * alpha, 7.0)
        for frame, row in zip(utterance, out):
            np.testing.assert_allclose(row, np.interp(position, bands, frame), atol=1e-5)
    # alpha 0.75: band 2 reads position 1.5, halfway between bands 1 and 2.
    np.testing.assert_allclose(warped[1, :, 2], (features[1, :, 1] + features[1, :, 2]) / 2, atol=1e-6)


@pytest.mark.parametrize("value", [-0.1, 0.5, True, "0.1"])
def test_frequency_warp_rejects_bad_max_warp(value):
    with pytest.raises(ValueError, match="argument `max_warp`, expected a float in"):
        FrequencyWarp(value)


# ---- RandomEQ --------------------------------------------------------------


def test_random_eq_is_identity_at_inference():
    x = np.random.default_rng(0).normal(size=(2, 5, 10)).astype("float32")
    np.testing.assert_array_equal(RandomEQ(0.3)(x), x)
    np.testing.assert_array_equal(RandomEQ(0.0)(x, training=True), x)


def test_random_eq_adds_one_smooth_curve_per_utterance():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(64, 4, 20)).astype("float32")
    added = np.asarray(RandomEQ(0.5, seed=3)(features, training=True)) - features
    bands = np.arange(20)
    basis = np.stack([np.cos(np.pi * k * (bands + 0.5) / 20) for k in (1, 2, 3)], axis=1)  # (bands, 3)
    gains = []
    for curve in added:
        # The same curve on every frame of an utterance ...
        np.testing.assert_allclose(curve, np.broadcast_to(curve[0], curve.shape), atol=1e-5)
        # ... a sum of the first three cosines of the band axis, each gain within +-0.5.
        solution, *_ = np.linalg.lstsq(basis, curve[0], rcond=None)
        np.testing.assert_allclose(basis @ solution, curve[0], atol=1e-5)
        gains.append(solution)
    gains = np.array(gains)
    assert np.abs(gains).max() <= 0.5 + 1e-5
    # Drawn per utterance and per cosine: both signs, spread over the range.
    assert (gains > 0.25).any(axis=0).all() and (gains < -0.25).any(axis=0).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_gain": -0.1}, "argument `max_gain`, expected a finite float >= 0, got -0.1"),
        ({"max_gain": float("inf")}, "argument `max_gain`, expected a finite float >= 0"),
        ({"max_gain": True}, "argument `max_gain`"),
        ({"max_gain": 0.3, "orders": 0}, "argument `orders`, expected a positive integer, got 0"),
    ],
)
def test_random_eq_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandomEQ(**kwargs)


def _check_training_only_layer(model, name, attribute, value, tmp_path, **builder):
    """`model`'s layer `name` (no weights, `attribute` == value) changes the
    outputs in training only, and survives a save and load."""
    assert getattr(model.get_layer(name), attribute) == value
    inputs = _inputs([9, 5], 9)
    plain = build_transcription_model(**builder, **SMALL)
    assert name not in [layer.name for layer in plain.layers]  # off: the graph as before
    plain.set_weights(model.get_weights())  # the layer has no weights
    np.testing.assert_allclose(model(inputs)["log_probs"], plain(inputs)["log_probs"], atol=1e-6)
    trained = np.asarray(model(inputs, training=True)["log_probs"])
    assert np.abs(trained - np.asarray(plain(inputs)["log_probs"])).max() > 1e-3
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert getattr(loaded.get_layer(name), attribute) == value
    np.testing.assert_allclose(loaded(inputs)["log_probs"], model(inputs)["log_probs"], atol=1e-6)


def test_random_eq_in_the_model_trains_saves_and_serves_as_identity(tmp_path):
    model = build_transcription_model(frame_stack=2, random_eq=0.3, **SMALL)
    assert model.get_layer("random_eq").get_config()["max_gain"] == 0.3
    _check_training_only_layer(model, "random_eq", "max_gain", 0.3, tmp_path, frame_stack=2)


def test_input_noise_in_the_model_is_training_only_and_saves(tmp_path):
    model = build_transcription_model(frame_stack=2, input_noise=0.5, **SMALL)
    layer = model.get_layer("input_noise")
    assert isinstance(layer, keras.layers.GaussianNoise)
    # After the stacking, on every stacked feature, with the standard deviation asked for.
    stacked = np.zeros((4, 300, 2 * SMALL["num_features"]), "float32")
    noise = np.asarray(layer(stacked, training=True))
    assert abs(noise.std() - 0.5) < 0.01 and abs(noise.mean()) < 0.01
    np.testing.assert_array_equal(layer(stacked, training=False), stacked)
    _check_training_only_layer(model, "input_noise", "stddev", 0.5, tmp_path, frame_stack=2)


def test_weight_noise_moves_the_step_and_leaves_only_the_update(tmp_path):
    # One Adam step with weight noise equals a step taken from the noisy
    # weights, with the noise taken off afterwards; it differs from a step
    # without noise, and the noise has the standard deviation asked for.
    inputs = _inputs([9, 5], 9)
    labels = np.array([[2, 3, 3], [4, 2, 0]], "int32")
    builder = dict(frame_stack=2, learning_rate=0.01, **{**SMALL, "hidden_size": 16})
    noisy = build_transcription_model(weight_noise=0.2, weight_noise_seed=7, **builder)
    start = noisy.get_weights()
    noises = [np.asarray(noise) for noise in noisy.weight_noises(0)]
    flat = np.concatenate([noise.ravel() for noise in noises])
    assert flat.size > 2000 and abs(flat.std() - 0.2) < 0.01 and abs(flat.mean()) < 0.01
    assert not np.allclose(noises[0], np.asarray(noisy.weight_noises(1)[0]))  # fresh each step

    from_noisy = build_transcription_model(**builder)
    from_noisy.set_weights([weight + noise for weight, noise in zip(start, noises)])
    plain = build_transcription_model(**builder)
    plain.set_weights(start)
    for model in (noisy, from_noisy, plain):
        model.train_on_batch(inputs, labels)
    expected = [weight - noise for weight, noise in zip(from_noisy.get_weights(), noises)]
    for got, want in zip(noisy.get_weights(), expected):
        np.testing.assert_allclose(got, want, atol=1e-5)
    moved = max(np.abs(a - b).max() for a, b in zip(noisy.get_weights(), plain.get_weights()))
    assert moved > 5e-3  # Adam's first step is about 0.01 * sign(gradient): some signs flipped
    # A plain attribute: the saved model has the same weights and trains without noise.
    noisy.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.weight_noise == 0.0
    np.testing.assert_allclose(loaded(inputs)["log_probs"], noisy(inputs)["log_probs"], atol=1e-6)


def test_weight_noise_seed_is_drawn_from_pythons_random():
    keras.utils.set_random_seed(3)
    first = build_transcription_model(weight_noise=0.1, **SMALL).weight_noise_seed
    keras.utils.set_random_seed(3)
    assert build_transcription_model(weight_noise=0.1, **SMALL).weight_noise_seed == first
    assert build_transcription_model(**SMALL).weight_noise == 0.0


# ---- the model -------------------------------------------------------------


@pytest.mark.parametrize("frame_stack,time", [(1, 7), (3, 7), (3, 12), (4, 13)])
def test_output_shapes_follow_dynamic_time(frame_stack, time):
    model = build_transcription_model(frame_stack=frame_stack, **SMALL)
    outputs = model(_inputs([time, 2], time))
    steps = -(-time // frame_stack)
    assert tuple(outputs["log_probs"].shape) == (2, steps, 5)
    np.testing.assert_array_equal(
        outputs["frame_length"], [steps, -(-2 // frame_stack)]
    )
    # A proper distribution over the classes at every frame.
    np.testing.assert_allclose(
        np.exp(np.asarray(outputs["log_probs"])).sum(-1), 1.0, rtol=1e-5
    )


def test_one_model_handles_different_lengths():
    model = build_transcription_model(frame_stack=2, **SMALL)
    assert tuple(model.get_layer("features").output.shape) == (None, None, 6)
    for time in (3, 10, 31):
        assert model(_inputs([time], time))["log_probs"].shape[1] == -(-time // 2)


def test_padding_does_not_change_valid_outputs():
    model = build_transcription_model(frame_stack=3, **SMALL)
    short = _inputs([10, 7, 4], 10)
    padded = {
        "features": np.concatenate(
            [short["features"], np.random.default_rng(9).normal(size=(3, 8, 6)).astype("float32")],
            axis=1,
        ),
        "feature_length": short["feature_length"],
    }
    a = model(short)
    b = model(padded)
    np.testing.assert_array_equal(a["frame_length"], b["frame_length"])
    for row, n in enumerate(np.asarray(a["frame_length"])):
        np.testing.assert_allclose(
            np.asarray(a["log_probs"])[row, :n], np.asarray(b["log_probs"])[row, :n], atol=1e-5
        )


def test_layers_are_named_elman_and_bidirectional():
    model = build_transcription_model(frame_stack=3, **SMALL)
    names = [layer.name for layer in model.layers]
    assert names == [
        "features", "feature_length", "frame_stacking", "dense_0",
        "rnn_0", "rnn_1", "logits", "log_probs",
    ]
    assert isinstance(model, CTCModel)
    for name in ("rnn_0", "rnn_1"):
        layer = model.get_layer(name)
        assert isinstance(layer, keras.layers.Bidirectional)
        assert isinstance(layer.forward_layer, ElmanRNN)
        assert isinstance(layer.forward_layer.cell, ElmanCell)
        assert layer.forward_layer.cell.units == 8
    assert model.get_layer("rnn_1").output.shape[-1] == 16


def test_unidirectional_and_dropout_layers():
    model = build_transcription_model(
        num_features=6, vocabulary_size=5, hidden_size=8, num_layers=1,
        bidirectional=False, dropout=0.2, num_dense_layers=0, frequency_warp=0.1,
    )
    names = sorted(layer.name for layer in model.layers)
    assert names == sorted([
        "features", "feature_length", "frequency_warp", "frame_stacking", "input_dropout",
        "rnn_0", "dropout_0", "logits", "log_probs",
    ])
    assert isinstance(model.get_layer("rnn_0"), ElmanRNN)
    assert model.get_layer("rnn_0").output.shape[-1] == 8


def test_save_and_load_round_trip(tmp_path):
    model = build_transcription_model(frame_stack=2, **SMALL)
    inputs = _inputs([9, 5], 9)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, CTCModel)
    np.testing.assert_allclose(
        loaded(inputs)["log_probs"], model(inputs)["log_probs"], atol=1e-6
    )


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("num_features", 0, "`num_features`, expected a positive integer, got 0"),
        ("vocabulary_size", 1, "`vocabulary_size`, expected at least 2"),
        ("hidden_size", -3, "`hidden_size`, expected a positive integer, got -3"),
        ("num_layers", 1.0, "`num_layers`, expected a positive integer, got 1.0"),
        ("frame_stack", 0, "`frame_stack`, expected a positive integer, got 0"),
        ("dropout", 1.0, r"`dropout`, expected a float in \[0, 1\), got 1.0"),
        ("activation", "softmax", "`activation`, expected 'tanh' or 'relu'"),
        ("learning_rate", 0, "`learning_rate`, expected a positive float"),
        ("num_dense_layers", -1, "`num_dense_layers`, expected a non-negative integer"),
        ("frequency_warp", 0.5, r"`max_warp`, expected a float in \[0, 0.5\)"),
        ("random_eq", -1.0, r"`max_gain`, expected a finite float >= 0"),
        ("input_noise", -0.1, r"`input_noise`, expected a finite float >= 0, got -0.1"),
        ("input_noise", float("inf"), r"`input_noise`, expected a finite float >= 0, got inf"),
        ("input_noise", True, r"`input_noise`, expected a finite float >= 0, got True"),
        ("weight_noise", -0.1, r"`weight_noise`, expected a finite float >= 0, got -0.1"),
        ("weight_noise", float("nan"), r"`weight_noise`, expected a finite float >= 0, got nan"),
        ("weight_noise_seed", 1.5, r"`weight_noise_seed`, expected None or an integer, got 1.5"),
        ("dtype_policy", "bfloat16", r"`dtype_policy`, expected one of \('float32', 'mixed_bfloat16', "
                                     r"'mixed_float16'\), got 'bfloat16'"),
    ],
)
def test_builder_rejects_bad_arguments(name, value, message):
    with pytest.raises(ValueError, match=message):
        build_transcription_model(**{**SMALL, name: value})


def test_builder_refuses_weight_noise_with_a_moving_average():
    with pytest.raises(ValueError, match="`weight_noise` and `ema_momentum` together"):
        build_transcription_model(weight_noise=0.1, ema_momentum=0.99, **SMALL)


def test_builder_rejects_non_bool_bidirectional():
    with pytest.raises(TypeError, match="`bidirectional`, expected a bool, got 'yes'"):
        build_transcription_model(**SMALL, bidirectional="yes")


# ---- CTC loss --------------------------------------------------------------


def test_ctc_loss_matches_hand_computed_value():
    # Classes: 0 = blank, 2 = 'a' (id 1, unknown, gets no mass here).
    p = np.array([[0.6, 0.0, 0.4], [0.3, 0.0, 0.7]])
    log_probs = np.log(np.clip(p, 1e-12, 1))[None].astype("float32")
    # Paths for "a" over 2 frames: a a, a -, - a.
    expected = -np.log(0.4 * 0.7 + 0.4 * 0.3 + 0.6 * 0.7)
    loss = ctc_loss(np.array([[2]], "int32"), log_probs, np.array([2], "int32"))
    np.testing.assert_allclose(loss, [expected], rtol=1e-5)


def test_ctc_loss_equals_keras_ctc_without_padding():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6, 5)).astype("float32")
    labels = rng.integers(2, 5, size=(3, 3)).astype("int32")
    ours = ctc_loss(labels, logits, np.full((3,), 6, "int32"))
    reference = keras.losses.CTC(reduction=None)(labels, logits)
    np.testing.assert_allclose(ours, reference, rtol=1e-5)


def test_padding_does_not_change_ctc_loss():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 6, 5)).astype("float32")
    labels = np.array([[2, 3, 3], [4, 2, 0]], "int32")  # second padded by pad_id
    lengths = np.array([6, 4], "int32")
    base = np.stack([
        ctc_loss(labels[:1], logits[:1], lengths[:1])[0],
        ctc_loss(labels[1:, :2], logits[1:, :4], lengths[1:])[0],
    ])
    padded_logits = np.concatenate([logits, rng.normal(size=(2, 5, 5)).astype("float32")], axis=1)
    padded_labels = np.pad(labels, [[0, 0], [0, 4]], constant_values=Vocabulary.pad_id)
    np.testing.assert_allclose(ctc_loss(labels, logits, lengths), base, rtol=1e-5)
    np.testing.assert_allclose(ctc_loss(padded_labels, padded_logits, lengths), base, rtol=1e-5)


def test_ctc_loss_and_gradient_equal_keras_ops_ctc_loss_with_padding():
    # On TensorFlow ctc_loss runs the C++ kernel (sparse labels); it must give
    # keras.ops.ctc_loss's numbers (dense labels) for loss and gradient.
    import tensorflow as tf

    rng = np.random.default_rng(5)
    logits = tf.constant(rng.normal(size=(5, 20, 7)).astype("float32"))
    # Rows: full, padded, one character, repeats, and an empty target (all blanks).
    labels = np.array(
        [[2, 3, 3, 4, 5], [6, 2, 0, 0, 0], [1, 0, 0, 0, 0], [4, 4, 4, 5, 6], [0, 0, 0, 0, 0]], "int32"
    )
    frames = np.array([20, 9, 3, 14, 6], "int32")
    label_length = (labels != Vocabulary.pad_id).sum(axis=1).astype("int32")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        ours = ctc_loss(labels, logits, frames)
        theirs = keras.ops.ctc_loss(labels, logits, label_length, frames, mask_index=Vocabulary.blank_id)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(ours, logits), tape.gradient(theirs, logits), atol=1e-5)


def test_infeasible_utterance_contributes_zero_and_finite_gradients():
    import tensorflow as tf

    logits = tf.Variable(np.random.default_rng(2).normal(size=(2, 3, 5)).astype("float32"))
    # "aa" needs 3 frames (a, blank, a); "aaa" needs 5 and has 3.
    labels = np.array([[2, 2, 0], [2, 2, 2]], "int32")
    with tf.GradientTape() as tape:
        loss = ctc_loss(labels, logits, np.array([3, 3], "int32"))
    gradient = tape.gradient(loss, logits)
    assert np.isfinite(loss.numpy()[0]) and loss.numpy()[0] > 0
    assert loss.numpy()[1] == 0.0
    assert np.all(np.isfinite(gradient.numpy()))
    np.testing.assert_array_equal(gradient.numpy()[1], 0.0)


def test_model_loss_is_mean_ctc_on_model_lengths():
    model = build_transcription_model(frame_stack=2, **SMALL)
    inputs = _inputs([8, 5], 8)
    labels = np.array([[2, 3], [4, 0]], "int32")
    outputs = model(inputs)
    expected = np.mean(ctc_loss(labels, outputs["log_probs"], outputs["frame_length"]))
    np.testing.assert_allclose(
        model.compute_loss(x=inputs, y=labels, y_pred=outputs), expected, rtol=1e-5
    )
    np.testing.assert_allclose(model.evaluate(inputs, labels, verbose=0), expected, rtol=1e-4)

"""ElmanCell inside keras.layers.RNN: equivalence, NumPy reference, BPTT, errors."""

import numpy as np
import pytest
import tensorflow as tf

import keras
from layers import ElmanCell

BATCH, TIME, FEATURES, UNITS, OUTPUTS = 3, 7, 5, 4, 6


def _inputs(seed=0, shape=(BATCH, TIME, FEATURES), dtype="float32"):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _pair(*, elman_kwargs=None, rnn_kwargs=None):
    """An RNN(ElmanCell) and a SimpleRNN with the same weights."""
    elman_kwargs = elman_kwargs or {}
    rnn_kwargs = rnn_kwargs or {}
    ours = keras.layers.RNN(ElmanCell(UNITS, **elman_kwargs), **rnn_kwargs)
    builtin = keras.layers.SimpleRNN(
        UNITS, activation=elman_kwargs.get("activation", "tanh"), **rnn_kwargs
    )
    x = _inputs()
    ours(x)
    builtin(x)
    builtin.set_weights(ours.get_weights())
    return ours, builtin


def _numpy_elman(x, kernel, recurrent, bias, h0=None, out_kernel=None, out_bias=None, f=np.tanh):
    """The two equations, written out step by step."""
    batch, time, _ = x.shape
    h = np.zeros((batch, recurrent.shape[0]), x.dtype) if h0 is None else h0
    hs, ys = [], []
    for t in range(time):
        h = f(x[:, t] @ kernel + h @ recurrent + bias)
        hs.append(h)
        if out_kernel is not None:
            ys.append(h @ out_kernel + out_bias)
    return np.stack(hs, 1), (np.stack(ys, 1) if ys else None)


def _grads(layer, x, **call_kwargs):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, **call_kwargs)
        out = out[0] if isinstance(out, (list, tuple)) else out
        # A fixed, non-uniform weighting so every output element matters.
        weights = tf.reshape(tf.range(tf.size(out), dtype=out.dtype), out.shape) / 10.0
        loss = tf.reduce_sum(tf.sin(out * weights))
    return tape.gradient(loss, [x, *layer.trainable_variables]), out


@pytest.mark.parametrize(
    "rnn_kwargs",
    [
        {},
        {"return_sequences": True},
        {"return_sequences": True, "go_backwards": True},
        {"go_backwards": True},
    ],
    ids=["last", "sequences", "sequences-backwards", "last-backwards"],
)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_matches_simple_rnn(rnn_kwargs, activation):
    ours, builtin = _pair(elman_kwargs={"activation": activation}, rnn_kwargs=rnn_kwargs)
    x = _inputs(1)
    g_ours, y_ours = _grads(ours, x)
    g_builtin, y_builtin = _grads(builtin, x)
    np.testing.assert_allclose(y_ours, y_builtin, atol=1e-5)
    for a, b in zip(g_ours, g_builtin):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("go_backwards", [False, True])
def test_matches_simple_rnn_with_mask(go_backwards):
    kwargs = {"return_sequences": True, "go_backwards": go_backwards}
    ours, builtin = _pair(rnn_kwargs=kwargs)
    x = _inputs(2)
    mask = np.ones((BATCH, TIME), bool)
    mask[0, 4:] = False
    mask[2, 2:] = False
    g_ours, y_ours = _grads(ours, x, mask=mask)
    g_builtin, y_builtin = _grads(builtin, x, mask=mask)
    np.testing.assert_allclose(y_ours, y_builtin, atol=1e-5)
    for a, b in zip(g_ours, g_builtin):
        np.testing.assert_allclose(a, b, atol=1e-4)
    # The state is carried over masked steps: row 2 stops changing after step 1.
    if not go_backwards:
        np.testing.assert_allclose(y_ours[2, 1], y_ours[2, -1], atol=0)


def test_matches_simple_rnn_with_initial_state():
    ours, builtin = _pair(rnn_kwargs={"return_sequences": True, "return_state": True})
    x = _inputs(3)
    h0 = _inputs(4, (BATCH, UNITS))
    y_ours, h_ours = ours(x, initial_state=[h0])
    y_builtin, h_builtin = builtin(x, initial_state=[h0])
    np.testing.assert_allclose(y_ours, y_builtin, atol=1e-5)
    np.testing.assert_allclose(h_ours, h_builtin, atol=1e-5)
    np.testing.assert_allclose(h_ours, y_ours[:, -1], atol=0)


def test_matches_simple_rnn_stateful():
    ours, builtin = _pair(rnn_kwargs={"stateful": True, "return_sequences": True})
    # _pair called both once (different weights then): start both from zeros.
    ours.reset_states()
    builtin.reset_states()
    x = _inputs(5)
    for chunk in (x[:, :3], x[:, 3:]):
        np.testing.assert_allclose(ours(chunk), builtin(chunk), atol=1e-5)
    # Two stateful chunks equal one pass over the whole sequence.
    whole = keras.layers.RNN(ElmanCell(UNITS), return_sequences=True)
    whole(x)
    whole.set_weights(ours.get_weights())
    ours.reset_states()
    first = ours(x[:, :3])
    second = ours(x[:, 3:])
    np.testing.assert_allclose(np.concatenate([first, second], 1), whole(x), atol=1e-5)


def test_matches_numpy_equations_with_output_layer():
    x = _inputs(6)
    h0 = _inputs(7, (BATCH, UNITS))
    cell = ElmanCell(UNITS, output_units=OUTPUTS)
    rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True)
    rnn(x)
    rng = np.random.default_rng(8)
    weights = [rng.normal(size=w.shape).astype("float32") * 0.5 for w in rnn.get_weights()]
    rnn.set_weights(weights)
    names = [w.path.split("/")[-1] for w in rnn.weights]
    assert names == ["kernel", "recurrent_kernel", "bias", "output_kernel", "output_bias"]
    y, h_last = rnn(x, initial_state=[h0])
    hs, ys = _numpy_elman(x, *weights[:3], h0=h0, out_kernel=weights[3], out_bias=weights[4])
    assert y.shape == (BATCH, TIME, OUTPUTS)
    np.testing.assert_allclose(y, ys, atol=1e-5)
    np.testing.assert_allclose(h_last, hs[:, -1], atol=1e-5)


def test_output_activation_and_relu_with_identity_init():
    cell = ElmanCell(
        UNITS,
        activation="relu",
        recurrent_initializer="identity",
        output_units=OUTPUTS,
        output_activation="softmax",
    )
    rnn = keras.layers.RNN(cell, return_sequences=True)
    y = rnn(_inputs(9))
    np.testing.assert_allclose(np.sum(y, -1), 1.0, atol=1e-5)
    np.testing.assert_allclose(cell.recurrent_kernel.numpy(), np.eye(UNITS), atol=0)


def test_bptt_gradients_match_finite_differences():
    x = _inputs(10, (2, 5, 3), dtype="float64")
    cell = ElmanCell(4, output_units=2, dtype="float64")
    rnn = keras.layers.RNN(cell, return_sequences=True, dtype="float64")
    rnn(x)

    def loss_fn():
        return tf.reduce_sum(tf.sin(rnn(x)))

    with tf.GradientTape() as tape:
        loss = loss_fn()
    grads = tape.gradient(loss, rnn.trainable_variables)
    eps = 1e-6
    for variable, grad in zip(rnn.trainable_variables, grads):
        value = variable.numpy()
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            for sign in (1, -1):
                shifted = value.copy()
                shifted[index] += sign * eps
                variable.assign(shifted)
                numeric[index] += sign * float(loss_fn()) / (2 * eps)
            variable.assign(value)
        np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-6, atol=1e-8)


def test_bidirectional_stacked_and_saved(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Bidirectional(
                keras.layers.RNN(ElmanCell(UNITS, dropout=0.1, seed=3), return_sequences=True)
            ),
            keras.layers.RNN(ElmanCell(UNITS, output_units=OUTPUTS)),
        ]
    )
    x = _inputs(11)
    expected = model(x)
    assert expected.shape == (BATCH, OUTPUTS)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x), expected, atol=0)
    cell = loaded.layers[-1].cell
    assert isinstance(cell, ElmanCell) and cell.output_units == OUTPUTS


def test_config_round_trip():
    cell = ElmanCell(
        8,
        activation="relu",
        output_units=3,
        output_activation="softmax",
        dropout=0.2,
        recurrent_dropout=0.1,
        seed=7,
        kernel_regularizer="l2",
    )
    config = cell.get_config()
    clone = ElmanCell.from_config(config)
    assert clone.get_config() == config
    assert config["output_units"] == 3 and config["units"] == 8


def test_callable_activation_round_trips(tmp_path):
    # A callable outside the named activations is accepted; its config used
    # to say "softsign", which the constructor refuses as a name, so
    # Bidirectional (which clones the layer from its config) and loading a
    # saved model failed.
    cell = ElmanCell(UNITS, activation=keras.activations.softsign)
    clone = ElmanCell.from_config(cell.get_config())
    assert clone.activation is keras.activations.softsign
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Bidirectional(keras.layers.RNN(cell, return_sequences=True)),
        ]
    )
    assert model.layers[0].backward_layer.cell.activation is keras.activations.softsign
    x = _inputs(12)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded(x), model(x), atol=0)
    # Named activations keep their plain names in the config.
    assert ElmanCell(UNITS, activation="relu").get_config()["activation"] == "relu"


def test_dropout_only_in_training():
    cell = ElmanCell(UNITS, dropout=0.5, recurrent_dropout=0.5, seed=1)
    rnn = keras.layers.RNN(cell, return_sequences=True)
    x = _inputs(12)
    inference = rnn(x, training=False)
    plain = keras.layers.RNN(ElmanCell(UNITS), return_sequences=True)  # the same weights, no dropout
    plain.build(x.shape)
    plain.set_weights(rnn.get_weights())
    np.testing.assert_allclose(inference, plain(x), atol=0)
    assert not np.allclose(rnn(x, training=True), plain(x))


@pytest.mark.parametrize(
    "kwargs, argument, received",
    [
        ({"units": 0}, "units", "0"),
        ({"units": -3}, "units", "-3"),
        ({"units": 2.5}, "units", "2.5"),
        ({"units": 4, "output_units": 0}, "output_units", "0"),
        ({"units": 4, "activation": "softmax"}, "activation", "'softmax'"),
        ({"units": 4, "activation": "no_such_fn"}, "activation", "'no_such_fn'"),
        ({"units": 4, "dropout": 1.0}, "dropout", "1.0"),
        ({"units": 4, "recurrent_dropout": -0.1}, "recurrent_dropout", "-0.1"),
        ({"units": 4, "seed": "abc"}, "seed", "'abc'"),
    ],
)
def test_invalid_arguments_name_argument_and_value(kwargs, argument, received):
    with pytest.raises(ValueError) as error:
        ElmanCell(**kwargs)
    message = str(error.value)
    assert f"`{argument}`" in message
    assert f"got {received}." in message

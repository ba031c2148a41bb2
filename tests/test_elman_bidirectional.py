"""ElmanBidirectional: both directions in one fused loop, against Keras' Bidirectional."""

from contextlib import nullcontext

import numpy as np
import pytest
import tensorflow as tf

import keras
from layers import ElmanBidirectional, ElmanCell, ElmanRNN
from layers import fused_elman
from layers.fused_elman import batch_shards, xla_disabled

BATCH, TIME, FEATURES, UNITS = 3, 6, 4, 5

# Row 0 full, row 1 right-padded (the common case), row 2 all padding.
RIGHT_PADDED = np.array(
    [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], bool
)
# Holes and a late start: Keras semantics hold for any pattern.
SCATTERED = np.array(
    [[1, 0, 1, 1, 0, 1], [0, 0, 1, 0, 1, 0], [1, 1, 0, 0, 0, 1]], bool
)


@pytest.fixture
def fused_calls(monkeypatch):
    """How many times the one-loop bidirectional recurrence ran."""
    calls = []
    original = fused_elman.elman_bidirectional

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(fused_elman, "elman_bidirectional", counting)
    return calls


def _inputs(seed=0, shape=(BATCH, TIME, FEATURES)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _loss(outputs):
    """A fixed, non-uniform weighting so every output element matters."""
    total = 0.0
    for out in outputs:
        weights = tf.reshape(
            tf.range(tf.size(out), dtype=out.dtype), tf.shape(out)
        ) / tf.cast(tf.size(out), out.dtype)
        total += tf.reduce_sum(tf.sin(out * (1.0 + weights)))
    return total


def _run(layer, x, **call_kwargs):
    """Outputs (as a list) and gradients w.r.t. x and every weight."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, **call_kwargs)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        loss = _loss(outs)
    grads = tape.gradient(loss, [x, *layer.trainable_variables])
    return [o.numpy() for o in outs], [g.numpy() for g in grads]


def _assert_close(ours, theirs):
    (outs, grads), (ref_outs, ref_grads) = ours, theirs
    assert len(outs) == len(ref_outs) and len(grads) == len(ref_grads)
    for a, b in zip(outs, ref_outs):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def _twins(reference="simple_rnn", cell_kwargs=None, rnn_kwargs=None, **wrapper_kwargs):
    """ElmanBidirectional and keras.layers.Bidirectional over `reference`,
    with the same weights."""
    cell_kwargs = dict(cell_kwargs or {})
    rnn_kwargs = {"return_sequences": True, **(rnn_kwargs or {})}
    fused = ElmanBidirectional(
        ElmanRNN(ElmanCell(UNITS, **cell_kwargs), **rnn_kwargs), **wrapper_kwargs
    )
    if reference == "simple_rnn":
        inner = keras.layers.SimpleRNN(UNITS, **cell_kwargs, **rnn_kwargs)
    elif reference == "step_loop":
        inner = keras.layers.RNN(ElmanCell(UNITS, **cell_kwargs), **rnn_kwargs)
    else:  # Keras' own two-layer wrapper around the fused ElmanRNN
        inner = ElmanRNN(ElmanCell(UNITS, **cell_kwargs), **rnn_kwargs)
    twin = keras.layers.Bidirectional(inner, **wrapper_kwargs)
    fused.build((None, TIME, FEATURES))
    twin.build((None, TIME, FEATURES))
    weights = [
        np.random.default_rng(i + 10).normal(size=w.shape).astype("float32") * 0.5
        for i, w in enumerate(fused.get_weights())
    ]
    fused.set_weights(weights)
    twin.set_weights(weights)
    return fused, twin


@pytest.mark.parametrize("reference", ["simple_rnn", "step_loop", "elman_rnn"])
@pytest.mark.parametrize(
    "mask", [None, RIGHT_PADDED, SCATTERED], ids=["no_mask", "right_padded", "scattered"]
)
@pytest.mark.parametrize(
    "cell_kwargs",
    [{}, {"activation": "relu"}, {"activation": "sigmoid", "use_bias": False}],
    ids=["tanh", "relu", "sigmoid_no_bias"],
)
def test_one_loop_matches_keras_bidirectional(reference, mask, cell_kwargs, fused_calls):
    fused, twin = _twins(reference, cell_kwargs)
    assert fused.fused_reason is None
    x = _inputs()
    for training in (False, True):
        kwargs = {"training": training} if mask is None else {"training": training, "mask": mask}
        ours = _run(fused, x, **kwargs)
        assert len(fused_calls) == (2 if training else 1)
        _assert_close(ours, _run(twin, x, **kwargs))
    if mask is not None:
        # Zeros at masked steps (Bidirectional's zero_output_for_mask).
        np.testing.assert_array_equal(ours[0][0][~mask], 0.0)


@pytest.mark.parametrize("shards", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("xla", [True, False], ids=["xla", "no_xla"])
def test_batch_shards_and_xla_give_the_same_numbers(shards, batch, xla, fused_calls):
    # Batch 1 with 2 or 3 shards leaves empty shards; batch 3 with 2 splits 2 + 1.
    fused, twin = _twins()
    x = _inputs(3, (batch, TIME, FEATURES))
    mask = SCATTERED[:batch]
    with batch_shards(shards), (nullcontext() if xla else xla_disabled()):
        ours = _run(fused, x, mask=mask, training=True)
    assert fused_calls
    _assert_close(ours, _run(twin, x, mask=mask, training=True))


def test_wide_layers_with_column_blocks_match():
    # 512 units, two shards: each step's product is split into column blocks.
    x = _inputs(4, (4, 5, 8))
    fused = ElmanBidirectional(ElmanRNN(ElmanCell(512), return_sequences=True))
    twin = keras.layers.Bidirectional(keras.layers.SimpleRNN(512, return_sequences=True))
    fused.build((None, 5, 8))
    twin.build((None, 5, 8))
    weights = [
        np.random.default_rng(i).normal(size=w.shape).astype("float32") * 0.05
        for i, w in enumerate(fused.get_weights())
    ]
    fused.set_weights(weights)
    twin.set_weights(weights)
    assert fused_elman._column_blocks(512, 2) > 1
    mask = np.ones((4, 5), bool)
    mask[1, 3:] = False
    with batch_shards(2):
        ours = _run(fused, x, mask=mask)
    _assert_close(ours, _run(twin, x, mask=mask))


@pytest.mark.parametrize(
    "cell_kwargs, rnn_kwargs, wrapper_kwargs, needle",
    [
        ({}, {}, {"merge_mode": "sum"}, "merge_mode='sum'"),
        ({}, {}, {"merge_mode": None}, "merge_mode=None"),
        ({}, {"return_sequences": False}, {}, "return_sequences=False"),
        ({}, {"return_state": True}, {}, "return_state=True"),
        ({}, {"unroll": True}, {}, "unroll=True"),
        ({"activation": keras.activations.softsign}, {}, {}, "activation"),
    ],
    ids=["sum", "no_merge", "last_output", "return_state", "unroll", "softsign"],
)
def test_falls_back_to_keras_with_a_reason(
    cell_kwargs, rnn_kwargs, wrapper_kwargs, needle, fused_calls
):
    # A callable activation: ElmanCell accepts it, the fused loops do not.
    fused, twin = _twins("step_loop", cell_kwargs, rnn_kwargs, **wrapper_kwargs)
    assert needle in fused.fused_reason
    x = _inputs()
    _assert_close(_run(fused, x, mask=RIGHT_PADDED), _run(twin, x, mask=RIGHT_PADDED))
    assert not fused_calls


def test_output_units_fall_back():
    layer = ElmanBidirectional(
        ElmanRNN(ElmanCell(UNITS, output_units=2), return_sequences=True)
    )
    layer.build((None, TIME, FEATURES))
    assert "output_units" in layer.fused_reason
    assert layer(_inputs()).shape == (BATCH, TIME, 4)


def test_initial_state_falls_back(fused_calls):
    fused, twin = _twins("step_loop")
    states = [np.full((BATCH, UNITS), 0.3 * (i + 1), "float32") for i in range(2)]
    x = tf.constant(_inputs())
    np.testing.assert_allclose(
        fused(x, initial_state=states), twin(x, initial_state=states), atol=1e-5
    )
    assert not fused_calls
    fused(x)
    assert len(fused_calls) == 1


def test_cell_dropout_falls_back_only_in_training(fused_calls):
    fused, twin = _twins("step_loop", {"dropout": 0.3, "recurrent_dropout": 0.2})
    assert "dropout=0.3" in fused.fused_reason
    x = _inputs()
    fused(x, training=True)
    assert not fused_calls
    _assert_close(_run(fused, x, mask=SCATTERED), _run(twin, x, mask=SCATTERED))
    assert len(fused_calls) == 1


def test_rejects_other_layers():
    with pytest.raises(TypeError, match="`layer`, expected an ElmanRNN, got SimpleRNN"):
        ElmanBidirectional(keras.layers.SimpleRNN(3, return_sequences=True))
    with pytest.raises(TypeError, match="`backward_layer`, expected an ElmanRNN, got RNN"):
        ElmanBidirectional(
            ElmanRNN(ElmanCell(3), return_sequences=True),
            backward_layer=keras.layers.RNN(ElmanCell(3), return_sequences=True, go_backwards=True),
        )


def _stack(bidirectional_factory, layer_factory):
    inputs = keras.Input((None, FEATURES))
    x = keras.layers.Masking(0.0)(inputs)
    for i in range(2):
        layer = layer_factory(ElmanCell(UNITS), return_sequences=True, name=f"rnn_{i}")
        x = bidirectional_factory(layer, name=f"birnn_{i}")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


def _padded_inputs():
    x = _inputs()
    x[~RIGHT_PADDED] = 0.0  # Masking(0.0) turns these into the mask
    return x


def test_stacked_model_matches_and_saves(tmp_path, fused_calls):
    model = _stack(ElmanBidirectional, ElmanRNN)
    twin = _stack(keras.layers.Bidirectional, keras.layers.RNN)
    twin.set_weights(model.get_weights())
    x = _padded_inputs()
    _assert_close(_run(model, x), _run(twin, x))
    assert len(fused_calls) == 2

    expected = model(x).numpy()
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.get_layer("birnn_1"), ElmanBidirectional)
    np.testing.assert_allclose(loaded(x), expected, atol=1e-6)
    # The same variables, in the same order, as keras.layers.Bidirectional
    # (`twin` above took them with set_weights). Weights files are another
    # matter: Keras keys a layer's weights there by its class name.
    plain = _stack(keras.layers.Bidirectional, ElmanRNN)
    plain.set_weights(loaded.get_weights())
    np.testing.assert_allclose(plain(x), expected, atol=1e-5)


def test_savedmodel_trace_with_dynamic_shapes_without_xla(tmp_path):
    model = _stack(ElmanBidirectional, ElmanRNN)
    signature = tf.TensorSpec((None, None, FEATURES), tf.float32)

    class Exported(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[signature])
        def serve(self, x):
            return self.model(x, training=False)

    with xla_disabled():
        tf.saved_model.save(Exported(model), str(tmp_path / "sm"))
    reloaded = tf.saved_model.load(str(tmp_path / "sm"))
    for batch, time in ((2, 3), (5, TIME)):
        x = _inputs(batch, (batch, time, FEATURES))
        x[:, -1] = 0.0  # a padded last step
        np.testing.assert_allclose(reloaded.serve(x), model(x), atol=1e-5)

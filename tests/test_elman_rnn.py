"""ElmanRNN: the fused path against Keras' step loop and SimpleRNN."""

import contextlib
import numpy as np
import pytest
import tensorflow as tf

import keras
from keras import initializers
from layers import Bidirectional, ElmanCell, ElmanRNN
from layers import fused_elman
from layers.fused_elman import batch_shards, elman_recurrence, side_by_side, xla_disabled

BATCH, TIME, FEATURES, UNITS, OUTPUTS = 3, 6, 4, 5, 3

# Row 0 full, row 1 right-padded (the common case), row 2 all padding.
RIGHT_PADDED = np.array(
    [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], bool
)
# Holes and a late start: Keras semantics hold for any pattern.
SCATTERED = np.array(
    [[1, 0, 1, 1, 0, 1], [0, 0, 1, 0, 1, 0], [1, 1, 0, 0, 0, 1]], bool
)


def _inputs(seed=0, shape=(BATCH, TIME, FEATURES), dtype="float32"):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


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
    """Outputs (as a list) and gradients w.r.t. x, h0 and every weight."""
    x = tf.constant(x)
    watched = [x]
    if "initial_state" in call_kwargs:
        call_kwargs["initial_state"] = [
            tf.constant(s) for s in call_kwargs["initial_state"]
        ]
        watched += call_kwargs["initial_state"]
    with tf.GradientTape() as tape:
        tape.watch(watched)
        out = layer(x, **call_kwargs)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        loss = _loss(outs)
    grads = tape.gradient(loss, watched + list(layer.trainable_variables))
    return [o.numpy() for o in outs], [g.numpy() for g in grads]


def _twins(cell_kwargs=None, rnn_kwargs=None, builtin=False):
    """ElmanRNN and a reference layer with the same weights."""
    cell_kwargs = dict(cell_kwargs or {})
    rnn_kwargs = dict(rnn_kwargs or {})
    fused = ElmanRNN(ElmanCell(UNITS, **cell_kwargs), **rnn_kwargs)
    if builtin:
        reference = keras.layers.SimpleRNN(UNITS, **cell_kwargs, **rnn_kwargs)
    else:
        reference = keras.layers.RNN(
            ElmanCell(UNITS, **cell_kwargs), **rnn_kwargs
        )
    fused.build((None, TIME, FEATURES))
    reference.build((None, TIME, FEATURES))
    weights = [
        np.random.default_rng(i + 10).normal(size=w.shape).astype("float32")
        * 0.5
        for i, w in enumerate(fused.get_weights())
    ]
    fused.set_weights(weights)
    reference.set_weights(weights)
    return fused, reference


def _assert_close(fused_run, reference_run):
    (ours, our_grads), (theirs, their_grads) = fused_run, reference_run
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    assert len(our_grads) == len(their_grads)
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def _assert_same(fused, reference, x, **call_kwargs):
    ours, our_grads = _run(fused, x, **call_kwargs)
    theirs, their_grads = _run(reference, x, **call_kwargs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    assert len(our_grads) == len(their_grads)
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    return ours


CASES = [
    ({}, {}),
    ({}, {"return_sequences": True}),
    ({}, {"return_sequences": True, "go_backwards": True}),
    ({}, {"return_state": True}),
    ({}, {"return_sequences": True, "return_state": True}),
    ({}, {"go_backwards": True, "return_state": True}),
    ({}, {"return_sequences": True, "zero_output_for_mask": True}),
    ({"activation": "relu"}, {"return_sequences": True}),
    ({"activation": "sigmoid", "use_bias": False}, {"return_sequences": True}),
]


@pytest.mark.parametrize("mask", [None, RIGHT_PADDED, SCATTERED],
                         ids=["no_mask", "right_padded", "scattered"])
@pytest.mark.parametrize("cell_kwargs, rnn_kwargs", CASES)
def test_matches_step_loop_and_simple_rnn(cell_kwargs, rnn_kwargs, mask):
    fused, step_loop = _twins(cell_kwargs, rnn_kwargs)
    builtin = keras.layers.SimpleRNN(UNITS, **cell_kwargs, **rnn_kwargs)
    builtin.build((None, TIME, FEATURES))
    builtin.set_weights(fused.get_weights())
    assert fused.fused_reason is None
    x = _inputs()
    expected = _run(fused, x, mask=mask)
    for reference in (step_loop, builtin):
        _assert_close(expected, _run(reference, x, mask=mask))


@pytest.mark.parametrize("mask", [None, RIGHT_PADDED, SCATTERED],
                         ids=["no_mask", "right_padded", "scattered"])
@pytest.mark.parametrize(
    "rnn_kwargs",
    [{"return_sequences": True}, {"return_sequences": True, "go_backwards": True},
     {"return_state": True}],
)
def test_output_layer_matches_step_loop(rnn_kwargs, mask):
    cell_kwargs = {"output_units": OUTPUTS, "output_activation": "tanh"}
    fused, reference = _twins(cell_kwargs, rnn_kwargs)
    out = _assert_same(fused, reference, _inputs(), mask=mask)
    assert out[0].shape[-1] == OUTPUTS


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("builtin", [False, True], ids=["rnn_cell", "simple"])
def test_initial_state_matches(go_backwards, builtin):
    fused, reference = _twins(
        rnn_kwargs={"return_sequences": True, "return_state": True,
                    "go_backwards": go_backwards},
        builtin=builtin,
    )
    h0 = _inputs(1, (BATCH, UNITS))
    _assert_same(
        fused, reference, _inputs(), initial_state=[h0], mask=RIGHT_PADDED
    )


def test_right_padded_outputs_follow_keras_semantics():
    fused, _ = _twins(rnn_kwargs={"return_sequences": True, "return_state": True})
    x = _inputs()
    outputs, state = fused(x, mask=RIGHT_PADDED)
    outputs, state = outputs.numpy(), state.numpy()
    # Padded steps repeat the last real output; the state stops there too.
    np.testing.assert_array_equal(outputs[1, 3:], np.repeat(outputs[1, 2:3], 3, 0))
    np.testing.assert_array_equal(state[1], outputs[1, 2])
    # A row with no real step gives zero outputs and the initial state.
    np.testing.assert_array_equal(outputs[2], 0.0)
    np.testing.assert_array_equal(state[2], 0.0)
    # Padding values do not matter.
    x2 = x.copy()
    x2[1, 3:] = 100.0
    np.testing.assert_array_equal(fused(x2, mask=RIGHT_PADDED)[0][1], outputs[1])


def test_dropout_stays_fused_and_matches_step_loop():
    cell_kwargs = {"dropout": 0.5, "seed": 7}
    fused, reference = _twins(cell_kwargs, {"return_sequences": True})
    assert fused.fused_reason is None
    x = _inputs()
    ours, our_grads = _run(fused, x, training=True)
    theirs, their_grads = _run(reference, x, training=True)
    np.testing.assert_allclose(ours[0], theirs[0], atol=1e-5)
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_allclose(a, b, atol=1e-4)
    # Some inputs really were dropped (and scaled by 2).
    assert np.any(our_grads[0] == 0.0)
    # Inference ignores dropout.
    _assert_same(fused, reference, x, training=False)


@pytest.mark.parametrize(
    "cell_kwargs, rnn_kwargs, call_kwargs, needle",
    [
        ({"recurrent_dropout": 0.3, "seed": 1}, {}, {"training": True},
         "recurrent_dropout"),
        ({}, {"unroll": True}, {}, "unroll"),
        ({"activation": keras.activations.softsign}, {}, {}, "activation"),
    ],
    ids=["recurrent_dropout", "unroll", "custom_activation"],
)
def test_falls_back_with_a_reason(cell_kwargs, rnn_kwargs, call_kwargs, needle):
    if callable(cell_kwargs.get("activation")):
        # ElmanCell accepts callables; only named ones can be fused.
        fused = ElmanRNN(ElmanCell(UNITS, **cell_kwargs), **rnn_kwargs)
        reference = keras.layers.RNN(
            ElmanCell(UNITS, **cell_kwargs), **rnn_kwargs
        )
        fused.build((None, TIME, FEATURES))
        reference.build((None, TIME, FEATURES))
        reference.set_weights(fused.get_weights())
    else:
        fused, reference = _twins(cell_kwargs, rnn_kwargs)
    assert isinstance(fused.fused_reason, str)
    assert needle in fused.fused_reason
    x = _inputs()
    if call_kwargs.get("training"):
        # Recurrent dropout: the step loop runs; same seed, same numbers.
        np.testing.assert_allclose(
            fused(x, training=True), reference(x, training=True), atol=1e-6
        )
        # Inference is still fused and still equal.
        _assert_same(fused, reference, x, mask=RIGHT_PADDED)
    else:
        _assert_same(fused, reference, x, mask=RIGHT_PADDED)


def test_rejects_other_cells():
    with pytest.raises(TypeError, match="expected an ElmanCell, got SimpleRNNCell"):
        ElmanRNN(keras.layers.SimpleRNNCell(3))


def _stack(layer_factory, bidirectional, wrapper=keras.layers.Bidirectional):
    inputs = keras.Input((TIME, FEATURES))
    x = keras.layers.Masking(0.0)(inputs)
    for i in range(2):
        layer = layer_factory(ElmanCell(UNITS), return_sequences=True, name=f"rnn_{i}")
        if bidirectional:
            layer = wrapper(layer, name=f"birnn_{i}")
        x = layer(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


def _padded_inputs():
    x = _inputs()
    x[~RIGHT_PADDED] = 0.0  # Masking(0.0) turns these into the mask
    return x


def _model_grads(model, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = _loss([model(x)])
    return model(x).numpy(), [
        g.numpy() for g in tape.gradient(loss, [x, *model.trainable_variables])
    ]


@pytest.mark.parametrize(
    "bidirectional, wrapper",
    [(False, None), (True, keras.layers.Bidirectional), (True, Bidirectional)],
    ids=["stacked", "bidirectional", "layers.Bidirectional"],
)
def test_stacked_and_bidirectional_models_match(bidirectional, wrapper):
    # The reference is always keras.layers.Bidirectional(keras.layers.RNN).
    fused = _stack(ElmanRNN, bidirectional, wrapper or keras.layers.Bidirectional)
    reference = _stack(keras.layers.RNN, bidirectional)
    reference.set_weights(fused.get_weights())
    rnns = [
        layer for layer in fused._flatten_layers() if isinstance(layer, ElmanRNN)
    ]
    assert len(rnns) == (4 if bidirectional else 2)
    assert all(layer.fused_reason is None for layer in rnns)
    if bidirectional:
        backward = fused.get_layer("birnn_0").backward_layer
        assert isinstance(backward, ElmanRNN) and backward.go_backwards
    x = _padded_inputs()
    ours, our_grads = _model_grads(fused, x)
    theirs, their_grads = _model_grads(reference, x)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_stateful_matches_and_updates_state():
    kwargs = {"stateful": True, "return_sequences": True}
    fused = ElmanRNN(ElmanCell(UNITS), **kwargs)
    reference = keras.layers.RNN(ElmanCell(UNITS), **kwargs)
    fused.build((BATCH, TIME, FEATURES))
    reference.build((BATCH, TIME, FEATURES))
    reference.set_weights(fused.get_weights())
    for seed in (0, 1):
        x = _inputs(seed)
        np.testing.assert_allclose(fused(x), reference(x), atol=1e-5)
        np.testing.assert_allclose(
            fused.states[0].numpy(), reference.states[0].numpy(), atol=1e-5
        )
    assert np.abs(fused.states[0].numpy()).max() > 0
    fused.reset_state()
    np.testing.assert_array_equal(fused.states[0].numpy(), 0.0)


def _toy_model(layer_factory, jit_compile=False):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, FEATURES))
    x = keras.layers.Masking(0.0)(inputs)
    x = layer_factory(ElmanCell(8, output_units=OUTPUTS), return_sequences=True)(x)
    x = layer_factory(ElmanCell(8))(x)
    outputs = keras.layers.Dense(1)(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(0.05), loss="mse", jit_compile=jit_compile
    )
    return model


def _toy_data():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(16, TIME, FEATURES)).astype("float32")
    lengths = rng.integers(2, TIME + 1, size=16)
    x[np.arange(TIME)[None, :] >= lengths[:, None]] = 0.0
    y = x[:, :, 0].sum(1, keepdims=True)
    return x, y


def test_training_reaches_the_same_loss_as_the_step_loop():
    x, y = _toy_data()
    losses = {}
    # The step loop in a graph, the fused path in a graph (Keras' default on
    # CPU) and inside an XLA-compiled train step (jit_compile=True).
    for name, factory, jit_compile in (
        ("step", keras.layers.RNN, False),
        ("fused", ElmanRNN, False),
        ("fused_xla", ElmanRNN, True),
    ):
        model = _toy_model(factory, jit_compile=jit_compile)
        history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
        losses[name] = history.history["loss"]
    assert losses["fused"][-1] < 0.5 * losses["fused"][0]
    np.testing.assert_allclose(losses["fused"], losses["step"], rtol=1e-3)
    np.testing.assert_allclose(losses["fused_xla"], losses["step"], rtol=1e-3)


@pytest.mark.parametrize("wrapper", [keras.layers.Bidirectional, Bidirectional])
def test_save_load_and_weights_interchange(tmp_path, wrapper):
    model = _stack(ElmanRNN, bidirectional=True, wrapper=wrapper)
    x = _padded_inputs()
    expected = model(x).numpy()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.get_layer("birnn_0")
    assert type(layer) is wrapper
    assert isinstance(layer.forward_layer, ElmanRNN)
    assert layer.backward_layer.go_backwards and layer.backward_layer.fused_reason is None
    np.testing.assert_allclose(loaded(x), expected, atol=1e-6)
    # The same variables as keras.layers.RNN(ElmanCell): inside Bidirectional
    # (whose class names the group in the file, so layers.Bidirectional keeps
    # Keras' class name) weights files load across the two; a bare layer's
    # group is named after its class, as in Keras' own SimpleRNN and
    # RNN(SimpleRNNCell).
    weights = tmp_path / "model.weights.h5"
    model.save_weights(weights)
    step = _stack(keras.layers.RNN, bidirectional=True)
    step.load_weights(weights)
    np.testing.assert_allclose(step(x), expected, atol=1e-5)
    names = [w.path for w in model.get_layer("birnn_0").forward_layer.weights]
    assert [n.split("/")[-1] for n in names] == ["kernel", "recurrent_kernel", "bias"]


def test_config_round_trip_keeps_cell_and_flags():
    layer = ElmanRNN(
        ElmanCell(UNITS, output_units=OUTPUTS, activation="relu"),
        return_sequences=True, go_backwards=True, zero_output_for_mask=True,
        name="elman",
    )
    clone = ElmanRNN.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.cell.output_units == OUTPUTS and clone.go_backwards


def test_savedmodel_trace_with_dynamic_shapes_without_xla(tmp_path):
    model = _toy_model(ElmanRNN)
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
        np.testing.assert_allclose(reloaded.serve(x), model(x), atol=1e-5)


def test_xla_disabled_gives_the_same_numbers():
    fused, reference = _twins(rnn_kwargs={"return_sequences": True, "go_backwards": True})
    with xla_disabled():
        _assert_same(fused, reference, _inputs(), mask=SCATTERED)


@pytest.mark.parametrize("shards", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "rnn_kwargs",
    [{"return_sequences": True, "go_backwards": True}, {"return_state": True}],
)
def test_batch_shards_give_the_same_numbers(shards, batch, rnn_kwargs):
    # Batch 1 with 2 or 3 shards leaves empty shards; batch 3 with 2 shards
    # splits unevenly (2 + 1).
    x = _inputs(3, (batch, TIME, FEATURES))
    mask = SCATTERED[:batch]
    for training in (True, False):
        fused, reference = _twins(rnn_kwargs=rnn_kwargs)
        with batch_shards(shards):
            ours = _run(fused, x, mask=mask, training=training)
        _assert_close(ours, _run(reference, x, mask=mask, training=training))


def test_column_blocks_split_only_wide_products_of_loops_side_by_side(monkeypatch):
    assert fused_elman._column_blocks(512, 2) == 512 // fused_elman.STEP_BLOCK_COLUMNS
    assert fused_elman._column_blocks(640, 2) == -(-640 // fused_elman.STEP_BLOCK_COLUMNS)
    assert fused_elman._column_blocks(384, 2) == 3 and fused_elman._column_blocks(257, 4) == 3
    assert fused_elman._column_blocks(512, 1) == 1  # one loop: Eigen may use every core
    assert fused_elman._column_blocks(256, 2) == 1  # single-threaded already
    assert fused_elman._column_blocks(None, 2) == 1
    assert fused_elman._column_blocks(512, 2, xla=False) == 1  # TensorFlow's matmul: one product
    # The loops of a call: its batch shards times the layers traced side by
    # side (the two directions of layers.Bidirectional, one shard each on 2 cores).
    monkeypatch.setattr(fused_elman, "usable_cores", lambda: 2)
    u, kernel = tf.zeros((4, 7, 384)), tf.zeros((384, 384))

    def shards_and_blocks():
        shards, static = fused_elman._configuration(u, kernel, None, "tanh", False)
        return shards, static[-1]

    assert shards_and_blocks() == (2, 3)
    with side_by_side(2):
        assert shards_and_blocks() == (1, 3)
        with batch_shards(1), side_by_side(1):
            assert shards_and_blocks() == (1, 1)
    with batch_shards(3):
        assert shards_and_blocks() == (3, 3)
    monkeypatch.setattr(fused_elman, "_cpu_only", lambda: False)  # a GPU: one loop, one product
    assert fused_elman._column_blocks(512, 2) == 1


@pytest.mark.parametrize("xla", [True, False])
def test_column_blocks_give_the_same_numbers(monkeypatch, xla):
    # UNITS columns in uneven blocks of 2 (e.g. 5 -> 2 + 2 + 1), in both loops
    # (the automatic choice splits XLA loops only; forced here for both).
    monkeypatch.setattr(fused_elman, "STEP_BLOCK_COLUMNS", 2)
    monkeypatch.setattr(fused_elman, "SPLIT_MIN_UNITS", UNITS)
    assert fused_elman._column_blocks(UNITS, 2) == -(-UNITS // 2) > 1
    automatic = fused_elman._column_blocks
    monkeypatch.setattr(fused_elman, "_column_blocks", lambda units, loops, xla=True: automatic(units, loops))
    configuration, blocks = fused_elman._configuration, []

    def recording(*args):
        shards, static = configuration(*args)
        blocks.append(static[-1])
        return shards, static

    monkeypatch.setattr(fused_elman, "_configuration", recording)
    x = _inputs(4)
    # Two batch shards; one loop traced side by side with another (a
    # direction of layers.Bidirectional on two cores).
    for shards, beside in ((2, 1), (1, 2)):
        for rnn_kwargs in ({"return_sequences": True, "go_backwards": True}, {}):
            for training in (True, False):
                fused, reference = _twins(rnn_kwargs=rnn_kwargs)
                with batch_shards(shards), side_by_side(beside), (contextlib.nullcontext() if xla else xla_disabled()):
                    ours = _run(fused, x, mask=SCATTERED, training=training)
                _assert_close(ours, _run(reference, x, mask=SCATTERED, training=training))
    assert blocks and set(blocks) == {-(-UNITS // 2)}  # every call split


def test_automatic_shards_share_the_cores_between_side_by_side_loops(monkeypatch):
    for cores, alone, two in ((2, 2, 1), (4, 2, 2), (8, 2, 2), (1, 1, 1), (3, 2, 1)):
        monkeypatch.setattr(fused_elman, "usable_cores", lambda cores=cores: cores)
        assert fused_elman._shard_count(256) == alone, cores
        with side_by_side(2):
            assert fused_elman._shard_count(256) == two, cores
            with batch_shards(3):  # forced counts are left as they are
                assert fused_elman._shard_count(256) == 3
        assert fused_elman._shard_count(256) == alone  # restored on exit
        assert fused_elman._shard_count(fused_elman.SHARD_MAX_UNITS + 1) == 1
        # A loop of one step (a character at a time) is never split; a
        # length unknown when traced (None) or longer is.
        assert fused_elman._shard_count(256, 1) == 1
        assert fused_elman._shard_count(256, None) == fused_elman._shard_count(256, 7) == alone


def _traced_shard_counts(model, x):
    """The batch shards of every split traced by a forward and backward call
    of `model` (a fresh `tf.function`, so it is traced here)."""
    counts = []
    split = fused_elman._split_batch

    def recording(tensors, shards):
        counts.append(shards)
        return split(tensors, shards)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = _loss([model(x, training=True)])
        return tape.gradient(loss, x)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fused_elman, "_split_batch", recording)
        step(tf.constant(x))
    return counts


def test_layers_bidirectional_runs_one_loop_per_direction_on_two_cores(monkeypatch):
    monkeypatch.setattr(fused_elman, "usable_cores", lambda: 2)
    x = _padded_inputs()
    keras_wrapped = _stack(ElmanRNN, True)
    ours = _stack(ElmanRNN, True, Bidirectional)
    stacked = _stack(ElmanRNN, False)
    # Two layers x two directions, each split for its forward loop and for
    # the gradient of its states (the backward loop): 8 splits.
    assert _traced_shard_counts(keras_wrapped, x) == [2] * 8
    assert _traced_shard_counts(ours, x) == [1] * 8
    # One direction keeps both cores (two layers, forward and backward).
    assert _traced_shard_counts(stacked, x) == [2] * 4
    # One step at a time (as the language model generates) runs one loop.
    layer = ElmanRNN(ElmanCell(UNITS), return_sequences=True)
    layer.build((None, None, FEATURES))  # else the function's first trace makes its variables
    assert _traced_shard_counts(layer, x[:, :1]) == [1, 1]
    assert _traced_shard_counts(layer, x[:, :2]) == [2, 2]


def test_side_by_side_rejects_bad_counts():
    for bad in (0, -1, 1.5, "2", None):
        with pytest.raises(ValueError, match="`count` must be a positive integer"):
            with side_by_side(bad):
                pass


def test_batch_shards_rejects_bad_counts():
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="`count` must be a positive"):
            with batch_shards(bad):
                pass


def test_bptt_matches_finite_differences_in_float64():
    rng = np.random.default_rng(0)
    time, batch, units = 4, 2, 3
    u = tf.constant(rng.normal(size=(batch, time, units)))
    h0 = tf.constant(rng.normal(size=(batch, units)))
    kernel = tf.constant(rng.normal(size=(units, units)) * 0.7)
    keep = tf.constant(np.array([[1, 1, 0, 1], [1, 0, 1, 0]], bool)[:, :, None])
    weights = tf.constant(rng.normal(size=(batch, time, units)))

    def loss(u, h0, kernel):
        held = elman_recurrence(u, h0, kernel, keep, "tanh", reverse=True)
        return tf.reduce_sum(tf.sin(held * weights))

    theoretical, numerical = tf.test.compute_gradient(
        loss, [u, h0, kernel], delta=1e-6
    )
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, atol=1e-7)


def test_layer_bptt_matches_finite_differences_in_float64():
    layer = ElmanRNN(
        ElmanCell(3, output_units=2, dtype="float64"), return_sequences=True,
        dtype="float64",
    )
    x = _inputs(2, (2, 4, 3), dtype="float64")
    layer.build(x.shape)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)

    def loss(x):
        return tf.reduce_sum(tf.sin(layer(x, mask=mask)))

    theoretical, numerical = tf.test.compute_gradient(
        loss, [tf.constant(x)], delta=1e-6
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-7)
    with tf.GradientTape() as tape:
        out = loss(x)
    grads = tape.gradient(out, layer.trainable_variables)
    for variable, grad in zip(layer.trainable_variables, grads):
        base = variable.numpy().copy()
        numeric = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            for sign in (1, -1):
                shifted = base.copy()
                shifted[index] += sign * 1e-6
                variable.assign(shifted)
                numeric[index] += sign * float(loss(x)) / 2e-6
        variable.assign(base)
        np.testing.assert_allclose(grad.numpy(), numeric, atol=1e-7)


# Keras' own SimpleRNN correctness cases (keras/src/layers/rnn/simple_rnn_test.py),
# run through keras.layers.RNN(ElmanCell) and through ElmanRNN.
CONSTANT = dict(
    kernel_initializer=initializers.Constant(0.01),
    recurrent_initializer=initializers.Constant(0.02),
    bias_initializer=initializers.Constant(0.03),
)
LAYERS = {"rnn_cell": keras.layers.RNN, "elman_rnn": ElmanRNN}


def _constant_layer(factory, units=4, **rnn_kwargs):
    return factory(ElmanCell(units, **CONSTANT), **rnn_kwargs)


@pytest.mark.parametrize("factory", LAYERS.values(), ids=LAYERS.keys())
def test_keras_case_forward_and_backwards(factory):
    sequence = np.arange(24).reshape((2, 3, 4)).astype("float32")
    np.testing.assert_allclose(
        _constant_layer(factory)(sequence),
        np.repeat([[0.405432], [0.73605347]], 4, axis=1), atol=1e-6,
    )
    np.testing.assert_allclose(
        _constant_layer(factory, go_backwards=True)(sequence),
        np.repeat([[0.11144729], [0.5528889]], 4, axis=1), atol=1e-6,
    )


@pytest.mark.parametrize("factory", LAYERS.values(), ids=LAYERS.keys())
def test_keras_case_stateful(factory):
    sequence = np.arange(24).reshape((2, 3, 4)).astype("float32")
    layer = _constant_layer(factory, stateful=True)
    expected = np.repeat([[0.40559256], [0.7361247]], 4, axis=1)
    layer(sequence)
    np.testing.assert_allclose(layer(sequence), expected, atol=1e-6)
    layer.reset_state()
    layer(sequence)
    np.testing.assert_allclose(layer(sequence), expected, atol=1e-6)


@pytest.mark.parametrize("factory", LAYERS.values(), ids=LAYERS.keys())
def test_keras_case_initial_state(factory):
    sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
    initial_state = np.arange(8).reshape((2, 4)).astype("float32")
    np.testing.assert_allclose(
        _constant_layer(factory)(sequence, initial_state=initial_state),
        np.repeat([[0.33621645], [0.6262637]], 4, axis=1), atol=1e-6,
    )
    np.testing.assert_allclose(
        _constant_layer(factory, go_backwards=True)(
            sequence, initial_state=initial_state
        ),
        np.repeat([[0.07344437], [0.43043602]], 4, axis=1), atol=1e-6,
    )


@pytest.mark.parametrize("factory", LAYERS.values(), ids=LAYERS.keys())
def test_keras_case_masking(factory):
    sequence = np.arange(24).reshape((2, 4, 3)).astype("float32")
    mask = np.array([[True, True, False, True], [True, False, False, True]])
    np.testing.assert_allclose(
        _constant_layer(factory)(sequence, mask=mask),
        np.repeat([[0.32951632], [0.61799484]], 4, axis=1), atol=1e-6,
    )
    output = _constant_layer(factory, units=2, return_sequences=True)(
        sequence, mask=mask
    )
    np.testing.assert_allclose(
        output[0], np.repeat([[0.0599281], [0.15122814], [0.15122814],
                              [0.32394567]], 2, axis=1), atol=1e-6,
    )
    np.testing.assert_allclose(
        output[1], np.repeat([[0.3969304], [0.3969304], [0.3969304],
                              [0.608085]], 2, axis=1), atol=1e-6,
    )
    output = _constant_layer(
        factory, units=2, return_sequences=True, zero_output_for_mask=True
    )(sequence, mask=mask)
    np.testing.assert_allclose(
        output[0], np.repeat([[0.0599281], [0.15122814], [0.0],
                              [0.32394567]], 2, axis=1), atol=1e-6,
    )
    np.testing.assert_allclose(
        output[1], np.repeat([[0.3969304], [0.0], [0.0], [0.608085]], 2, axis=1),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        _constant_layer(factory, go_backwards=True)(sequence, mask=mask),
        np.repeat([[0.07376196], [0.43645123]], 4, axis=1), atol=1e-6,
    )


@pytest.mark.parametrize(
    "policy, epsilon", [("mixed_bfloat16", 2.0**-7), ("mixed_float16", 2.0**-10)]
)
@pytest.mark.parametrize(
    "rnn_kwargs",
    [{"return_sequences": True}, {"return_sequences": True, "go_backwards": True},
     {"return_state": True}],
    ids=["sequences", "backwards", "state"],
)
@pytest.mark.parametrize("units", [UNITS, fused_elman.LOW_PRECISION_MIN_UNITS])
def test_mixed_precision_is_fused_within_its_rounding(policy, epsilon, rnn_kwargs, units):
    """Under a mixed policy the fused path keeps float32 weights and returns
    the 16-bit compute dtype; on CPU wide layers loop in 16 bits as plain
    TensorFlow loops and narrow ones in float32 under XLA. Its outputs and
    gradients are as close to the float32 layer's as Keras' step loop under
    the same policy is: within two machine epsilons of the 16-bit type
    (relative, in norm), where a wrong gradient would be off by its size."""
    fused = ElmanRNN(ElmanCell(units, dtype=policy), dtype=policy, **rnn_kwargs)
    step = keras.layers.RNN(ElmanCell(units, dtype=policy), dtype=policy, **rnn_kwargs)
    exact = ElmanRNN(ElmanCell(units), **rnn_kwargs)
    for layer in (fused, step, exact):
        layer.build((None, TIME, FEATURES))
    weights = [
        np.random.default_rng(i + 10).normal(size=w.shape).astype("float32") * 0.5
        / np.sqrt(max(1, w.shape[0] if w.ndim == 2 else 1))
        for i, w in enumerate(exact.get_weights())
    ]
    for layer in (fused, step, exact):
        layer.set_weights(weights)
    assert fused.fused_reason is None
    compute = tf.as_dtype(policy.split("_")[1])
    assert all(w.dtype == "float32" for w in fused.weights)

    fused_elman._KERNELS.clear()
    runs = [_run(fused, _inputs(), mask=RIGHT_PADDED)]
    assert runs[0][0][0].dtype == compute.as_numpy_dtype
    if fused_elman._cpu_only():
        wide = units >= fused_elman.LOW_PRECISION_MIN_UNITS
        loop_dtype, xla = (compute, False) if wide else (tf.float32, True)
    else:
        loop_dtype, xla = compute, True
    assert {(key[4], key[5]) for key in fused_elman._KERNELS} == {(xla, loop_dtype)}
    runs += [_run(layer, _inputs(), mask=RIGHT_PADDED) for layer in (step, exact)]

    def relative_errors(run):
        ours = [*run[0], *run[1]]
        theirs = [*runs[2][0], *runs[2][1]]
        return [
            np.linalg.norm(a.astype("float64") - b) / np.linalg.norm(b)
            for a, b in zip(ours, theirs)
        ]

    for name, run in (("fused", runs[0]), ("step loop", runs[1])):
        errors = relative_errors(run)
        assert max(errors) <= 2 * epsilon, (name, errors)


@pytest.mark.parametrize(
    "cell_dtype, layer_dtype",
    [("float32", "mixed_bfloat16"), ("float32", "float64"), ("mixed_bfloat16", "float32")],
)
def test_cell_dtype_other_than_the_layers_matches_step_loop(cell_dtype, layer_dtype):
    """`ElmanRNN(ElmanCell(n), dtype=policy)`: the dtype given to the layer
    only (or to the cell only). Keras' step loop computes in the cell's
    dtype (the cell casts its inputs and reads its weights in it) and
    returns the layer's; the fused path used to fail on the dtype mismatch."""
    rnn_kwargs = {"return_sequences": True, "return_state": True, "go_backwards": True}
    cell_kwargs = {"output_units": OUTPUTS, "dtype": cell_dtype}
    fused, reference = _twins(cell_kwargs, {"dtype": layer_dtype, **rnn_kwargs})
    assert fused.fused_reason is None
    x, h0 = _inputs(), _inputs(1, (BATCH, UNITS))
    if cell_dtype == "float32":
        # The recurrence runs in float32 on both paths: float32 tolerance.
        ours = _assert_same(fused, reference, x, initial_state=[h0], mask=SCATTERED)
        assert ours[0].dtype == tf.as_dtype(fused.compute_dtype).as_numpy_dtype
        return
    # A 16-bit recurrence in a float32 layer: within two bfloat16 epsilons of
    # the step loop (relative, in norm), returned as float32.
    ours = _run(fused, x, initial_state=[h0], mask=SCATTERED)
    theirs = _run(reference, x, initial_state=[h0], mask=SCATTERED)
    assert ours[0][0].dtype == np.float32
    for a, b in zip([*ours[0], *ours[1]], [*theirs[0], *theirs[1]]):
        assert np.linalg.norm(a - b) <= 2 * 2.0**-7 * np.linalg.norm(b)

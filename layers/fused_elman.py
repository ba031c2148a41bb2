"""The fused Elman recurrence: a time loop with a hand-written backward pass.

`elman_recurrence` runs only the part of an Elman network that must be
sequential,

    c_t = f(u_t + H_{t-1} W_hh)
    H_t = c_t where keep_t else H_{t-1}

for pre-computed input projections `u_t = x_t W_xh + b_h` (one big matmul
done by the caller). Its gradient is written by hand (backpropagation through
time): the backward loop carries only `dH`, and `dW_hh` is one large matmul
after the loop; `du` comes out of the loop as a whole tensor, so the caller's
`dW_xh`, `db` and `dx` are big matmuls too (ordinary autodiff of `x W + b`).
Both loops are compiled with XLA by default (16-bit loops on CPU excepted:
see `LOW_PRECISION`); TensorFlow's automatic gradient through a
`tf.while_loop` is avoided because under XLA it is much slower.

`xla_disabled()` turns the XLA compilation off (the loops then run as plain
TensorFlow while-loops, same numbers), e.g. when tracing a SavedModel for a
server started without XLA support.
"""

import contextlib
import functools
import threading

import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla as xla_ops

from pipelines.cores import usable_cores

# The activations `f` the fused loops know the derivative of, written in
# terms of the activation's output (that is what the forward pass keeps).
FUSED_ACTIVATIONS = ("tanh", "relu", "sigmoid", "linear")

_STATE = threading.local()


def _xla_enabled():
    return getattr(_STATE, "xla", True)


@contextlib.contextmanager
def xla_disabled():
    """Within this block the fused loops are traced without `jit_compile`."""
    previous = _xla_enabled()
    _STATE.xla = False
    try:
        yield
    finally:
        _STATE.xla = previous


# Batch sharding (CPU). XLA:CPU runs the loop's small product, say
# (32 x 256) @ (256 x 256), on one thread, and a (64 x 512) one gains little
# from a second. Splitting the batch into independent loops, one per core,
# lets TensorFlow's executor run them side by side. Measured on 2 cores
# (`python -m benchmarks.rnn_speed --batch-shards 1|2`): speech 32 x 200 x
# 2 x 256 training step 76.5 -> 62.3 ms, inference 32.0 -> 22.0 ms; char LM
# 64 x 100 x 512 training step 90.5 -> 83.8 ms (two runs each). The two
# directions of a bidirectional layer already run side by side: there two
# shards each (four loops on two cores) gained nothing on the Xeon and lose
# 5-8% on the Zen 4, so `layers.Bidirectional` traces its directions inside
# `side_by_side(2)`, one loop per direction on two cores. Wider layers are
# left alone (not measured), and so are GPU runs, where one loop is one
# stream.
SHARD_MAX_UNITS = 512


@functools.cache
def _cpu_only():
    return not tf.config.list_logical_devices("GPU")


def _side_by_side_count():
    """How many fused layers are traced side by side here (`side_by_side`)."""
    return getattr(_STATE, "side_by_side", 1)


def _auto_shards(units, steps=None):
    if units is None or units > SHARD_MAX_UNITS or not _cpu_only():
        return 1
    # A loop of one step (a language model fed a character at a time) has
    # nothing to overlap: a second loop only adds its call. Generating 200
    # characters from the char LM (512 units), eagerly: 6.77 -> 5.36 ms a
    # character for one prompt, 9.87 -> 7.00 ms for 64 (Zen 4, one process).
    if steps == 1:
        return 1
    # Loops traced inside `side_by_side(n)` share the cores with n - 1 others.
    share = usable_cores() // _side_by_side_count()
    return max(1, min(2, share))


def _shard_count(units, steps=None):
    forced = getattr(_STATE, "shards", None)
    return forced if forced is not None else _auto_shards(units, steps)


@contextlib.contextmanager
def batch_shards(count):
    """Within this block the fused loops split the batch into `count`
    independent loops (None: the automatic choice, see `_auto_shards`)."""
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ValueError(
            f"`count` must be a positive integer or None, got {count!r}."
        )
    previous = getattr(_STATE, "shards", None)
    _STATE.shards = count
    try:
        yield
    finally:
        _STATE.shards = previous


@contextlib.contextmanager
def side_by_side(count):
    """Within this block the fused layers traced run `count` at a time, side
    by side (the two directions of `layers.Bidirectional`), so the
    automatic batch shards give each its share of the cores: on 2 cores, one
    loop per direction instead of two. Measured on 2 cores (Zen 4, one
    process, 30-40 alternating rounds): the benchmark's bidirectional speech
    shape 146.3 -> 139.7 and 150.4 -> 143.4 ms a training step, 49.9 -> 45.6
    and 54.5 -> 50.2 ms an inference call (four loops of 16 rows against two
    of 32; eight of 8 rows: 142.1 / 53.0 and 153.0 / 58.5). A count forced
    with `batch_shards` is left as it is."""
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"`count` must be a positive integer, got {count!r}.")
    previous = _side_by_side_count()
    _STATE.side_by_side = count
    try:
        yield
    finally:
        _STATE.side_by_side = previous


# Column blocks of the per-step product (CPU, loops side by side). Eigen,
# which runs XLA:CPU's dot, splits a product with more than 256 columns,
# such as (32 x 512) @ (512 x 512), over the intra-op threads; with one loop
# per core already running side by side, that makes the loops wait on each
# other. Products of at most `STEP_BLOCK_COLUMNS` columns stay on one thread.
# Measured on 2 cores, two loops side by side of 100 steps of (32 x 512) @
# (512 x 512) + tanh: 21.2 ms as one product per step, 14.9 ms as four of 128
# columns (one loop alone: 9.4 -> 13.6 ms, so only loops side by side are
# split). The same holds from 257 units: on the Zen 4, one process, 25-30
# alternating rounds, a batch-sharded loop's forward / forward and backward
# at 272 units (32 x 200 steps) 11.61 -> 8.36 / 28.22 -> 24.39 ms, 288 units
# 10.94 -> 8.11 / 27.91 -> 22.58, 384 units 19.71 -> 15.32 / 51.09 -> 45.30,
# 448 units (64 x 100) 21.00 -> 18.53 / 55.12 -> 50.82; and the two
# directions of `layers.Bidirectional` (one loop each on two cores, side by
# side, so split too) at 384 units 35.78 -> 28.72 / 79.95 -> 72.07 ms, 512
# units 53.47 -> 44.84 / 125.81 -> 109.17. (16 x 256) to (64 x 256) products
# are single-threaded already and are left whole (split: 21.38 -> 22.73 ms,
# bidirectional 39.58 -> 42.13).
# Loops without XLA (low precision on CPU, `xla_disabled`) run TensorFlow's
# own matmul, for which one product is faster: the char LM shape's training
# step 39.1 against 42.7 ms in bfloat16, 67.0 against 71.1 ms in float32
# (inference 15.0 / 16.5 and 21.6 / 23.4 ms; one process, 30 rounds).
STEP_BLOCK_COLUMNS = 128
SPLIT_MIN_UNITS = 257


def _column_blocks(units, loops, xla=True):
    """How many column blocks the loop's per-step product is split into,
    for `loops` fused loops running side by side (batch shards times
    `side_by_side`)."""
    if not xla or loops < 2 or units is None or units < SPLIT_MIN_UNITS or not _cpu_only():
        return 1
    return -(-units // STEP_BLOCK_COLUMNS)


def _step_product(h, blocks):
    """`h @ W` for `W` given as a list of column blocks."""
    if len(blocks) == 1:
        return tf.matmul(h, blocks[0])
    return tf.concat([tf.matmul(h, block) for block in blocks], axis=1)


def _near_equal_sizes(total, count):
    """`count` sizes summing to `total` (a tensor), the first ones one larger
    when it does not divide."""
    return [(total + count - 1 - index) // count for index in range(count)]


def _blocks_of(kernel, count):
    """`kernel` as `count` column blocks (`_step_product`'s argument)."""
    if count == 1:
        return [kernel]
    return tf.split(kernel, _near_equal_sizes(tf.shape(kernel)[1], count), axis=1)


def _split_batch(tensors, shards):
    """`[part, ...]`: each part a tuple of the tensors' slices along axis 0,
    in `shards` near-equal parts (the first ones one longer when the batch
    does not divide); `[tuple(tensors)]` when `shards` is 1."""
    if shards == 1:
        return [tuple(tensors)]
    sizes = _near_equal_sizes(tf.shape(tensors[0])[0], shards)
    parts = [tf.split(t, sizes, axis=0) for t in tensors]
    return [tuple(p[index] for p in parts) for index in range(shards)]


def _join_batch(parts):
    """Inverse of `_split_batch` for one tensor per part."""
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=0)


def _activate(name, a):
    if name == "tanh":
        return tf.tanh(a)
    if name == "relu":
        return tf.nn.relu(a)
    if name == "sigmoid":
        return tf.sigmoid(a)
    return a


def _derivative_from_output(name, h):
    if name == "tanh":
        return 1.0 - h * h
    if name == "relu":
        return tf.cast(h > 0, h.dtype)
    if name == "sigmoid":
        return h * (1.0 - h)
    return tf.ones_like(h)


def _new_buffer(like, xla):
    """Per-step outputs: a `(batch, time, units)` tensor under XLA, written
    in place with dynamic-update-slice; a TensorArray otherwise."""
    if xla:
        return tf.zeros_like(like)
    return tf.TensorArray(
        like.dtype, size=tf.shape(like)[1], element_shape=like[:, 0].shape
    )


def _write(buffer, index, value, xla):
    if xla:
        return xla_ops.dynamic_update_slice(
            buffer, value[:, None], tf.stack([0, index, 0])
        )
    return buffer.write(index, value)


def _finish(buffer, xla):
    if xla:
        return buffer
    return tf.transpose(buffer.stack(), (1, 0, 2))


def _original_index(index, steps, reverse):
    return steps - 1 - index if reverse else index


def _forward(u, h0, recurrent_kernel, keep, activation, reverse, xla, blocks):
    """Held states `H` in processing order, `(batch, time, units)`."""
    steps = tf.shape(u)[1]
    if keep is not None and reverse:
        keep = tf.reverse(keep, [1])
    kernel_blocks = _blocks_of(recurrent_kernel, blocks)

    def body(i, h, states):
        u_t = u[:, _original_index(i, steps, reverse)]
        c = _activate(activation, u_t + _step_product(h, kernel_blocks))
        if keep is not None:
            c = tf.where(keep[:, i], c, h)
        return i + 1, c, _write(states, i, c, xla)

    _, _, states = tf.while_loop(
        lambda i, *_: i < steps,
        body,
        (tf.constant(0), h0, _new_buffer(u, xla)),
        maximum_iterations=steps,
    )
    return _finish(states, xla)


def _forward_last(u, h0, recurrent_kernel, keep, activation, reverse, xla, blocks):
    """Only the last held state, `(batch, units)`: nothing else is kept."""
    del xla
    steps = tf.shape(u)[1]
    if keep is not None and reverse:
        keep = tf.reverse(keep, [1])
    kernel_blocks = _blocks_of(recurrent_kernel, blocks)

    def body(i, h):
        u_t = u[:, _original_index(i, steps, reverse)]
        c = _activate(activation, u_t + _step_product(h, kernel_blocks))
        if keep is not None:
            c = tf.where(keep[:, i], c, h)
        return i + 1, c

    _, h = tf.while_loop(
        lambda i, *_: i < steps,
        body,
        (tf.constant(0), h0),
        maximum_iterations=steps,
    )
    return h


def _backward(
    d_states, states, h0, recurrent_kernel, keep, activation, reverse, xla,
    blocks,
):
    """`(du, dh0)` from `dH`; sequences `(batch, time, units)`.

    `d_states` and `states` are in processing order, `du` in the order of
    `u`. The loop carries only `dH` and writes only `du`; `dW_hh` is one
    matmul after the kernel (`_recurrent_kernel_grad`).
    """
    steps = tf.shape(states)[1]
    if keep is not None and reverse:
        keep = tf.reverse(keep, [1])
    # f'(a_t) from the kept outputs, for all steps at once; zero where the
    # step is masked (there `H_t` is a copy of `H_(t-1)`, not an activation).
    slope = _derivative_from_output(activation, states)
    if keep is not None:
        slope = tf.where(keep, slope, tf.zeros_like(slope))
    transposed_blocks = _blocks_of(tf.transpose(recurrent_kernel), blocks)

    def body(i, carry, du):
        g = d_states[:, i] + carry
        da = g * slope[:, i]
        carry = _step_product(da, transposed_blocks)
        if keep is not None:
            carry = carry + tf.where(keep[:, i], tf.zeros_like(g), g)
        du = _write(du, _original_index(i, steps, reverse), da, xla)
        return i - 1, carry, du

    zero = tf.zeros_like(h0)
    _, dh0, du = tf.while_loop(
        lambda i, *_: i >= 0,
        body,
        (steps - 1, zero, _new_buffer(states, xla)),
        maximum_iterations=steps,
    )
    return _finish(du, xla), dh0


def _recurrent_kernel_grad(states, du, h0, reverse):
    """`dW_hh = sum_t H_(t-1)^T da_t` as one large matmul, without copies.

    `states` in processing order, `du` in the order of `u`. Flattened to
    `(batch * time, units)` rows, `H_(t-1)` and `da_t` are neighbouring
    rows, so the sum is one product of two row ranges of the flat tensors
    (views, not copies: a copy of `da` shifted by a step cost about a
    seventh of the backward kernel's time), less the pairs that straddle two
    utterances (last state of one, first `da` of the next), plus
    `h0^T da_0`. Done outside the XLA kernels on purpose: TensorFlow's own
    (oneDNN) matmul was measured faster than XLA:CPU's for this product.
    """
    da = tf.reverse(du, [1]) if reverse else du  # processing order
    units = tf.shape(h0)[-1]
    flat_states = tf.reshape(states, (-1, units))
    flat_da = tf.reshape(da, (-1, units))
    return (
        tf.matmul(flat_states[:-1], flat_da[1:], transpose_a=True)
        - tf.matmul(states[:-1, -1], da[1:, 0], transpose_a=True)
        + tf.matmul(h0, da[:, 0], transpose_a=True)
    )


_KERNELS = {}


def _detached(*tensors):
    return tuple(tf.stop_gradient(t) for t in tensors)


def _run_kernel(fn, activation, reverse, masked, xla, blocks, *tensors):
    *tensors, keep = tensors if masked else (*tensors, None)
    return fn(*tensors, keep, activation, reverse, xla, blocks)


def _kernel(name, activation, reverse, masked, xla, dtype, blocks=1):
    """The compiled loop `name` for one static configuration.

    One `tf.function` per configuration, traced once for any batch size and
    length (XLA still compiles once per concrete shape, at run time).
    `blocks`: column blocks of the per-step product (`_column_blocks`).
    """
    key = (name, activation, reverse, masked, xla, dtype, blocks)
    if key not in _KERNELS:
        fn = {
            "forward": _forward,
            "forward_last": _forward_last,
            "backward": _backward,
        }[name]
        sequence = tf.TensorSpec((None, None, None), dtype)
        matrix = tf.TensorSpec((None, None), dtype)
        signature = {
            "forward": [sequence, matrix, matrix],
            "forward_last": [sequence, matrix, matrix],
            "backward": [sequence, sequence, matrix, matrix],
        }[name]
        if masked:
            signature.append(tf.TensorSpec((None, None, 1), tf.bool))

        # A partial (not a closure) so TensorFlow's retracing warning counts
        # each configuration on its own: each is traced exactly once.
        kernel = functools.partial(
            _run_kernel, fn, activation, reverse, masked, xla, blocks
        )
        _KERNELS[key] = tf.function(
            kernel, input_signature=signature, jit_compile=xla, autograph=False
        )
    return _KERNELS[key]


def _check_activation(activation):
    if activation not in FUSED_ACTIVATIONS:
        raise ValueError(
            "Received an invalid value for argument `activation`, expected "
            f"one of {FUSED_ACTIVATIONS}, got {activation!r}."
        )


# Low-precision loops on CPU (a `mixed_bfloat16` or `mixed_float16` policy).
# XLA:CPU has no fast 16-bit dot (its bfloat16 loops ran 3-6x slower than the
# float32 builtin on the benchmark's shapes), while TensorFlow's own matmul
# (oneDNN) uses the CPU's bfloat16 units where it has them (AMX here: a
# 2048 x 2048 product at 1230 GFLOP/s against 310 in float32). So layers of
# `LOW_PRECISION_MIN_UNITS` or more run their 16-bit loops as plain
# TensorFlow loops (the char LM shape's training step 42 ms against 64 with
# the loop in float32), and narrower ones run the loop in float32 under XLA,
# cast in and out, as their small per-step products do not pay for the
# 16-bit units (speech 32 x 200 x 256: 41 against 49 ms; bidirectional
# inference 34 against 44 ms; one process, 20 rounds). GPUs keep XLA and the
# policy's dtype.
LOW_PRECISION = (tf.bfloat16, tf.float16)
LOW_PRECISION_MIN_UNITS = 512


def _use_xla(dtype):
    if not _xla_enabled():
        return False
    return not (tf.as_dtype(dtype) in LOW_PRECISION and _cpu_only())


def _loop_dtype(dtype, units):
    """The dtype the loop computes in for inputs of `dtype` (see above)."""
    dtype = tf.as_dtype(dtype)
    if (
        dtype in LOW_PRECISION and _cpu_only() and _xla_enabled()
        and (units is None or units < LOW_PRECISION_MIN_UNITS)
    ):
        return tf.float32
    return dtype


def _in_loop_dtype(fn, u, h0, recurrent_kernel, *args):
    """`fn(u, h0, W, ...)` computed in `_loop_dtype`, its result cast back to
    `u`'s dtype; None when the loop runs in `u`'s dtype already."""
    loop_dtype = _loop_dtype(u.dtype, recurrent_kernel.shape[-1])
    if loop_dtype == u.dtype:
        return None
    cast = [tf.cast(t, loop_dtype) for t in (u, h0, recurrent_kernel)]
    return tf.cast(fn(*cast, *args), u.dtype)


def _configuration(u, recurrent_kernel, keep, activation, reverse):
    """`(shards, static)`: the batch shards of a call and the static part of
    its kernels' key (`_kernel`'s arguments after the name)."""
    _check_activation(activation)
    units = recurrent_kernel.shape[-1]
    shards = _shard_count(units, u.shape[1])
    xla = _use_xla(u.dtype)
    static = (
        activation, reverse, keep is not None, xla, u.dtype,
        _column_blocks(units, shards * _side_by_side_count(), xla),
    )
    return shards, static


def elman_recurrence(
    u, h0, recurrent_kernel, keep=None, activation="tanh", reverse=False
):
    """Held states of the Elman loop, with a hand-written BPTT gradient.

    Args:
        u: Input projections `x_t W_xh + b_h`, shape `(batch, time, units)`.
        h0: Initial state, shape `(batch, units)`.
        recurrent_kernel: `W_hh`, shape `(units, units)`.
        keep: Optional boolean mask, shape `(batch, time, 1)`, in the order
            of `u`; where False the state is carried over unchanged.
        activation: One of `FUSED_ACTIVATIONS`.
        reverse: Python boolean; if True the loop runs from the last step of
            `u` to the first (Keras' `go_backwards`).

    Returns:
        The held states `H` in processing order (reversed when `reverse`),
        shape `(batch, time, units)`; `H[:, -1]` is the final state.
        Differentiable with respect to `u`, `h0` and `recurrent_kernel`.
        On CPU, narrow layers run as one loop per core over parts of the
        batch (`batch_shards`); the numbers are the same. 16-bit inputs
        (mixed precision) give 16-bit states; on CPU the loop of a layer
        narrower than `LOW_PRECISION_MIN_UNITS` computes in float32.
    """
    cast = _in_loop_dtype(elman_recurrence, u, h0, recurrent_kernel, keep, activation, reverse)
    if cast is not None:
        return cast
    shards, static = _configuration(u, recurrent_kernel, keep, activation, reverse)
    mask = () if keep is None else (keep,)
    forward = _kernel("forward", *static)
    backward = _kernel("backward", *static)

    @tf.custom_gradient
    def recurrence(u, h0, recurrent_kernel):
        # stop_gradient: a tape must not differentiate the compiled loop
        # (that would ask XLA to export its loop intermediates).
        u, h0, recurrent_kernel = _detached(u, h0, recurrent_kernel)
        parts = _split_batch((u, h0, *mask), shards)
        held = [
            forward(u_s, h0_s, recurrent_kernel, *mask_s)
            for u_s, h0_s, *mask_s in parts
        ]
        states = _join_batch(held)

        def grad(d_states):
            d_parts = _split_batch((tf.stop_gradient(d_states),), shards)
            du, dh0, d_kernel = [], [], []
            for (u_s, h0_s, *mask_s), (d_s,), states_s in zip(
                parts, d_parts, held
            ):
                du_s, dh0_s = backward(
                    d_s, states_s, h0_s, recurrent_kernel, *mask_s
                )
                du.append(du_s)
                dh0.append(dh0_s)
                d_kernel.append(
                    _recurrent_kernel_grad(states_s, du_s, h0_s, reverse)
                )
            return _join_batch(du), _join_batch(dh0), tf.add_n(d_kernel)

        return states, grad

    return recurrence(u, h0, recurrent_kernel)


def elman_last_state(
    u, h0, recurrent_kernel, keep=None, activation="tanh", reverse=False
):
    """Like `elman_recurrence` but returns only `H[:, -1]`, `(batch, units)`.

    Keeps no per-step states, so it suits inference; its gradient re-runs the
    full forward loop first (through `elman_recurrence`).
    """
    cast = _in_loop_dtype(elman_last_state, u, h0, recurrent_kernel, keep, activation, reverse)
    if cast is not None:
        return cast
    shards, static = _configuration(u, recurrent_kernel, keep, activation, reverse)
    mask = () if keep is None else (keep,)
    last_kernel = _kernel("forward_last", *static)

    @tf.custom_gradient
    def last(u, h0, recurrent_kernel):
        u, h0, recurrent_kernel = _detached(u, h0, recurrent_kernel)
        h = _join_batch(
            [
                last_kernel(u_s, h0_s, recurrent_kernel, *mask_s)
                for u_s, h0_s, *mask_s in _split_batch((u, h0, *mask), shards)
            ]
        )

        def grad(d_last):
            with tf.GradientTape() as tape:
                tape.watch((u, h0, recurrent_kernel))
                states = elman_recurrence(
                    u, h0, recurrent_kernel, keep, activation, reverse
                )
                target = states[:, -1]
            return tape.gradient(
                target, (u, h0, recurrent_kernel),
                output_gradients=tf.stop_gradient(d_last),
            )

        return h, grad

    return last(u, h0, recurrent_kernel)

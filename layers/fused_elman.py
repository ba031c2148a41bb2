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
Both loops are compiled with XLA by default; TensorFlow's automatic gradient
through a `tf.while_loop` is avoided because under XLA it is much slower.

`xla_disabled()` turns the XLA compilation off (the loops then run as plain
TensorFlow while-loops, same numbers), e.g. when tracing a SavedModel for a
server started without XLA support.
"""

import contextlib
import threading

import tensorflow as tf

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


def _forward(u, h0, recurrent_kernel, keep, activation):
    """All held states `H`, shape `(time, batch, units)`, time-major."""
    steps = tf.shape(u)[0]
    states = tf.TensorArray(
        u.dtype, size=steps, element_shape=h0.shape, clear_after_read=True
    )

    def body(t, h, states):
        c = _activate(activation, u[t] + tf.matmul(h, recurrent_kernel))
        if keep is not None:
            c = tf.where(keep[t], c, h)
        return t + 1, c, states.write(t, c)

    _, _, states = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), h0, states),
        maximum_iterations=steps,
    )
    return states.stack()


def _forward_last(u, h0, recurrent_kernel, keep, activation):
    """Only the last held state, shape `(batch, units)` (inference)."""
    steps = tf.shape(u)[0]

    def body(t, h):
        c = _activate(activation, u[t] + tf.matmul(h, recurrent_kernel))
        if keep is not None:
            c = tf.where(keep[t], c, h)
        return t + 1, c

    _, h = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), h0),
        maximum_iterations=steps,
    )
    return h


def _backward(d_states, states, h0, recurrent_kernel, keep, activation):
    """Gradients `(du, dh0, dW_hh)` of the loop from `dH`, `(time, batch, units)`."""
    steps = tf.shape(states)[0]
    # f'(a_t) from the kept outputs, for all steps at once; zero where the
    # step is masked (there `H_t` is a copy of `H_{t-1}`, not an activation).
    slope = _derivative_from_output(activation, states)
    if keep is not None:
        slope = tf.where(keep, slope, tf.zeros_like(slope))
    transposed_kernel = tf.transpose(recurrent_kernel)
    grads = tf.TensorArray(
        states.dtype, size=steps, element_shape=h0.shape, clear_after_read=True
    )

    def body(t, carry, grads):
        g = d_states[t] + carry
        da = g * slope[t]
        carry = tf.matmul(da, transposed_kernel)
        if keep is not None:
            carry = carry + tf.where(keep[t], tf.zeros_like(g), g)
        return t - 1, carry, grads.write(t, da)

    _, dh0, grads = tf.while_loop(
        lambda t, *_: t >= 0,
        body,
        (steps - 1, tf.zeros_like(h0), grads),
        maximum_iterations=steps,
    )
    da = grads.stack()
    units = tf.shape(h0)[-1]
    previous = tf.concat([h0[None], states[:-1]], axis=0)
    d_kernel = tf.matmul(
        tf.reshape(previous, (-1, units)),
        tf.reshape(da, (-1, units)),
        transpose_a=True,
    )
    return da, dh0, d_kernel


_KERNELS = {}


def _detached(*tensors):
    return tuple(tf.stop_gradient(t) for t in tensors)


def _kernel(name, xla):
    key = (name, xla)
    if key not in _KERNELS:
        fn = {
            "forward": _forward,
            "forward_last": _forward_last,
            "backward": _backward,
        }[name]
        _KERNELS[key] = tf.function(
            fn, jit_compile=xla, reduce_retracing=True, autograph=False
        )
    return _KERNELS[key]


def elman_recurrence(u, h0, recurrent_kernel, keep=None, activation="tanh"):
    """Held states of the Elman loop, with a hand-written BPTT gradient.

    Args:
        u: Input projections `x_t W_xh + b_h`, shape `(time, batch, units)`
            (time-major).
        h0: Initial state, shape `(batch, units)`.
        recurrent_kernel: `W_hh`, shape `(units, units)`.
        keep: Optional boolean mask, shape `(time, batch, 1)`; where False
            the state is carried over unchanged.
        activation: One of `FUSED_ACTIVATIONS`.

    Returns:
        The held states `H`, shape `(time, batch, units)`; `H[-1]` is the
        final state. Differentiable with respect to `u`, `h0` and
        `recurrent_kernel`.
    """
    if activation not in FUSED_ACTIVATIONS:
        raise ValueError(
            "Received an invalid value for argument `activation`, expected "
            f"one of {FUSED_ACTIVATIONS}, got {activation!r}."
        )
    xla = _xla_enabled()
    forward = _kernel("forward", xla)
    backward = _kernel("backward", xla)

    @tf.custom_gradient
    def recurrence(u, h0, recurrent_kernel):
        # stop_gradient: a tape must not differentiate the compiled loop
        # (that would ask XLA to export its loop intermediates).
        u, h0, recurrent_kernel = _detached(u, h0, recurrent_kernel)
        states = forward(u, h0, recurrent_kernel, keep, activation)

        def grad(d_states):
            return backward(
                tf.stop_gradient(d_states),
                states,
                h0,
                recurrent_kernel,
                keep,
                activation,
            )

        return states, grad

    return recurrence(u, h0, recurrent_kernel)


def elman_last_state(u, h0, recurrent_kernel, keep=None, activation="tanh"):
    """Like `elman_recurrence` but returns only `H[-1]`, `(batch, units)`.

    Keeps no per-step states, so it suits inference; its gradient re-runs the
    full forward loop first.
    """
    if activation not in FUSED_ACTIVATIONS:
        raise ValueError(
            "Received an invalid value for argument `activation`, expected "
            f"one of {FUSED_ACTIVATIONS}, got {activation!r}."
        )
    xla = _xla_enabled()
    forward_last = _kernel("forward_last", xla)

    @tf.custom_gradient
    def last(u, h0, recurrent_kernel):
        u, h0, recurrent_kernel = _detached(u, h0, recurrent_kernel)
        h = forward_last(u, h0, recurrent_kernel, keep, activation)

        def grad(d_last):
            states = _kernel("forward", xla)(
                u, h0, recurrent_kernel, keep, activation
            )
            d_states = tf.concat(
                [tf.zeros_like(states[:-1]), tf.stop_gradient(d_last)[None]],
                axis=0,
            )
            return _kernel("backward", xla)(
                d_states, states, h0, recurrent_kernel, keep, activation
            )

        return h, grad

    return last(u, h0, recurrent_kernel)

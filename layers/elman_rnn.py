"""`ElmanRNN`: the sequence layer for `ElmanCell`, with a fused fast path."""

import keras
from keras import activations
from keras.src.backend import AutocastScope

from layers.elman_cell import ElmanCell

_ACTIVATION_NAMES = {
    activations.tanh: "tanh",
    activations.relu: "relu",
    activations.sigmoid: "sigmoid",
    activations.linear: "linear",
}


@keras.saving.register_keras_serializable(package="rnn_pipeline")
class ElmanRNN(keras.layers.RNN):
    """`keras.layers.RNN` for one `ElmanCell`, fused when it can be.

    Same arguments, weights, outputs and saved configuration as
    `keras.layers.RNN(cell, ...)`; only the way the time loop runs differs.
    On the fused path the input projection `x_t W_xh + b_h` is one matmul
    over all time steps, the loop (compiled with XLA) computes only
    `h_t = f(u_t + h_{t-1} W_hh)`, the output layer `y_t = g(h_t W_hy + b_y)`
    (when the cell has `output_units`) is one matmul after the loop, and the
    backward pass is written by hand so that its loop carries only the
    gradient of `h` (see `layers.fused_elman`). Masks of any pattern (right
    padding is the usual one) keep Keras' semantics: the state is carried
    over masked steps and the output there is the previous output (zeros
    before the first unmasked step, or everywhere masked when
    `zero_output_for_mask=True`).

    The layer falls back to Keras' step loop (`keras.layers.RNN.inner_loop`)
    when the fused path cannot reproduce it: a backend other than
    TensorFlow, `unroll=True`, an activation other than tanh, relu, sigmoid
    or linear, or `recurrent_dropout > 0` in a training call. `fused_reason`
    says why (None when fused). Input `dropout` stays fused: one mask per
    sequence applied to `x`, as Keras does. Mixed precision (a
    `mixed_bfloat16` or `mixed_float16` dtype policy) is fused too: the loops
    compute in the policy's compute dtype, the weights stay float32 (see
    `layers.fused_elman` for where its loops run).

    Args:
        cell: An `ElmanCell`.
        return_sequences, return_state, go_backwards, stateful, unroll,
        zero_output_for_mask, **kwargs: As for `keras.layers.RNN`.

    Call arguments:
        sequences: Inputs, shape `(batch, time, features)`.
        initial_state: Optional list holding `h_0`, shape `(batch, units)`.
        mask: Optional boolean mask, shape `(batch, time)`.
        training: Python boolean, for dropout.

    Returns:
        `(batch, time, output_size)` if `return_sequences` else
        `(batch, output_size)`; followed by the final state `(batch, units)`
        when `return_state`.

    Example:

    ```python
    import numpy as np
    from layers import ElmanCell, ElmanRNN
    x = np.random.random((4, 20, 8)).astype("float32")
    rnn = ElmanRNN(ElmanCell(16), return_sequences=True)
    y = rnn(x)  # (4, 20, 16)
    assert rnn.fused_reason is None
    ```
    """

    def __init__(self, cell, **kwargs):
        if not isinstance(cell, ElmanCell):
            raise TypeError(
                "Received an invalid value for argument `cell`, expected an "
                f"ElmanCell, got {type(cell).__name__}."
            )
        super().__init__(cell, **kwargs)

    def _static_fused_reason(self):
        if keras.backend.backend() != "tensorflow":
            return (
                f"the fused path needs the TensorFlow backend, this is "
                f"{keras.backend.backend()!r}"
            )
        if self.unroll:
            return "unroll=True asks for Keras' unrolled step loop"
        if self.cell.activation not in _ACTIVATION_NAMES:
            return (
                f"activation {self.cell.activation!r} has no fused "
                "derivative (supported: tanh, relu, sigmoid, linear)"
            )
        return None

    @property
    def fused_reason(self):
        """Why a training call would not be fused (None when it is).

        With `recurrent_dropout > 0` only training calls fall back;
        inference calls are still fused.
        """
        reason = self._static_fused_reason()
        if reason is None and self.cell.recurrent_dropout > 0:
            reason = (
                f"recurrent_dropout={self.cell.recurrent_dropout} needs a "
                "fresh mask on h_(t-1) inside the loop: training calls run "
                "the step loop (inference calls stay fused)"
            )
        return reason

    def inner_loop(self, sequences, initial_state, mask, training=False):
        reason = self._static_fused_reason()
        if reason is None and training and self.cell.recurrent_dropout > 0:
            reason = self.fused_reason
        if reason is not None:
            return super().inner_loop(
                sequences, initial_state, mask, training=training
            )
        # The step loop computes in the cell's dtype (its `__call__` casts
        # the inputs and reads the weights in the cell's compute dtype), which
        # may differ from this layer's (`ElmanRNN(ElmanCell(n), dtype=...)`):
        # the fused loop reads the weights as the cell would.
        with AutocastScope(self.cell.compute_dtype):
            return self._fused_loop(sequences, initial_state, mask, training)

    def _fused_loop(self, sequences, initial_state, mask, training):
        import tensorflow as tf

        from layers.fused_elman import elman_last_state, elman_recurrence

        cell = self.cell
        activation = _ACTIVATION_NAMES[cell.activation]
        dtype = cell.compute_dtype
        x = tf.cast(sequences, dtype)
        h0 = tf.cast(initial_state[0], dtype)
        if training and cell.dropout > 0:
            # The mask RNN.call prepared for this sequence (one per call,
            # in this layer's dtype).
            dropout_mask = tf.cast(cell.get_dropout_mask(x[:, 0, :]), dtype)
            x = x * dropout_mask[:, None, :]
        # One 2-D matmul for all steps (a 3-D matmul would be a broadcast
        # batch matmul, whose kernel gradient is one small matmul per step).
        batch, steps = tf.shape(x)[0], tf.shape(x)[1]
        u = tf.matmul(
            tf.reshape(x, (-1, x.shape[-1])), tf.convert_to_tensor(cell.kernel)
        )
        if cell.use_bias:
            u = u + tf.convert_to_tensor(cell.bias)
        u = tf.reshape(u, (batch, steps, cell.units))
        recurrent_kernel = tf.convert_to_tensor(cell.recurrent_kernel)

        keep = None
        if mask is not None:
            mask = tf.cast(tf.convert_to_tensor(mask), tf.bool)
            if mask.shape.rank == 3:
                mask = mask[:, :, 0]
            keep = mask[:, :, None]  # (batch, time, 1), order of the input

        if keep is None:
            shown = None
        else:
            # Outputs come out in processing order (reversed for
            # go_backwards, as in Keras), so the output mask does too.
            shown = tf.reverse(keep, [1]) if self.go_backwards else keep
            if not self.zero_output_for_mask:
                # Keras repeats the previous output at a masked step, and
                # that is zeros until the first unmasked step.
                shown = tf.cumsum(tf.cast(shown, tf.int32), axis=1) > 0

        def outputs_of(held):
            if held.shape.rank == 3:
                y = cell.project(tf.reshape(held, (-1, cell.units)))
                y = tf.reshape(y, (batch, steps, cell.output_size))
                if shown is not None:
                    y = tf.where(shown, y, tf.zeros_like(y))
            else:
                y = cell.project(held)
                if shown is not None:
                    y = tf.where(shown[:, -1], y, tf.zeros_like(y))
            return y

        loop = dict(
            keep=keep, activation=activation, reverse=self.go_backwards
        )
        if self.return_sequences or training:
            # Training keeps every state for the backward pass anyway.
            held = elman_recurrence(u, h0, recurrent_kernel, **loop)
            last_state = held[:, -1]
            if self.return_sequences:
                outputs = outputs_of(held)
                last_output = outputs[:, -1]
            else:
                last_output = outputs_of(last_state)
                outputs = last_output[:, None]
        else:
            last_state = elman_last_state(u, h0, recurrent_kernel, **loop)
            last_output = outputs_of(last_state)
            outputs = last_output[:, None]
        return last_output, outputs, [last_state]

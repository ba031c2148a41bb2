"""`ElmanBidirectional`: `keras.layers.Bidirectional` with both directions in one loop."""

import keras

from layers.elman_rnn import _ACTIVATION_NAMES, ElmanRNN


@keras.saving.register_keras_serializable(package="rnn_pipeline")
class ElmanBidirectional(keras.layers.Bidirectional):
    """`keras.layers.Bidirectional` for `ElmanRNN`, fused when it can be.

    Same arguments, weights, outputs and saved configuration as
    `keras.layers.Bidirectional(ElmanRNN(...))`. Keras runs the two
    directions as two layers, flips the backward one's outputs and
    concatenates them. Here, when both directions take the fused path, the
    input projections of both directions are one matmul and one loop (per
    core, see `layers.fused_elman.elman_bidirectional`) advances both
    directions, writing each state at its input step: no flip and no
    concatenation, and half as many loops. Otherwise the call is Keras' own
    (`fused_reason` says why); Keras' fused LSTM/GRU dispatch in
    `keras.layers.Bidirectional.call` does the same for its layers.

    Fused calls: `merge_mode="concat"`, `return_sequences=True`, no
    `return_state`, `initial_state` or `stateful`, cells of the same width
    and activation without `output_units`, and no dropout inside the cells
    in a training call (dropout layers around it are fine). Masks are
    Keras': each direction carries its state over masked steps, and the
    outputs there are zeros (`Bidirectional` sets `zero_output_for_mask`).

    Example:

    ```python
    import numpy as np
    from layers import ElmanBidirectional, ElmanCell, ElmanRNN
    x = np.random.random((4, 20, 8)).astype("float32")
    layer = ElmanBidirectional(ElmanRNN(ElmanCell(16), return_sequences=True))
    y = layer(x)  # (4, 20, 32)
    assert layer.fused_reason is None
    ```
    """

    def __init__(self, layer, backward_layer=None, **kwargs):
        for name, value in (("layer", layer), ("backward_layer", backward_layer)):
            if value is not None and not isinstance(value, ElmanRNN):
                raise TypeError(
                    f"Received an invalid value for argument `{name}`, "
                    f"expected an ElmanRNN, got {type(value).__name__}."
                )
        super().__init__(layer, backward_layer=backward_layer, **kwargs)

    def _layer_reason(self):
        forward, backward = self.forward_layer, self.backward_layer
        for name, rnn in (("forward", forward), ("backward", backward)):
            reason = rnn._static_fused_reason()
            if reason is not None:
                return f"the {name} layer runs Keras' step loop: {reason}"
        if self.merge_mode != "concat":
            return f"merge_mode={self.merge_mode!r} (fused: 'concat')"
        if not self.return_sequences:
            return "return_sequences=False (fused: whole sequences)"
        if self.return_state:
            return "return_state=True"
        if self.stateful:
            return "stateful=True"
        cells = (forward.cell, backward.cell)
        if cells[0].units != cells[1].units:
            return (
                f"the directions differ in width ({cells[0].units} and "
                f"{cells[1].units} units)"
            )
        if cells[0].activation is not cells[1].activation:
            return "the directions differ in activation"
        if cells[0].use_bias != cells[1].use_bias:
            return "one direction has a bias and the other none"
        if any(cell.output_units is not None for cell in cells):
            return "a cell has `output_units` (an output layer per direction)"
        return None

    @property
    def fused_reason(self):
        """Why a training call would not be fused (None when it is).

        Cell dropout or recurrent dropout only stop training calls;
        inference calls with them are still fused.
        """
        reason = self._layer_reason()
        if reason is None:
            reason = self._dropout_reason()
        return reason

    def _dropout_reason(self):
        for name, rnn in (("forward", self.forward_layer), ("backward", self.backward_layer)):
            cell = rnn.cell
            if cell.dropout > 0 or cell.recurrent_dropout > 0:
                return (
                    f"the {name} cell has dropout={cell.dropout}, "
                    f"recurrent_dropout={cell.recurrent_dropout}: training "
                    "calls run the two directions apart (inference calls "
                    "stay fused)"
                )
        return None

    def call(self, sequences, initial_state=None, mask=None, training=None):
        fused = (
            initial_state is None
            and self._layer_reason() is None
            and not (training and self._dropout_reason() is not None)
        )
        if not fused:
            return super().call(
                sequences, initial_state=initial_state, mask=mask,
                training=training,
            )
        return self._fused_call(sequences, mask)

    def _fused_call(self, sequences, mask):
        import tensorflow as tf

        from layers.fused_elman import elman_bidirectional

        forward, backward = self.forward_layer.cell, self.backward_layer.cell
        dtype = forward.compute_dtype
        x = tf.convert_to_tensor(sequences, dtype=dtype)
        batch, steps = tf.shape(x)[0], tf.shape(x)[1]
        units = forward.units
        # Both directions' projections as one matmul over all steps.
        kernel = tf.concat(
            [tf.convert_to_tensor(forward.kernel), tf.convert_to_tensor(backward.kernel)],
            axis=1,
        )
        u = tf.matmul(tf.reshape(x, (-1, kernel.shape[0])), kernel)
        if forward.use_bias:
            u = u + tf.concat(
                [tf.convert_to_tensor(forward.bias), tf.convert_to_tensor(backward.bias)],
                axis=0,
            )
        u = tf.reshape(u, (batch, steps, 2 * units))
        h0 = tf.zeros((batch, units), dtype=dtype)

        keep = None
        if mask is not None:
            mask = tf.cast(tf.convert_to_tensor(mask), tf.bool)
            if mask.shape.rank == 3:
                mask = mask[:, :, 0]
            keep = mask[:, :, None]

        states = elman_bidirectional(
            u, h0, h0,
            tf.convert_to_tensor(forward.recurrent_kernel),
            tf.convert_to_tensor(backward.recurrent_kernel),
            keep=keep, activation=_ACTIVATION_NAMES[forward.activation],
        )
        # The loops' outputs have no static shape; a reshape gives it back.
        states = tf.reshape(states, (batch, steps, 2 * units))
        if keep is not None:
            # `zero_output_for_mask`, which Bidirectional sets for sequences.
            states = tf.where(keep, states, tf.zeros_like(states))
        return states

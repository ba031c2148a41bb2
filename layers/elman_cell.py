"""The Elman recurrence, as a Keras `SimpleRNNCell` subclass."""

import numbers

import keras
from keras import activations, initializers, ops, regularizers

# Activations the recurrence accepts for `f`. Anything else (say "softmax")
# would make the state a distribution, which is never what an Elman network means.
RECURRENT_ACTIVATIONS = ("tanh", "relu", "sigmoid", "linear")


def _check_positive_int(name, value, *, allow_none=False):
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value <= 0
    ):
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"positive integer{' or None' if allow_none else ''}, got {value!r}."
        )


def _check_rate(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"float in [0, 1), got {value!r}."
        )


def _check_activation(name, value, allowed=None):
    try:
        fn = activations.get(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected an "
            f"activation name such as 'tanh' or 'relu', got {value!r}."
        ) from error
    if allowed is not None and isinstance(value, str) and value not in allowed:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected one "
            f"of {allowed}, got {value!r}."
        )
    return fn


@keras.saving.register_keras_serializable(package="rnn_pipeline")
class ElmanCell(keras.layers.SimpleRNNCell):
    """One step of an Elman network, with an optional output layer.

    The state update is the Elman recurrence

        h_t = f(x_t W_xh + h_{t-1} W_hh + b_h)

    with the same weights at every step (`kernel` is `W_xh`,
    `recurrent_kernel` is `W_hh`, `bias` is `b_h`: the names and shapes of
    `keras.layers.SimpleRNNCell`, so weights move freely between the two).
    When `output_units` is given the cell also computes the output layer

        y_t = g(h_t W_hy + b_y)

    and returns `y_t` as its output, while the state it carries stays `h_t`.
    Wrapped in `keras.layers.RNN` (or the fused `ElmanRNN`), gradients flow
    through every step: backpropagation through time.

    Args:
        units: Positive integer, size of the hidden state `h_t`.
        activation: `f`, one of "tanh" (default), "relu", "sigmoid",
            "linear", or a callable.
        use_bias: Boolean, whether the recurrence has the bias `b_h`.
        kernel_initializer: Initializer for `W_xh`. Default "glorot_uniform".
        recurrent_initializer: Initializer for `W_hh`. Default "orthogonal";
            use "identity" with `activation="relu"` (Le et al., 2015).
        bias_initializer: Initializer for `b_h`. Default "zeros".
        output_units: Optional positive integer, size of the output layer
            `y_t`. `None` (default) returns `h_t` as the output.
        output_activation: `g`, any Keras activation. Default None (linear),
            which suits logits fed to a softmax cross-entropy or CTC loss.
        output_kernel_initializer: Initializer for `W_hy`.
        output_bias_initializer: Initializer for `b_y`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer,
        output_kernel_regularizer, output_bias_regularizer: Optional
            regularizers for the weights of the same names.
        kernel_constraint, recurrent_constraint, bias_constraint: Optional
            constraints for the weights of the same names.
        dropout: Float in [0, 1), fraction of the inputs `x_t` to drop.
        recurrent_dropout: Float in [0, 1), fraction of `h_{t-1}` to drop.
        seed: Random seed for dropout.

    Call arguments:
        sequence: The input at one step, shape `(batch, features)`.
        states: A list holding `h_{t-1}`, shape `(batch, units)`.
        training: Python boolean; dropout is applied only when True.

    Returns:
        `(output, [h_t])`: `output` is `y_t`, shape `(batch, output_units)`,
        when `output_units` is set, else `h_t`, shape `(batch, units)`.

    Example:

    ```python
    import numpy as np, keras
    from layers import ElmanCell
    x = np.random.random((32, 10, 8)).astype("float32")
    rnn = keras.layers.RNN(ElmanCell(16, output_units=5), return_sequences=True)
    y = rnn(x)  # (32, 10, 5)
    ```
    """

    def __init__(
        self,
        units,
        activation="tanh",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        output_units=None,
        output_activation=None,
        output_kernel_initializer="glorot_uniform",
        output_bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        output_kernel_regularizer=None,
        output_bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        _check_positive_int("units", units)
        _check_positive_int("output_units", output_units, allow_none=True)
        _check_activation("activation", activation, RECURRENT_ACTIVATIONS)
        _check_activation("output_activation", output_activation)
        _check_rate("dropout", dropout)
        _check_rate("recurrent_dropout", recurrent_dropout)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
        ):
            raise ValueError(
                "Received an invalid value for argument `seed`, expected an "
                f"integer or None, got {seed!r}."
            )
        super().__init__(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            **kwargs,
        )
        self.output_units = output_units
        self.output_activation = activations.get(output_activation)
        self.output_kernel_initializer = initializers.get(
            output_kernel_initializer
        )
        self.output_bias_initializer = initializers.get(output_bias_initializer)
        self.output_kernel_regularizer = regularizers.get(
            output_kernel_regularizer
        )
        self.output_bias_regularizer = regularizers.get(output_bias_regularizer)
        self.output_size = output_units if output_units is not None else units

    def build(self, input_shape):
        super().build(input_shape)
        if self.output_units is None:
            self.output_kernel = None
            self.output_bias = None
            return
        self.output_kernel = self.add_weight(
            shape=(self.units, self.output_units),
            name="output_kernel",
            initializer=self.output_kernel_initializer,
            regularizer=self.output_kernel_regularizer,
        )
        self.output_bias = self.add_weight(
            shape=(self.output_units,),
            name="output_bias",
            initializer=self.output_bias_initializer,
            regularizer=self.output_bias_regularizer,
        )

    def project(self, hidden):
        """The output layer `y = g(h W_hy + b_y)`, for any leading shape."""
        if self.output_units is None:
            return hidden
        return self.output_activation(
            ops.matmul(hidden, self.output_kernel) + self.output_bias
        )

    def call(self, sequence, states, training=False):
        hidden, new_states = super().call(sequence, states, training=training)
        return self.project(hidden), new_states

    def get_config(self):
        config = super().get_config()
        if config["activation"] not in RECURRENT_ACTIVATIONS:
            # A callable outside the named set (accepted on purpose): as a
            # name it would be refused on the way back, so it is saved as
            # the object it is, and clones and saved models load.
            config["activation"] = keras.saving.serialize_keras_object(
                self.activation
            )
        return {
            **config,
            "output_units": self.output_units,
            "output_activation": activations.serialize(self.output_activation),
            "output_kernel_initializer": initializers.serialize(
                self.output_kernel_initializer
            ),
            "output_bias_initializer": initializers.serialize(
                self.output_bias_initializer
            ),
            "output_kernel_regularizer": regularizers.serialize(
                self.output_kernel_regularizer
            ),
            "output_bias_regularizer": regularizers.serialize(
                self.output_bias_regularizer
            ),
        }

"""The character language model: Embedding -> Elman RNN layers -> logits."""

import numbers

import keras

from layers.elman_cell import ElmanCell
from layers.elman_rnn import ElmanRNN
from models.dtype_policy import dtype_policy as policy_scope


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"positive integer, got {value!r}."
        )


def build_language_model(
    *,
    vocabulary_size,
    embedding_dim=64,
    hidden_size=512,
    num_layers=1,
    dropout=0.0,
    activation="tanh",
    output_hidden_size=0,
    seed=None,
    dtype_policy=None,
    name="language_model",
):
    """A character language model built from `ElmanCell` layers.

    `ids -> Embedding -> Dropout -> [ElmanRNN(ElmanCell(hidden_size)) ->
    Dropout] * num_layers [-> Dense(output_hidden_size, relu) -> Dropout] ->
    Dense(vocabulary_size)`: at every step the model gives the logits of the
    next character. Layers are named `embedding`, `embedding_dropout`,
    `rnn_1`.. `rnn_N`, `rnn_1_dropout`.., `output_hidden`,
    `output_hidden_dropout`, `logits`, so the generation step model
    (`models.text_generation`) can find them.

    Args:
        vocabulary_size: Positive integer, the number of ids including the
            reserved padding and unknown ids (`Vocabulary.size`).
        embedding_dim: Positive integer, size of the character embedding.
        hidden_size: Positive integer, units of every Elman layer.
        num_layers: Positive integer, how many Elman layers are stacked.
        dropout: Float in [0, 1), dropout after the embedding and after each
            Elman layer (not on the recurrent connection, which keeps the
            fused path open).
        activation: The recurrence's activation, "tanh" (default) or "relu".
        output_hidden_size: Non-negative integer; when positive, a ReLU layer
            of this size reads each step's state before the logits (a "deep
            output", Pascanu et al. 2014: costs no sequential work). 0 (the
            default) maps the state straight to the logits.
        seed: Optional integer seed for the dropout layers.
        dtype_policy: "float32", or "mixed_bfloat16" / "mixed_float16":
            every layer but the logits computes in 16 bits with float32
            weights (`models.dtype_policy`); None (default): Keras' global
            policy. The logits are float32 in every case.
        name: The model's name.

    Returns:
        A `keras.Model` mapping int32 ids `(batch, time)` to float logits
        `(batch, time, vocabulary_size)`.

    Example:

    ```python
    model = build_language_model(vocabulary_size=67, hidden_size=256)
    logits = model(np.zeros((2, 10), "int32"))  # (2, 10, 67)
    ```
    """
    _check_positive_int("vocabulary_size", vocabulary_size)
    _check_positive_int("embedding_dim", embedding_dim)
    _check_positive_int("hidden_size", hidden_size)
    _check_positive_int("num_layers", num_layers)
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, numbers.Real)
        or not 0.0 <= dropout < 1.0
    ):
        raise ValueError(
            "Received an invalid value for argument `dropout`, expected a "
            f"float in [0, 1), got {dropout!r}."
        )

    if (
        isinstance(output_hidden_size, bool)
        or not isinstance(output_hidden_size, numbers.Integral)
        or output_hidden_size < 0
    ):
        raise ValueError(
            "Received an invalid value for argument `output_hidden_size`, "
            f"expected a non-negative integer, got {output_hidden_size!r}."
        )

    # Built under the policy, the model carries it too (Keras' compile then
    # scales the loss for mixed_float16).
    with policy_scope(dtype_policy):
        ids = keras.Input((None,), dtype="int32", name="ids")
        x = keras.layers.Embedding(vocabulary_size, embedding_dim, name="embedding")(ids)
        x = keras.layers.Dropout(dropout, seed=seed, name="embedding_dropout")(x)
        for layer in range(1, num_layers + 1):
            cell = ElmanCell(hidden_size, activation=activation, seed=seed, name=f"rnn_{layer}_cell")
            x = ElmanRNN(cell, return_sequences=True, name=f"rnn_{layer}")(x)
            x = keras.layers.Dropout(dropout, seed=seed, name=f"rnn_{layer}_dropout")(x)
        if output_hidden_size:
            x = keras.layers.Dense(output_hidden_size, activation="relu", name="output_hidden")(x)
            x = keras.layers.Dropout(dropout, seed=seed, name="output_hidden_dropout")(x)
        # float32 logits: the softmax and the loss read them at full precision.
        logits = keras.layers.Dense(vocabulary_size, dtype="float32", name="logits")(x)
        return keras.Model(ids, logits, name=name)

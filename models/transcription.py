"""`build_transcription_model`: the Elman RNN CTC speech recogniser."""

import math
import numbers
import random

import keras

from layers import Bidirectional, ElmanCell, ElmanRNN
from models.ctc_model import CTCModel
from models.dtype_policy import dtype_policy as policy_scope
from models.frame_stacking import FrameStacking
from models.frequency_warp import FrequencyWarp
from models.random_eq import RandomEQ
from models.log_probabilities import LogProbabilities


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"positive integer, got {value!r}."
        )


def _check_rate(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"float in [0, 1), got {value!r}."
        )


def _check_finite_non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"finite float >= 0, got {value!r}."
        )


def build_transcription_model(
    *,
    num_features,
    vocabulary_size,
    hidden_size=256,
    num_layers=2,
    bidirectional=True,
    frame_stack=3,
    num_dense_layers=1,
    dropout=0.1,
    activation="tanh",
    frequency_warp=0.0,
    random_eq=0.0,
    input_noise=0.0,
    weight_noise=0.0,
    weight_noise_seed=None,
    learning_rate=1e-3,
    clipnorm=5.0,
    ema_momentum=None,
    dtype_policy=None,
    name="transcription",
):
    """Build and compile the CTC transcription model on `ElmanRNN(ElmanCell)`.

    The graph, every layer named:

        features (batch, time, num_features), feature_length (batch,)
        -> frequency_warp: FrequencyWarp(frequency_warp), training only
           (present only when frequency_warp > 0)
        -> random_eq: RandomEQ(random_eq), training only (present only
           when random_eq > 0)
        -> frame_stacking: FrameStacking(frame_stack), giving the length mask
           passed to every recurrent layer
        -> input_noise: GaussianNoise(input_noise), training only (present
           only when input_noise > 0)
        -> num_dense_layers x [dense_i: Dense(hidden_size, relu), dense_dropout_i]
        -> num_layers x [rnn_i: (Bidirectional) ElmanRNN(ElmanCell(hidden_size)),
                         dropout_i]
        -> logits: Dense(vocabulary_size), float32
        -> log_probs: LogProbabilities (log-softmax; the mask stops here), float32

    Outputs are a dict: `"log_probs"` float32 `(batch, frames, vocabulary_size)`
    with `frames = ceil(time / frame_stack)`, class `Vocabulary.blank_id`
    (0) the CTC blank, and `"frame_length"` int32 `(batch,)` the valid frames
    of each utterance. The model is a `CTCModel` (a functional model whose
    `compute_loss` is CTC on those lengths), compiled with Adam, so it goes
    straight into `fit` with batches of `({"features", "feature_length"},
    labels)`.

    Args:
        num_features: Feature size per frame (e.g. 80 log-mel bands).
        vocabulary_size: Output classes, `vocabulary.size` (blank included).
        hidden_size: Units per recurrent direction.
        num_layers: Number of recurrent layers.
        bidirectional: Whether each recurrent layer reads both directions
            (the outputs are concatenated).
        frame_stack: Frames stacked into one step (stride as well).
        num_dense_layers: ReLU layers applied to each stacked frame before
            the recurrence (DeepSpeech's front end: the recurrent layers
            then see learned features, which speeds up training); 0 for none.
        dropout: Dropout rate after the stacking and after each recurrent
            layer.
        activation: The Elman state activation, "tanh" or "relu".
        frequency_warp: Largest random stretch of the mel axis applied in
            training (vocal tract length perturbation, for unseen
            speakers); 0 for none. Only meaningful for mel-band features.
        random_eq: Largest amplitude of the random smooth gain curve added
            over the mel axis in training (`RandomEQ`: a random recording
            channel, for speakers recorded on other equipment); 0 for
            none. Only meaningful for mel-band features without per-band
            normalisation.
        input_noise: Standard deviation of the Gaussian noise added to every
            stacked feature in training (`keras.layers.GaussianNoise`, in
            the units of the normalised features); 0 for none.
        weight_noise: Standard deviation of the Gaussian noise added to
            every trainable weight for each training step and taken off
            after its update (`CTCModel.weight_noise`); 0 for none. Not
            with `ema_momentum`: the average would read the noisy weights.
        weight_noise_seed: Seed of that noise (an integer); None draws one
            from Python's `random` (which `keras.utils.set_random_seed`
            seeds).
        learning_rate: Adam's learning rate.
        clipnorm: Gradient norm clip (recurrent nets need one); None for none.
        ema_momentum: When set, Adam also keeps an exponential moving average
            of the weights (`use_ema=True`, Polyak averaging) with this
            momentum; `keras.callbacks.SwapEMAWeights` evaluates and saves
            the averaged weights. None for none.
        dtype_policy: "float32", or "mixed_bfloat16" / "mixed_float16": the
            dense and recurrent layers compute in 16 bits with float32
            weights (`models.dtype_policy`); the front end (warp, EQ,
            stacking), the logits and the CTC loss stay float32. None
            (default): Keras' global policy.
        name: The model's name.

    Returns:
        A compiled `CTCModel`.

    Example:

    ```python
    from pipelines.vocabulary import Vocabulary, SPEECH_ALPHABET
    vocabulary = Vocabulary(SPEECH_ALPHABET)
    model = build_transcription_model(num_features=80, vocabulary_size=vocabulary.size)
    out = model({"features": features, "feature_length": lengths})
    out["log_probs"].shape  # (batch, ceil(time / 3), vocabulary.size)
    ```
    """
    _check_positive_int("num_features", num_features)
    _check_positive_int("vocabulary_size", vocabulary_size)
    if vocabulary_size < 2:
        raise ValueError(
            "Received an invalid value for argument `vocabulary_size`, expected "
            f"at least 2 (the blank and one character), got {vocabulary_size}."
        )
    _check_positive_int("hidden_size", hidden_size)
    _check_positive_int("num_layers", num_layers)
    _check_positive_int("frame_stack", frame_stack)
    if isinstance(num_dense_layers, bool) or not isinstance(num_dense_layers, numbers.Integral) or num_dense_layers < 0:
        raise ValueError(
            "Received an invalid value for argument `num_dense_layers`, expected "
            f"a non-negative integer, got {num_dense_layers!r}."
        )
    _check_rate("dropout", dropout)
    if not isinstance(bidirectional, bool):
        raise TypeError(
            "Received an invalid value for argument `bidirectional`, expected "
            f"a bool, got {bidirectional!r}."
        )
    if activation not in ("tanh", "relu"):
        raise ValueError(
            "Received an invalid value for argument `activation`, expected "
            f"'tanh' or 'relu', got {activation!r}."
        )
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real) or learning_rate <= 0:
        raise ValueError(
            "Received an invalid value for argument `learning_rate`, expected "
            f"a positive float, got {learning_rate!r}."
        )

    _check_finite_non_negative("input_noise", input_noise)
    _check_finite_non_negative("weight_noise", weight_noise)
    if weight_noise_seed is not None and (
        isinstance(weight_noise_seed, bool) or not isinstance(weight_noise_seed, numbers.Integral)
    ):
        raise ValueError(
            "Received an invalid value for argument `weight_noise_seed`, expected "
            f"None or an integer, got {weight_noise_seed!r}."
        )
    if weight_noise and ema_momentum is not None:
        raise ValueError(
            "Received `weight_noise` and `ema_momentum` together: the moving average "
            "would average the noisy weights; pass one of them."
        )

    if ema_momentum is not None and (
        isinstance(ema_momentum, bool) or not isinstance(ema_momentum, numbers.Real) or not 0 < ema_momentum < 1
    ):
        raise ValueError(
            "Received an invalid value for argument `ema_momentum`, expected "
            f"None or a float in (0, 1), got {ema_momentum!r}."
        )

    # The front end stays float32: the warp's interpolation, the EQ and the
    # stacking are cheap, and they then see the features as they are.
    features = keras.Input((None, num_features), name="features")
    feature_length = keras.Input((), dtype="int32", name="feature_length")
    x = features
    if frequency_warp:
        x = FrequencyWarp(frequency_warp, dtype="float32", name="frequency_warp")(x)
    if random_eq:
        x = RandomEQ(random_eq, dtype="float32", name="random_eq")(x)
    x, frame_length, mask = FrameStacking(frame_stack, dtype="float32", name="frame_stacking")(
        [x, feature_length]
    )
    if input_noise:
        x = keras.layers.GaussianNoise(input_noise, dtype="float32", name="input_noise")(x)
    # Built under the policy, the model carries it too (Keras' compile then
    # scales the loss for mixed_float16).
    with policy_scope(dtype_policy):
        if dropout:
            x = keras.layers.Dropout(dropout, name="input_dropout")(x)
        for index in range(num_dense_layers):
            x = keras.layers.Dense(hidden_size, activation="relu", name=f"dense_{index}")(x)
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"dense_dropout_{index}")(x)
        for index in range(num_layers):
            rnn = ElmanRNN(
                ElmanCell(
                    hidden_size,
                    activation=activation,
                    recurrent_initializer="identity" if activation == "relu" else "orthogonal",
                ),
                return_sequences=True,
                name=f"elman_{index}" if bidirectional else f"rnn_{index}",
            )
            if bidirectional:
                rnn = Bidirectional(rnn, name=f"rnn_{index}")
            x = rnn(x, mask=mask)
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"dropout_{index}")(x)
        # float32 logits: the log-softmax and the CTC loss read them at full precision.
        logits = keras.layers.Dense(vocabulary_size, dtype="float32", name="logits")(x)
        log_probs = LogProbabilities(dtype="float32", name="log_probs")(logits)
        model = CTCModel(
            inputs={"features": features, "feature_length": feature_length},
            outputs={"log_probs": log_probs, "frame_length": frame_length},
            name=name,
        )
        model.compile(
            optimizer=keras.optimizers.Adam(
                learning_rate=learning_rate,
                clipnorm=clipnorm,
                use_ema=ema_momentum is not None,
                ema_momentum=0.99 if ema_momentum is None else ema_momentum,
            )
        )
    if weight_noise:
        model.weight_noise = float(weight_noise)
        model.weight_noise_seed = (
            random.randrange(2**31) if weight_noise_seed is None else int(weight_noise_seed)
        )
    return model

"""SavedModel export of the character language model for TF Serving."""

import keras
import numpy as np
import tensorflow as tf

from serving.export import write_saved_model_version
from serving.vocabulary_tables import VocabularyTables

# Layers that act on each time step alone, so the one-step generation path
# may apply them per character; Dropout is the identity at inference.
_PER_STEP = (keras.layers.Dense, keras.layers.LayerNormalization, keras.layers.Activation)
_IDENTITY = (keras.layers.Dropout, keras.layers.InputLayer)
# The signature that samples from the caller's seed (`serving_default` draws
# fresh random numbers on every call).
SEEDED_SIGNATURE = "generate_seeded"


class _StepModel:
    """One character step of a chain `Embedding -> RNN... -> Dense` model."""

    def __init__(self, model):
        self.embedding = None
        self.stages = []  # ("rnn", layer) or ("pointwise", layer), in order
        for layer in model.layers:
            if isinstance(layer, _IDENTITY):
                continue
            if isinstance(layer, keras.layers.Embedding) and self.embedding is None and not self.stages:
                self.embedding = layer
            elif isinstance(layer, keras.layers.RNN):
                if layer.go_backwards or not layer.return_sequences:
                    raise ValueError(
                        f"Language model layer `{layer.name}` must be a forward "
                        "RNN with return_sequences=True to be generated from, got "
                        f"go_backwards={layer.go_backwards}, "
                        f"return_sequences={layer.return_sequences}."
                    )
                if not isinstance(layer.cell.state_size, int):
                    raise ValueError(
                        f"Language model layer `{layer.name}` must have one "
                        f"state tensor, got state_size={layer.cell.state_size!r}."
                    )
                self.stages.append(("rnn", layer))
            elif isinstance(layer, _PER_STEP):
                self.stages.append(("pointwise", layer))
            else:
                raise ValueError(
                    f"Language model layer `{layer.name}` "
                    f"({type(layer).__name__}) has no one-step form; expected "
                    "Embedding, then ElmanRNN, Dropout, Dense, "
                    "LayerNormalization or Activation layers in a chain."
                )
        if self.embedding is None:
            raise ValueError(
                f"Model `{model.name}` has no leading Embedding layer; expected "
                "a character language model from build_language_model."
            )
        self.rnns = [layer for kind, layer in self.stages if kind == "rnn"]

    def zero_states(self, batch_size):
        return [tf.zeros((batch_size, rnn.cell.state_size)) for rnn in self.rnns]

    def __call__(self, ids, states):
        """Logits `(batch, vocabulary)` and new states for ids `(batch,)`."""
        x = self.embedding(ids)
        new_states = []
        for kind, layer in self.stages:
            if kind == "rnn":
                x, state = layer.cell(x, [states[len(new_states)]], training=False)
                state = state[0] if isinstance(state, (list, tuple)) else state
                # float32 between steps whatever the policy (the loop's states are).
                new_states.append(tf.cast(state, tf.float32))
            else:
                x = layer(x)
        return tf.cast(x, tf.float32), new_states


_VOCABULARY_HINT = (
    "expected characters of its vocabulary (the characters of its training text, listed in "
    "assets/metadata.json of the export)"
)


def _hex(codepoints):
    """Upper-case hexadecimal strings of int32 code points, at least 4 digits (as in U+00E9)."""
    digits = tf.constant(list("0123456789ABCDEF"))
    places = tf.stack([tf.bitwise.right_shift(codepoints, 4 * k) & 15 for k in range(5, -1, -1)], axis=-1)
    six = tf.strings.reduce_join(tf.gather(digits, places), axis=-1)
    return tf.strings.regex_replace(six, "^0{0,2}([0-9A-F]{4,})$", "\\1")


def check_known_characters(text, ids, unk_id, name):
    """An assertion (InvalidArgument) that every character of `text` has an id of its own.

    The unknown id never occurs in the training text, so its embedding row
    was never trained (`generate.py` refuses such prompts too). The message
    names the first offending row and its characters, each with its code
    point (an unknown space or control character is otherwise invisible),
    e.g. "every `prompt` character must be in the vocabulary of the model:
    `prompt`[1] holds characters é (U+00E9) the model was not trained on;
    expected ...".

    Args:
        text: The string input `(batch,)`.
        ids: Its ids `(batch, time)`, padded (`VocabularyTables.encode`).
        unk_id: The vocabulary's unknown id.
        name: The input's name in the message.
    """
    unknown = tf.equal(ids, unk_id)
    bad_rows = tf.reduce_any(unknown, axis=1)
    any_bad = tf.reduce_any(bad_rows)

    def message():  # built only for a request that fails
        row = tf.argmax(tf.cast(bad_rows, tf.int32), output_type=tf.int32)
        # The same split as the table's (`unicode_split`, invalid bytes replaced), so columns match.
        codepoints = tf.strings.unicode_decode(text[row], "UTF-8")
        found = tf.sort(tf.unique(tf.boolean_mask(codepoints, unknown[row][: tf.size(codepoints)])).y)
        characters = tf.strings.unicode_encode(found[:, None], "UTF-8")
        listed = tf.strings.reduce_join(
            tf.strings.join([characters, " (U+", _hex(found), ")"]), separator=", "
        )
        others = tf.reduce_sum(tf.cast(bad_rows, tf.int32)) - 1
        return tf.strings.join([
            f"every `{name}` character must be in the vocabulary of the model: `{name}`[",
            tf.strings.as_string(row), "] holds characters ", listed, " the model was not trained on",
            tf.where(others > 0, tf.strings.join([
                " (and ", tf.strings.as_string(others), tf.where(others == 1, " more row does)", " more rows do)"),
            ]), ""),
            f"; {_VOCABULARY_HINT}",
        ])

    return tf.debugging.Assert(
        tf.logical_not(any_bad), [tf.cond(any_bad, message, lambda: tf.constant(""))]
    )


def check_temperature(temperature):
    """An assertion (InvalidArgument) that `temperature` is a finite number >= 0, naming the value."""
    message = tf.strings.join([
        "`temperature` must be a finite number >= 0 (0 is greedy), got ",
        tf.strings.as_string(temperature, shortest=True),
    ])
    return tf.debugging.Assert(tf.math.is_finite(temperature) & (temperature >= 0.0), [message])


# Machine epsilons of the 16-bit compute dtypes a mixed policy uses.
_EPSILON = {tf.bfloat16: 2.0**-7, tf.float16: 2.0**-10}


def _check_step_model(model, step, vocabulary_size):
    """Fail at export time if the step path disagrees with the full model.

    In float32 the two agree to 1e-4. Under a mixed policy the step path
    rounds each step's state to 16 bits where the whole-sequence loop may
    not (narrow layers loop in float32 on CPU), so they agree to a few
    epsilons of the 16-bit type, relative to the logits' size; a model that
    is not a plain chain differs by the logits' size itself.
    """
    ids = np.random.default_rng(0).integers(0, vocabulary_size, (2, 7)).astype("int32")
    expected = keras.ops.convert_to_numpy(model(ids, training=False))
    epsilon = max(_EPSILON.get(tf.as_dtype(rnn.cell.compute_dtype), 0.0) for rnn in step.rnns)
    rtol = 4 * epsilon if epsilon else 1e-4
    atol = max(1e-4, rtol * float(np.abs(expected).max()))
    states = step.zero_states(2)
    for t in range(ids.shape[1]):
        logits, states = step(tf.constant(ids[:, t]), states)
        if not np.allclose(logits.numpy(), expected[:, t], atol=atol, rtol=rtol):
            raise ValueError(
                f"Model `{model.name}` gives different logits when run one "
                "character at a time than on the whole sequence (step "
                f"{t}); it is not a plain Embedding -> RNN -> Dense chain and "
                "cannot be exported for generation."
            )


def export_language_model(
    model,
    vocabulary,
    export_base,
    *,
    trained_on,
    metrics,
    config=None,
    model_name="language_model",
):
    """Export a character language model as the next TF Serving version.

    Writes `<export_base>/<model_name>/<version>/` (see
    `serving.export.write_saved_model_version`) with two signatures:

    - `serving_default`: `prompt` string `(batch,)`, `max_new_chars` int32
      scalar, `temperature` float32 scalar -> `text` string `(batch,)`, the
      continuation only. The prompt is read once, left to right, and the RNN
      state is then carried from character to character; temperature 0 is
      greedy (argmax). The reserved ids (padding, unknown) are never
      generated. Empty prompts, prompts with characters outside the
      vocabulary (the message names the row and the characters), a negative
      `max_new_chars` and a temperature that is not a finite number >= 0
      (NaN, infinity) are rejected with InvalidArgument.
    - `generate_seeded` (`SEEDED_SIGNATURE`): the same inputs and `seed` int64
      scalar -> `text`. The seed replaces the fresh random numbers, so the
      same request gives the same text in every process and on every call
      (rows of one request still differ from each other). A row's text
      depends on the whole request (the batch is sampled as one), so a server
      must not merge seeded requests into one call.
    - `score`: `text` string `(batch,)` -> `nll` float32 `(batch,)`, the summed
      negative log-likelihood in nats of every character after the first
      given the ones before it, and `char_count` int32 `(batch,)`, how many
      characters were scored (length - 1, or 0). A text with characters
      outside the vocabulary is rejected with InvalidArgument naming its row
      and the characters.

    Args:
        model: A Keras model mapping int32 ids `(batch, time)` to logits
            `(batch, time, vocabulary_size)`, built by `build_language_model`
            (Embedding -> ElmanRNN layers -> Dense, Dropout anywhere).
        vocabulary: The `pipelines.vocabulary.Vocabulary` the model was
            trained with.
        export_base: Directory holding one folder per model name.
        trained_on: What the model was trained on (a string or a dict, e.g.
            the dataset path and split), stored in the metadata.
        metrics: Dict of final metrics (e.g. `val_bpc`), stored in the metadata.
        config: Optional dict of the resolved training configuration.
        model_name: Folder name of the model. Default "language_model".

    Returns:
        The path of the new version directory.

    Example:

    ```python
    path = export_language_model(model, vocab, "runs/lm/export",
                                 trained_on="data/tinyshakespeare.txt",
                                 metrics={"val_bpc": 2.1})
    # runs/lm/export/language_model/1
    ```
    """
    if model.outputs and model.outputs[0].shape[-1] != vocabulary.size:
        raise ValueError(
            f"Model `{model.name}` gives {model.outputs[0].shape[-1]} logits "
            f"per step, but the vocabulary has {vocabulary.size} ids; export "
            "the model with the vocabulary it was trained with."
        )
    tables = VocabularyTables(vocabulary)
    step = _StepModel(model)
    _check_step_model(model, step, vocabulary.size)
    reserved = tf.constant(
        np.arange(vocabulary.size) < vocabulary.num_reserved
    )

    def generate(prompt, max_new_chars, temperature, seed=None):
        ids, lengths = tables.encode(prompt)
        batch_size = tf.shape(ids)[0]
        checks = [
            tf.debugging.assert_greater(
                lengths, 0, message="every `prompt` must hold at least one character"
            ),
            # As `generate_text` refuses them.
            check_known_characters(prompt, ids, vocabulary.unk_id, "prompt"),
            tf.debugging.assert_non_negative(
                max_new_chars, message="`max_new_chars` must be >= 0"
            ),
            # NaN would sample from NaN logits; infinity would be uniform sampling.
            check_temperature(temperature),
        ]
        with tf.control_dependencies(checks):
            ids = tf.identity(ids)
            max_new_chars = tf.identity(max_new_chars)
            temperature = tf.identity(temperature)

        def read_prompt(t, states, last_logits):
            logits, new_states = step(ids[:, t], states)
            active = (t < lengths)[:, None]
            states = [tf.where(active, n, s) for n, s in zip(new_states, states)]
            return t + 1, states, tf.where(active, logits, last_logits)

        _, states, logits = tf.while_loop(
            lambda t, *_: t < tf.shape(ids)[1],
            read_prompt,
            (tf.constant(0), step.zero_states(batch_size),
             tf.zeros((batch_size, vocabulary.size))),
        )

        # Each call draws its own random numbers. `tf.random.categorical` would
        # take an op seed fixed when the export was traced (training sets the
        # global seed), so every server process, and every replica, would
        # replay the same samples. The clock and a stateful draw seed a
        # stateless sampler instead, advanced by the step index; the seeded
        # signature takes the caller's seed in their place.
        if seed is None:
            call_seed = tf.bitwise.bitwise_xor(
                tf.cast(tf.timestamp() * 1e6, tf.int64),
                tf.random.uniform((), maxval=2**62, dtype=tf.int64),
            )
        else:
            call_seed = seed

        def sample(i, logits):
            scaled = logits / tf.maximum(temperature, 1e-30)
            scaled = tf.where(reserved, -np.inf, scaled)
            seed = tf.stack([call_seed, tf.cast(i, tf.int64)])
            return tf.cond(
                temperature > 0.0,
                lambda: tf.random.stateless_categorical(scaled, 1, seed=seed, dtype=tf.int32)[:, 0],
                lambda: tf.argmax(scaled, axis=-1, output_type=tf.int32),
            )

        def write_char(i, states, logits, chosen):
            next_ids = sample(i, logits)
            chosen = chosen.write(i, next_ids)
            logits, states = step(next_ids, states)
            return i + 1, states, logits, chosen

        _, _, _, chosen = tf.while_loop(
            lambda i, *_: i < max_new_chars,
            write_char,
            (tf.constant(0), states, logits,
             tf.TensorArray(tf.int32, size=max_new_chars, element_shape=(None,))),
        )
        # Stacking an empty TensorArray of unknown element shape fails.
        new_ids = tf.cond(
            max_new_chars > 0,
            lambda: tf.transpose(chosen.stack()),
            lambda: tf.zeros((batch_size, 0), tf.int32),
        )
        return {"text": tables.decode(new_ids)}

    def score(text):
        ids, lengths = tables.encode(text)
        # An unknown character's id never occurred in training: its likelihood
        # would be a meaningless (and large) number, so it is refused.
        with tf.control_dependencies([check_known_characters(text, ids, vocabulary.unk_id, "text")]):
            ids = tf.identity(ids)
        # At least one step: the model's loop cannot run over none (a request of
        # empty texts only); a padding step is never scored.
        ids = tf.pad(ids, [[0, 0], [0, tf.maximum(1 - tf.shape(ids)[1], 0)]], constant_values=vocabulary.pad_id)
        logits = tf.cast(model(ids, training=False), tf.float32)
        log_probs = tf.nn.log_softmax(logits[:, :-1])
        targets = ids[:, 1:]
        picked = tf.gather(log_probs, targets, batch_dims=2)
        scored = tf.sequence_mask(lengths - 1, tf.shape(targets)[1])
        nll = tf.reduce_sum(tf.where(scored, -picked, 0.0), axis=1)
        return {"nll": nll, "char_count": tf.maximum(lengths - 1, 0)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    tables.track(archive)
    archive.add_endpoint(
        "serving_default",
        generate,
        input_signature=[
            tf.TensorSpec((None,), tf.string, name="prompt"),
            tf.TensorSpec((), tf.int32, name="max_new_chars"),
            tf.TensorSpec((), tf.float32, name="temperature"),
        ],
    )
    archive.add_endpoint(
        SEEDED_SIGNATURE,
        generate,
        input_signature=[
            tf.TensorSpec((None,), tf.string, name="prompt"),
            tf.TensorSpec((), tf.int32, name="max_new_chars"),
            tf.TensorSpec((), tf.float32, name="temperature"),
            tf.TensorSpec((), tf.int64, name="seed"),
        ],
    )
    archive.add_endpoint(
        "score", score, input_signature=[tf.TensorSpec((None,), tf.string, name="text")]
    )
    metadata = {
        "task": "language_model",
        "vocabulary": vocabulary.get_config(),
        "trained_on": trained_on,
        "metrics": metrics,
        "config": config,
        "signatures": {
            "serving_default": "prompt string (batch,), max_new_chars int32 (), "
            "temperature float32 () -> text string (batch,) the continuation",
            SEEDED_SIGNATURE: "the same with seed int64 (): the same request and seed give "
            "the same text (in every process and replica)",
            "score": "text string (batch,) -> nll float32 (batch,) summed nats "
            "of every character after the first, char_count int32 (batch,)",
        },
    }
    # A request replayed by TF Serving when it loads the version: `score` only.
    # The generation signatures take scalars (max_new_chars, temperature),
    # which TF Serving's batching session (--enable_batching) refuses; a
    # warmup request for them would fail the version's load there.
    warmup = [("score", {"text": np.array([(vocabulary.characters[0] * 2).encode("utf-8")], object)})]
    return write_saved_model_version(archive, export_base, model_name, metadata, warmup=warmup)

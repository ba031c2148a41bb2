"""Sampling text from a trained character language model, one step at a time."""

import numbers

import keras
import numpy as np

from layers.elman_rnn import ElmanRNN
from pipelines.vocabulary import Vocabulary


def build_step_model(model):
    """A model that runs `model` from given RNN states and returns the new ones.

    The step model shares every weight with `model` (the embedding and the
    layers after the last Elman layer are the same objects; each Elman layer
    is a new `ElmanRNN` around the same cell) and has no dropout. Inputs are right-padded ids (padding
    id 0 is masked, so the state after the last real character is carried
    over the padding) and one state per Elman layer; outputs are the logits
    of the character after the last real one and the final states. Feeding
    a prompt once and then one character at a time gives exactly what
    re-reading the whole text would, at a constant cost per character.

    Args:
        model: A model from `build_language_model` (or loaded from its
            `.keras` file): layers `embedding`, `rnn_1`.., `logits`.

    Returns:
        A `keras.Model` taking `[ids, state_1, .., state_N]`, ids int32
        `(batch, time)` and states `(batch, hidden_size)`, and returning
        `[logits, state_1, .., state_N]`, logits `(batch, vocabulary_size)`.
    """
    try:
        embedding = model.get_layer("embedding")
        model.get_layer("logits")
    except ValueError as error:
        raise ValueError(
            "Received an invalid value for argument `model`, expected a model "
            "from `build_language_model` with layers 'embedding' and 'logits', "
            f"got layers {[layer.name for layer in model.layers]}."
        ) from error
    rnns = [layer for layer in model.layers if isinstance(layer, ElmanRNN)]
    if not rnns:
        raise ValueError(
            "Received an invalid value for argument `model`, expected at least "
            f"one ElmanRNN layer, got layers {[layer.name for layer in model.layers]}."
        )
    for rnn in rnns:
        if rnn.cell.output_units is not None or rnn.go_backwards:
            raise ValueError(
                f"Layer {rnn.name!r} has output_units={rnn.cell.output_units} and "
                f"go_backwards={rnn.go_backwards}; generation expects forward "
                "Elman layers whose output is their state (output_units=None)."
            )

    ids = keras.Input((None,), dtype="int32", name="ids")
    states = [keras.Input((rnn.cell.units,), name=f"{rnn.name}_state") for rnn in rnns]
    mask = keras.ops.not_equal(ids, Vocabulary.pad_id)
    x = embedding(ids)
    new_states = []
    for rnn, state in zip(rnns, states):
        stepper = ElmanRNN(
            rnn.cell, return_sequences=True, return_state=True, name=f"{rnn.name}_step",
            dtype=rnn.dtype_policy,
        )
        x, new_state = stepper(x, initial_state=[state], mask=mask)
        # float32 between steps whatever the policy (the state inputs are float32).
        new_states.append(keras.ops.cast(new_state, "float32"))
    # The last Elman layer's final state is its output at the last real
    # character; the per-step layers after it (Dense; Dropout is skipped at
    # inference) turn it into the logits.
    x = new_states[-1]
    after = model.layers[model.layers.index(rnns[-1]) + 1 :]
    for layer in after:
        if isinstance(layer, keras.layers.Dropout):
            continue
        if not isinstance(layer, keras.layers.Dense):
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) follows the last "
                "Elman layer; generation expects only Dense and Dropout layers there."
            )
        x = layer(x)
    logits = x
    return keras.Model([ids, *states], [logits, *new_states], name=f"{model.name}_step")


def _compiled_step(step_model):
    """`step_model` called as a traced function (TensorFlow backend), kept on
    the step model: fed eagerly, a character runs the layers op by op (7.5
    against 0.75 ms a character for the README's language model, one prompt).
    The prompts and the single characters after them trace apart, so the
    characters' loops keep their static length of 1 (one fused loop, see
    `layers.fused_elman._auto_shards`) when the batch's size changes."""
    compiled = getattr(step_model, "_rnn_pipeline_step", None)
    if compiled is None:
        def call(ids, states):
            return step_model([ids, *states], training=False)

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            prompts, characters = (tf.function(call, reduce_retracing=True) for _ in range(2))

            def compiled(ids, states):
                return (characters if ids.shape[1] == 1 else prompts)(ids, states)

            compiled.functions = (prompts, characters)
        else:
            compiled = call
        object.__setattr__(step_model, "_rnn_pipeline_step", compiled)
    return compiled


def default_prompt(vocabulary):
    """The prompt a sample starts from when none is given: a newline if the
    vocabulary has one (the start of a line), else its first character."""
    return "\n" if "\n" in vocabulary.characters else vocabulary.characters[0]


def _check_arguments(vocabulary, prompts, length, temperature):
    if not isinstance(vocabulary, Vocabulary):
        raise TypeError(
            "Received an invalid value for argument `vocabulary`, expected a "
            f"Vocabulary, got {type(vocabulary).__name__}."
        )
    if isinstance(length, bool) or not isinstance(length, numbers.Integral) or length < 0:
        raise ValueError(
            "Received an invalid value for argument `length`, expected a "
            f"non-negative integer, got {length!r}."
        )
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not 0.0 <= temperature < float("inf")
    ):
        raise ValueError(
            "Received an invalid value for argument `temperature`, expected a "
            f"finite float >= 0 (0 means greedy), got {temperature!r}."
        )
    if not prompts or any(not isinstance(p, str) or not p for p in prompts):
        raise ValueError(
            "Received an invalid value for argument `prompt`, expected one or "
            f"more non-empty strings, got {prompts!r}."
        )
    unknown = sorted({c for p in prompts for c in vocabulary.unknown_characters(p)})
    if unknown:
        raise ValueError(
            f"Received a prompt with characters {unknown!r} that are not in the "
            "vocabulary; expected characters the model was trained on "
            f"({''.join(vocabulary.characters)!r})."
        )


def generate_text(
    model,
    vocabulary,
    prompt,
    *,
    length,
    temperature=1.0,
    seed=None,
    step_model=None,
):
    """Continue `prompt` by `length` characters sampled from `model`.

    The prompts are read once (a batch, right-padded), then each new
    character is fed alone with the RNN states carried from the step before.
    Padding and unknown ids are never sampled.

    Args:
        model: A model from `build_language_model`.
        vocabulary: The `Vocabulary` the model was trained with.
        prompt: A non-empty string, or a list of them (one sample each,
            generated as one batch).
        length: Non-negative integer, characters to generate per prompt.
        temperature: Float >= 0. Logits are divided by it before sampling;
            0 picks the most likely character (greedy, deterministic).
        seed: Optional integer, makes sampling repeatable.
        step_model: Optional result of `build_step_model(model)`, to reuse
            across calls.

    Returns:
        The generated continuation (without the prompt): a string if
        `prompt` is a string, else a list of strings.

    Example:

    ```python
    generate_text(model, vocab, "ROMEO:", length=200, temperature=0.8, seed=0)
    ```
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    _check_arguments(vocabulary, prompts, length, temperature)
    step_model = step_model or build_step_model(model)
    rng = np.random.default_rng(seed)

    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), vocabulary.pad_id, dtype=np.int32)
    for row, text in enumerate(prompts):
        ids[row, : len(text)] = vocabulary.encode(text)
    states = [
        keras.ops.zeros((len(prompts), tensor.shape[-1]), dtype="float32")
        for tensor in step_model.inputs[1:]
    ]
    generated = np.zeros((len(prompts), length), dtype=np.int32)
    run_step = _compiled_step(step_model)
    for step in range(length):
        logits, *states = run_step(keras.ops.convert_to_tensor(ids, dtype="int32"), states)
        logits = np.array(keras.ops.convert_to_numpy(logits), dtype=np.float64)
        logits[:, : Vocabulary.num_reserved] = -np.inf
        if temperature == 0:
            next_ids = logits.argmax(axis=-1)
        else:
            # Gumbel-max: argmax(logits / T + Gumbel noise) ~ softmax(logits / T).
            next_ids = (logits / temperature + rng.gumbel(size=logits.shape)).argmax(axis=-1)
        generated[:, step] = next_ids
        ids = next_ids[:, None].astype(np.int32)
    texts = [vocabulary.decode(row) for row in generated]
    return texts[0] if isinstance(prompt, str) else texts

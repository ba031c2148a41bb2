"""Saving and loading a language model together with its vocabulary."""

import os

import keras

from pipelines.vocabulary import Vocabulary

# The vocabulary travels beside every `.keras` file of a run.
VOCABULARY_FILE = "vocabulary.json"


def save_language_model(model, vocabulary, path):
    """Save `model` to the `.keras` file `path` and `vocabulary.json` beside it."""
    if not str(path).endswith(".keras"):
        raise ValueError(
            f"Received an invalid value for argument `path`, expected a file "
            f"name ending in '.keras', got {path!r}."
        )
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    vocabulary.save(os.path.join(directory, VOCABULARY_FILE))
    model.save(path)


def load_language_model(path):
    """Load `(model, vocabulary)` from a `.keras` file saved by a run.

    The vocabulary is read from `vocabulary.json` in the same directory, and
    must match the model's embedding (same number of ids).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Model file {path!r} does not exist; expected a `.keras` file "
            "written by `train.py --task language_model` (model.keras or best.keras)."
        )
    vocabulary_path = os.path.join(os.path.dirname(os.path.abspath(path)), VOCABULARY_FILE)
    vocabulary = Vocabulary.load(vocabulary_path)
    import layers  # noqa: F401  (registers ElmanCell and ElmanRNN for deserialization)

    model = keras.saving.load_model(path)
    input_dim = model.get_layer("embedding").input_dim
    if input_dim != vocabulary.size:
        raise ValueError(
            f"Vocabulary {vocabulary_path!r} has {vocabulary.size} ids but the "
            f"model {path!r} embeds {input_dim}; expected the vocabulary saved "
            "with this model."
        )
    return model, vocabulary


# The files a `train.py --task language_model` run directory may hold its model in, in order of preference.
RUN_MODEL_FILES = ("best.keras", "model.keras")


def load_language_model_run(run_dir):
    """Load `(model, vocabulary, path)` from a language-model run directory.

    `run_dir` is the `--output-dir` of `train.py --task language_model`; its
    `best.keras` (the checkpoint of best validation loss) is read, else its
    `model.keras`. A FileNotFoundError names the directory when it holds
    neither.
    """
    for name in RUN_MODEL_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            model, vocabulary = load_language_model(path)
            return model, vocabulary, path
    raise FileNotFoundError(
        f"Language model run {run_dir!r} has neither best.keras nor model.keras; expected the "
        "output directory of `train.py --task language_model`."
    )

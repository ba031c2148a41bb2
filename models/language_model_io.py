"""Saving and loading a language model together with its vocabulary."""

import json
import os
import zipfile

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


def keras_model_class(path):
    """The class name a `.keras` file's config.json gives its model, or None when unreadable."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
        return config.get("class_name") if isinstance(config, dict) else None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def unreadable_model_error(path, error):
    """A ValueError: `path` exists but Keras could not load it (`error`, shortened, in brackets)."""
    detail = " ".join(str(error).split()) or type(error).__name__
    if len(detail) > 300:
        detail = detail[:300] + "..."
    return ValueError(
        f"Model file {path!r} exists but cannot be read as a Keras model (corrupt or truncated?) [{detail}]"
    )


def load_vocabulary_file(path):
    """`Vocabulary.load(path)`, with every problem but a missing file a ValueError naming `path`."""
    try:
        return Vocabulary.load(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, TypeError, AttributeError) as error:
        message = str(error)
        if path not in message:
            message = f"Vocabulary file {path}: {message}"
        if "expected" not in message:
            message = f"{message.rstrip('.')}; expected the vocabulary.json saved with the model."
        raise ValueError(message) from None


def load_language_model(path):
    """Load `(model, vocabulary)` from a `.keras` file saved by a run.

    The vocabulary is read from `vocabulary.json` in the same directory, and
    must match the model's embedding (same number of ids). A transcription
    model, an unreadable (corrupt, truncated) file or a bad vocabulary is a
    ValueError naming the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Model file {path!r} does not exist; expected a `.keras` file "
            "written by `train.py --task language_model` (model.keras or best.keras)."
        )
    if keras_model_class(path) == "CTCModel":
        raise ValueError(
            f"Model file {path!r} is a speech transcription model (CTCModel), not a character language "
            "model; expected a `.keras` file written by `train.py --task language_model`."
        )
    vocabulary_path = os.path.join(os.path.dirname(os.path.abspath(path)), VOCABULARY_FILE)
    vocabulary = load_vocabulary_file(vocabulary_path)
    import layers  # noqa: F401  (registers ElmanCell and ElmanRNN for deserialization)

    try:
        model = keras.saving.load_model(path)
    except Exception as error:  # Keras says "File not found" for a truncated zip, and worse for others
        raise unreadable_model_error(path, error) from error
    try:
        input_dim = model.get_layer("embedding").input_dim
    except ValueError:
        raise ValueError(
            f"Model file {path!r} is not a character language model: it has no 'embedding' layer; "
            "expected a `.keras` file written by `train.py --task language_model`."
        ) from None
    if input_dim != vocabulary.size:
        raise ValueError(
            f"Vocabulary {vocabulary_path!r} has {vocabulary.size} ids but the "
            f"model {path!r} embeds {input_dim}; expected the vocabulary saved "
            "with this model."
        )
    return model, vocabulary


# The files a `train.py --task language_model` run directory may hold its model in, in order of preference.
RUN_MODEL_FILES = ("best.keras", "model.keras")

# Written by every speech transcription run (`train.py --task transcription`), by no language model run.
TRANSCRIPTION_FEATURE_CONFIG = "feature_config.json"


def run_kind(run_dir):
    """What `run_dir` is: `"transcription"`, `"language_model"` or None (neither, or unknown).

    A speech transcription run (`train.py --task transcription`) holds a
    feature_config.json, or a model file that is a CTCModel; a character
    language model run holds a model file that is not, or, without a readable
    one, a config.json with that task's fields.
    """
    if os.path.isfile(os.path.join(run_dir, TRANSCRIPTION_FEATURE_CONFIG)):
        return "transcription"
    classes = {keras_model_class(os.path.join(run_dir, name)) for name in RUN_MODEL_FILES} - {None}
    if "CTCModel" in classes:
        return "transcription"
    if classes:
        return "language_model"
    try:
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    if isinstance(config, dict) and {"embedding_dim", "sequence_length"} <= set(config):
        return "language_model"
    return None


def is_transcription_run(run_dir):
    """True when `run_dir` is a speech transcription run directory (`run_kind`)."""
    return run_kind(run_dir) == "transcription"


def load_language_model_run(run_dir):
    """Load `(model, vocabulary, path)` from a language-model run directory.

    `run_dir` is the `--output-dir` of `train.py --task language_model`; its
    `best.keras` (the checkpoint of best validation loss) is read, else its
    `model.keras`. A FileNotFoundError names the directory when it holds
    neither; a ValueError says so when it is a speech transcription run.
    """
    if is_transcription_run(run_dir):
        raise ValueError(
            f"{run_dir} is a speech transcription run, not a language model: use transcribe.py --model-dir {run_dir}"
        )
    for name in RUN_MODEL_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            model, vocabulary = load_language_model(path)
            return model, vocabulary, path
    raise FileNotFoundError(
        f"Language model run {run_dir!r} has neither best.keras nor model.keras; expected the "
        "output directory of `train.py --task language_model`."
    )

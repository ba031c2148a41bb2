"""The search spaces: the only code in the project that touches keras-tuner's `hp`.

One function per task samples the tuned hyperparameters (hidden size, number
of recurrent layers, learning rate, dropout) within the task's ranges and
calls the task's ordinary model builder with them; everything not tuned comes
in as plain keyword arguments from the task's configuration. Each task's
default ranges sit beside its function.
"""

from models.language_model import build_language_model
from models.transcription import build_transcription_model
from tuning.search_ranges import DROPOUT_STEP, HIDDEN_SIZE_FACTOR, SearchRanges

# Character language model: wide layers pay off on text (issue 2 aims below
# 2.2 bits per character), so the space reaches 512 units.
LANGUAGE_MODEL_RANGES = SearchRanges(
    min_hidden_size=128,
    max_hidden_size=512,
    min_num_layers=1,
    max_num_layers=2,
    min_learning_rate=1e-3,
    max_learning_rate=1e-2,
    min_dropout=0.0,
    max_dropout=0.2,
)

# CTC transcription: bidirectional layers double the width, so 64..512 per
# direction covers the laptop-sized and the real-corpus models.
TRANSCRIPTION_RANGES = SearchRanges(
    min_hidden_size=64,
    max_hidden_size=512,
    min_num_layers=1,
    max_num_layers=3,
    min_learning_rate=3e-4,
    max_learning_rate=3e-3,
    min_dropout=0.0,
    max_dropout=0.3,
)


def _sample(hp, ranges):
    return dict(
        hidden_size=hp.Int(
            "hidden_size",
            ranges.min_hidden_size,
            ranges.max_hidden_size,
            step=HIDDEN_SIZE_FACTOR,
            sampling="log",
        ),
        num_layers=hp.Int("num_layers", ranges.min_num_layers, ranges.max_num_layers),
        learning_rate=hp.Float(
            "learning_rate",
            ranges.min_learning_rate,
            ranges.max_learning_rate,
            sampling="log",
        ),
        # keras-tuner counts the steps with a floor division, which float
        # rounding drops the maximum from (0..0.3 would end at 0.25): a margin
        # far below a step keeps it.
        dropout=hp.Float("dropout", ranges.min_dropout, ranges.max_dropout + 1e-9, step=DROPOUT_STEP),
    )


def language_model_space(hp, *, ranges, compile_model, **builder_kwargs):
    """Sample a language model from `hp` and build it with `build_language_model`.

    Args:
        hp: The trial's `keras_tuner.HyperParameters`.
        ranges: `SearchRanges`, usually `LANGUAGE_MODEL_RANGES` with the
            user's overrides.
        compile_model: `compile_model(model, learning_rate=...)`, the
            language-model task's own compile step (loss, optimizer,
            metrics), so a tuned model trains exactly like a normal run.
        **builder_kwargs: The untuned arguments of `build_language_model`
            (`vocabulary_size`, `embedding_dim`, ...).

    Returns:
        The compiled `keras.Model`, ids `(batch, time)` -> logits
        `(batch, time, vocabulary_size)`.
    """
    values = _sample(hp, ranges)
    learning_rate = values.pop("learning_rate")
    model = build_language_model(**builder_kwargs, **values)
    compile_model(model, learning_rate=learning_rate)
    return model


def transcription_space(hp, *, ranges, **builder_kwargs):
    """Sample a CTC model from `hp` and build it with `build_transcription_model`.

    Args:
        hp: The trial's `keras_tuner.HyperParameters`.
        ranges: `SearchRanges`, usually `TRANSCRIPTION_RANGES` with the
            user's overrides.
        **builder_kwargs: The untuned arguments of `build_transcription_model`
            (`num_features`, `vocabulary_size`, `bidirectional`, ...).

    Returns:
        The compiled `CTCModel`, `{"features": (batch, time, features),
        "feature_length": (batch,)}` -> `{"log_probs": (batch, frames,
        classes), "frame_length": (batch,)}`.
    """
    return build_transcription_model(**builder_kwargs, **_sample(hp, ranges))

"""`TuningTask`: what the search runner needs from one training task."""

import dataclasses
import os
from typing import Any, Callable, Optional

from tuning.search_ranges import SearchRanges


@dataclasses.dataclass(frozen=True)
class TuningTask:
    """The seam between `tuning.run_search` and a task's training module.

    The runner never builds datasets, models, callbacks or exports itself:
    it calls these, so a tuned model is trained, evaluated and exported the
    same way as a model from `train.py` without `--tune`.

    Args:
        name: The task's name (`"transcription"`, `"language_model"`).
        objective: The minimised metric in the epoch logs (`"val_cer"`,
            `"val_loss"`).
        default_ranges: The task's `SearchRanges`.
        prepare: `prepare(config) -> (train, validation, context)`: the
            batched training and validation `tf.data.Dataset`s and any
            object the other callables need (vocabulary, feature size...).
            A `context["data_identity"]` (a JSON-able dict: vocabulary,
            sizes, a digest of the data) is kept in the project's
            search.json, and a resumed search on other data is refused.
        build_model: `build_model(hp, ranges, config, context) -> keras.Model`,
            a compiled model: calls the task's search space in
            `tuning.search_spaces`.
        make_callbacks: `make_callbacks(config, context, validation) -> list`,
            the task's callbacks for one fit (fresh objects every call).
        evaluate: `evaluate(model, config, context, validation) -> dict` of
            final metrics; `config` here carries the best trial's values in
            the fields it has (`hidden_size`, `num_layers`, ...).
        export: Optional `export(model, config, context, metrics) -> str`,
            the exported version directory (same `config` as `evaluate`).
        save: `save(model, config, context, directory)` writes the best
            model into `directory` as the task's own run directory holds
            it (model.keras and the files its loaders read beside it:
            vocabulary, feature configuration), so the task's tools take
            `directory` as they take a run's `--output-dir`. Defaults to
            `model.keras` alone. The runner adds config.json and metrics.json.
    """

    name: str
    objective: str
    default_ranges: SearchRanges
    prepare: Callable[[Any], tuple]
    build_model: Callable[..., Any]
    evaluate: Callable[..., dict]
    make_callbacks: Callable[..., list] = lambda config, context, validation: []
    export: Optional[Callable[..., Optional[str]]] = None
    save: Callable[..., None] = lambda model, config, context, directory: model.save(
        os.path.join(directory, "model.keras")
    )

    def search_ranges(self, tuning):
        """The task's ranges with the `TuningConfig` overrides; ValueError if one is empty."""
        return self.default_ranges.with_overrides(**tuning.range_overrides())

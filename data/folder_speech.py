"""Base TFDS builder for speech held in a local folder (manifest, LJSpeech, LibriSpeech)."""

import abc
import hashlib
import os
import re

import tensorflow_datasets as tfds

from data.offline_builder import OfflineBuilder
from data.split_assignment import assign_splits

VALIDATION_FRACTION = 0.1


class FolderSpeechBuilder(OfflineBuilder, skip_registration=True):
    """A TFDS builder that indexes a local speech folder; audio stays in place.

    Examples hold the audio's absolute path, not its samples: a folder of
    hours of audio is not copied, and a bad file is reported by the audio
    pipeline (which names the file and the reason) instead of stopping
    `download_and_prepare`. The builder config name carries a fingerprint of
    the folder's index file(s), so editing them builds a fresh dataset.

    Splits come from the data where it has them; other rows are divided
    deterministically by `data.split_assignment.assign_splits` (speakers
    apart when speakers are known).

    Features: `id` (stable key), `path` (absolute), `text` (transcript as
    written, or its spoken form with `spell_out`; may be empty), `speaker`
    (may be empty).

    Args:
        folder: The speech folder.
        data_dir: Where TFDS writes the prepared index (under the cache dir).
        spell_out: When True, each transcript is replaced by its spoken form
            (`pipelines.vocabulary.spell_out_transcript`: remarks in brackets
            dropped, single digits and `*`/`#` as words) before the splits
            are assigned, so a prompt and its spoken form are one group.
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "Transcripts that differ only in case or punctuation are one group when splits are drawn.",
    }

    def __init__(self, *, folder, data_dir=None, spell_out=False, **kwargs):
        if not isinstance(spell_out, bool):
            raise TypeError(
                f"Received an invalid value for argument `spell_out`, expected a bool, got {spell_out!r}."
            )
        self._spell_out = spell_out
        folder = os.path.abspath(os.fspath(folder))
        if not os.path.isdir(folder):
            raise ValueError(
                f"Received an invalid value for argument `folder`, expected an existing "
                f"directory, got {folder!r}."
            )
        self._folder = folder
        slug = re.sub(r"[^a-z0-9]+", "_", os.path.basename(folder).lower()).strip("_") or "folder"
        digest = hashlib.sha1(folder.encode("utf-8"))
        for path in sorted(self._index_files()):
            stat = os.stat(path)
            digest.update(f"{os.path.relpath(path, folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        # Options that change the examples change the config too (a fresh index).
        for name, value in sorted(self._index_options().items()):
            digest.update(f"{name}={value}\0".encode())
        config = tfds.core.BuilderConfig(
            name=f"{slug}_{digest.hexdigest()[:12]}", description=f"Speech folder {folder}"
        )
        super().__init__(data_dir=data_dir, config=config, **kwargs)

    @property
    def folder(self):
        return self._folder

    def _index_options(self):
        """Options that change the examples, as `{name: value}` (defaults left out,
        so a folder indexed with defaults keeps its config name)."""
        return {"spell_out": True} if self._spell_out else {}

    @abc.abstractmethod
    def _index_files(self):
        """Paths of the files whose content defines the dataset."""

    @abc.abstractmethod
    def _read_rows(self):
        """Rows: dicts with `id`, `path`, `text`, `speaker`, `split` (and optionally
        `origin`, "file, line N" relative to the folder, named in errors)."""

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__class__.__doc__.splitlines()[0],
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "path": tfds.features.Text(),
                    "text": tfds.features.Text(),
                    "speaker": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        rows = self._read_rows()
        if not rows:
            raise ValueError(f"Speech folder {self._folder} lists no utterances.")
        seen = {}
        for row in rows:
            # TFDS keys examples by id and would fail later on a repeat with
            # "Two examples share the same hashed key", naming neither.
            if row["id"] in seen:
                first = seen[row["id"]]
                if first and row.get("origin"):
                    # Where each row came from: "file, line N" (relative to the folder).
                    index = f"{first} and {row['origin']}"
                else:
                    files = sorted(os.path.relpath(path, self._folder) for path in self._index_files())
                    index = ", ".join(files) if len(files) <= 3 else f"its {len(files)} index files ({files[0]}, ...)"
                raise ValueError(
                    f"Speech folder {self._folder}: utterance {row['id']!r} is listed twice in {index}; "
                    "expected each utterance once."
                )
            seen[row["id"]] = row.get("origin")
        if self._spell_out:
            from pipelines.vocabulary import spell_out_transcript

            rows = [{**row, "text": spell_out_transcript(row["text"])} for row in rows]
        splits = assign_splits(rows, validation_fraction=VALIDATION_FRACTION)
        return {name: self._generate_examples(split_rows) for name, split_rows in splits.items()}

    def _generate_examples(self, rows):
        for row in rows:
            yield row["id"], {
                "id": row["id"],
                "path": row["path"],
                "text": row["text"],
                "speaker": row["speaker"],
            }

"""TFDS builder for a folder with a `manifest.tsv` (path, text, speaker, split)."""

import csv
import io
import os

from data.folder_speech import FolderSpeechBuilder
from data.split_assignment import canonical_split
from data.text_sources import decode_utf8

MANIFEST = "manifest.tsv"


class ManifestSpeech(FolderSpeechBuilder):
    """Speech listed in a tab-separated `manifest.tsv` with a header row.

    Columns: `path` (relative to the folder) and `text` (or the column
    named by `text_column`) are required;
    `speaker` and `split` (`train`, `validation`/`dev`, `test`, or empty) are
    optional; other columns are ignored. Rows with an empty `text` are kept
    here and skipped (and counted) by the audio pipeline.

    Args:
        folder: Folder holding `manifest.tsv`.
        data_dir: Where TFDS writes the prepared index.
        text_column: The column that holds the transcripts (default `text`),
            e.g. `text_raw` for a manifest that also keeps the script as
            written.
        spell_out: See `FolderSpeechBuilder` (with `text_column="text_raw"`,
            prompts such as "Press 1 for help." become training rows).

    Example:

    ```python
    builder = ManifestSpeech(folder="../shared/data/fsdd", data_dir="runs/cache/tfds")
    builder.download_and_prepare()
    builder.as_dataset(split="train")
    ```
    """

    def __init__(self, *, folder, data_dir=None, text_column="text", **kwargs):
        if not isinstance(text_column, str) or not text_column.strip():
            raise ValueError(
                "Received an invalid value for argument `text_column`, expected a column name, "
                f"got {text_column!r}."
            )
        self._text_column = text_column.strip()
        super().__init__(folder=folder, data_dir=data_dir, **kwargs)

    def _index_options(self):
        options = super()._index_options()
        if self._text_column != "text":
            options["text_column"] = self._text_column
        return options

    def _index_files(self):
        return [os.path.join(self.folder, MANIFEST)]

    def _read_rows(self):
        manifest = os.path.join(self.folder, MANIFEST)
        with open(manifest, "rb") as f:
            content = decode_utf8(f.read(), manifest)
        reader = csv.DictReader(io.StringIO(content, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
        column = self._text_column
        missing = {"path", column} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{manifest}: missing columns {sorted(missing)}; expected a header with at "
                f"least `path` and `{column}`, got {reader.fieldnames}."
            )
        for name in ("path", column, "speaker", "split"):
            positions = [i + 1 for i, field in enumerate(reader.fieldnames) if field == name]
            if len(positions) > 1:  # csv.DictReader would keep the last one's cells, silently
                raise ValueError(
                    f"{manifest}, line 1: column `{name}` is in the header {len(positions)} times (columns "
                    f"{', '.join(map(str, positions))}); expected each column once, got {reader.fieldnames}."
                )
        rows = []
        first_line = {}  # normalised path -> the line that listed it first
        for record in reader:
            line = reader.line_num  # blank lines are skipped, not counted out
            if None in record:  # cells past the header's columns (a tab inside a transcript?)
                raise ValueError(
                    f"{manifest}, line {line}: {len(reader.fieldnames) + len(record[None])} tab-separated "
                    f"cells, expected at most {len(reader.fieldnames)} (the header's columns); a tab inside "
                    f"a cell would cut it: got extra cells {record[None]!r}."
                )
            relative = (record.get("path") or "").strip()
            if not relative:
                raise ValueError(f"{manifest}, line {line}: empty `path`.")
            # One file however written: "x.wav", "./x.wav", "/abs/folder/x.wav".
            key = os.path.normpath(os.path.join(self.folder, relative))
            if key in first_line:
                raise ValueError(
                    f"{manifest}, line {line}: `path` {relative!r} is already listed on line "
                    f"{first_line[key]}; expected each recording once (one transcript per file)."
                )
            first_line[key] = line
            rows.append(
                {
                    "id": relative,
                    "path": key,
                    "text": (record.get(column) or "").strip(),
                    "speaker": (record.get("speaker") or "").strip(),
                    "split": canonical_split(record.get("split"), source=f"{manifest}, line {line}"),
                }
            )
        return rows

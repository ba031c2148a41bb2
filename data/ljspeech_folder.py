"""TFDS builder for an LJSpeech-style folder (`metadata.csv` + `wavs/`)."""

import csv
import io
import os

from data.folder_speech import FolderSpeechBuilder
from data.text_sources import decode_utf8

METADATA = "metadata.csv"


class LjSpeechFolder(FolderSpeechBuilder):
    """Speech in the LJSpeech layout: `metadata.csv` rows `id|raw|normalized`.

    Audio is `wavs/<id>.wav`. The `normalized` column (numbers and
    abbreviations spelt out) is the transcript, or `raw` when it is missing.
    One speaker, no splits: utterances are divided by transcript.

    Args:
        folder: Folder holding `metadata.csv` and `wavs/`.
        data_dir: Where TFDS writes the prepared index.
    """

    def _index_files(self):
        return [os.path.join(self.folder, METADATA)]

    def _read_rows(self):
        metadata = os.path.join(self.folder, METADATA)
        with open(metadata, "rb") as f:
            data = f.read()
        content = decode_utf8(data, metadata)
        rows = []
        records = csv.reader(io.StringIO(content, newline=""), delimiter="|", quoting=csv.QUOTE_NONE)
        for line, record in enumerate(records, start=1):
            if not any(column.strip() for column in record):
                continue
            if not 2 <= len(record) <= 3:
                raise ValueError(
                    f"{metadata}, line {line}: expected 2 or 3 `|`-separated columns `id|raw|normalized`, "
                    f"got {len(record)}: {'|'.join(record)!r}."
                )
            key = record[0].strip()
            if not key:
                raise ValueError(
                    f"{metadata}, line {line}: expected a non-empty id in the first column of "
                    f"`id|raw|normalized`, got {'|'.join(record)!r}."
                )
            text = record[2] if len(record) > 2 and record[2].strip() else record[1]
            rows.append(
                {
                    "id": key,
                    "path": os.path.join(self.folder, "wavs", f"{key}.wav"),
                    "text": text.strip(),
                    "speaker": "",
                    "split": "",
                    "origin": f"{METADATA}, line {line}",
                }
            )
        return rows

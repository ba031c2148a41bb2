"""TFDS builder for an LJSpeech-style folder (`metadata.csv` + `wavs/`)."""

import csv
import os

from data.folder_speech import FolderSpeechBuilder

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
        rows = []
        with open(metadata, encoding="utf-8", newline="") as f:
            for line, record in enumerate(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE), start=1):
                if not record or not record[0].strip():
                    continue
                if len(record) < 2:
                    raise ValueError(
                        f"{metadata}, line {line}: expected `id|raw|normalized`, got {'|'.join(record)!r}."
                    )
                key = record[0].strip()
                text = record[2] if len(record) > 2 and record[2].strip() else record[1]
                rows.append(
                    {
                        "id": key,
                        "path": os.path.join(self.folder, "wavs", f"{key}.wav"),
                        "text": text.strip(),
                        "speaker": "",
                        "split": "",
                    }
                )
        return rows

"""TFDS builder for a LibriSpeech-style folder (`*.trans.txt` + `.flac`)."""

import glob
import os
import re

from data.folder_speech import FolderSpeechBuilder
from data.text_sources import decode_utf8

SUBSET_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
# An utterance id: speaker, chapter and utterance joined by "-" (LibriSpeech's `19-198-0001`).
_UTTERANCE_ID = re.compile(r"[^\s-]+(?:-[^\s-]+){2}")


class LibriSpeechFolder(FolderSpeechBuilder):
    """Speech in the LibriSpeech layout: `speaker/chapter/*.trans.txt` + `.flac`.

    Each `speaker-chapter.trans.txt` line is `utterance-id TRANSCRIPT`; the
    audio is `utterance-id.flac` beside it. The folder is either one subset
    (`speaker/chapter/...`, divided by speaker) or the corpus root holding
    subsets named `train-*`, `dev-*`, `test-*` (`train-clean-100/speaker/...`),
    whose names give the splits.

    Args:
        folder: The subset or corpus root folder.
        data_dir: Where TFDS writes the prepared index.
    """

    def _transcript_files(self):
        nested = sorted(glob.glob(os.path.join(self.folder, "*", "*", "*", "*.trans.txt")))
        flat = sorted(glob.glob(os.path.join(self.folder, "*", "*", "*.trans.txt")))
        return flat + nested

    def _index_files(self):
        return self._transcript_files()

    def _split_of(self, transcript_file):
        parts = os.path.relpath(transcript_file, self.folder).split(os.sep)
        if len(parts) == 4:
            prefix = parts[0].split("-")[0].lower()
            return SUBSET_SPLITS.get(prefix, "")
        return ""

    def _read_rows(self):
        rows = []
        for transcript_file in self._transcript_files():
            directory = os.path.dirname(transcript_file)
            split = self._split_of(transcript_file)
            with open(transcript_file, "rb") as f:
                content = decode_utf8(f.read(), transcript_file)
            # Lines end in "\n", "\r\n" or a lone "\r" (as the csv module reads a
            # manifest): split on "\n" alone, a "\r"-only file would be one line,
            # every utterance after the first glued to its transcript.
            lines = content.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            for line_number, line in enumerate(lines, start=1):
                line = line.strip()
                if not line:
                    continue
                key, _, text = line.partition(" ")
                if not _UTTERANCE_ID.fullmatch(key):
                    # A tab, or a line that is not an utterance, would otherwise
                    # end up as an audio file name, reported later as missing.
                    raise ValueError(
                        f"{transcript_file}, line {line_number}: expected `SPEAKER-CHAPTER-UTTERANCE "
                        f"TRANSCRIPT` (e.g. `19-198-0001 NORTHANGER ABBEY`), got {line!r}."
                    )
                speaker = key.split("-")[0]
                rows.append(
                    {
                        "id": key,
                        "path": os.path.join(directory, f"{key}.flac"),
                        "text": text.strip(),
                        "speaker": speaker,
                        "split": split,
                        "origin": f"{os.path.relpath(transcript_file, self.folder)}, line {line_number}",
                    }
                )
        return rows

"""LJSpeech and LibriSpeech folder builders: malformed index files get errors naming file and line."""

import os
import re

import pytest

from data.librispeech_folder import LibriSpeechFolder
from data.ljspeech_folder import LjSpeechFolder


def _ljspeech(tmp_path, content):
    folder = tmp_path / "LJSpeech-1.1"
    os.makedirs(folder / "wavs")
    path = folder / "metadata.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return LjSpeechFolder(folder=folder, data_dir=tmp_path / "tfds"), re.escape(str(path))


@pytest.mark.parametrize(
    "bad_row, expected",
    [
        ("LJ001-0002|four|fo|ur", r"expected 2 or 3 `\|`-separated columns `id\|raw\|normalized`, got 4: 'LJ001-0002\|four\|fo\|ur'"),
        ("|seven|seven", r"expected a non-empty id in the first column of `id\|raw\|normalized`, got '\|seven\|seven'"),
    ],
)
def test_ljspeech_malformed_row_names_file_and_line(tmp_path, bad_row, expected):
    builder, path = _ljspeech(tmp_path, f"LJ001-0001|one|one\n\n{bad_row}\nLJ001-0003|three|three\n")
    with pytest.raises(ValueError, match=rf"{path}, line 3: {expected}\."):
        builder._read_rows()


def test_ljspeech_not_utf8_names_file_and_line(tmp_path):
    builder, path = _ljspeech(tmp_path, "LJ001-0001|one|one\nLJ001-0002|caf\u00e9|cafe\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{path}, line 2: expected UTF-8 text, got byte 0xe9 at column 15\."):
        builder._read_rows()


def test_ljspeech_blank_lines_and_two_columns_still_read(tmp_path):
    builder, _ = _ljspeech(tmp_path, "LJ001-0001|one\n  \nLJ001-0002|two|2\n")
    rows = builder._read_rows()
    assert [(r["id"], r["text"], r["origin"]) for r in rows] == [
        ("LJ001-0001", "one", "metadata.csv, line 1"),
        ("LJ001-0002", "2", "metadata.csv, line 3"),
    ]


def test_ljspeech_duplicate_names_both_lines(tmp_path):
    builder, _ = _ljspeech(tmp_path, "LJ001-0001|one|one\nLJ001-0002|two|two\nLJ001-0001|one again|one\n")
    with pytest.raises(
        ValueError, match=r"utterance 'LJ001-0001' is listed twice in metadata.csv, line 1 and metadata.csv, line 3;"
    ):
        builder._split_generators(None)


def _librispeech(root, transcripts):
    for relative, lines in transcripts.items():
        path = root / relative
        os.makedirs(path.parent, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return LibriSpeechFolder(folder=root, data_dir=root.parent / "tfds")


def test_librispeech_duplicate_names_the_two_files_and_lines(tmp_path):
    root = tmp_path / "LibriSpeech"
    builder = _librispeech(
        root,
        {
            "train-clean-100/19/198/19-198.trans.txt": ["19-198-0000 ONE", "19-198-0001 TWO"],
            "train-clean-100/20/200/20-200.trans.txt": ["20-200-0000 THREE", "19-198-0001 TWO AGAIN"],
            "dev-clean/21/210/21-210.trans.txt": ["21-210-0000 FOUR"],
        },
    )
    first = os.path.join("train-clean-100", "19", "198", "19-198.trans.txt")
    second = os.path.join("train-clean-100", "20", "200", "20-200.trans.txt")
    with pytest.raises(
        ValueError,
        match=rf"utterance '19-198-0001' is listed twice in {re.escape(first)}, line 2 and {re.escape(second)}, line 2;",
    ):
        builder._split_generators(None)


def test_librispeech_tab_separated_line_names_file_and_line(tmp_path):
    root = tmp_path / "LibriSpeech"
    builder = _librispeech(root, {"19/198/19-198.trans.txt": ["19-198-0000 ONE", "19-198-0001\tFOUR"]})
    path = re.escape(str(root / "19" / "198" / "19-198.trans.txt"))
    expected = r"expected `SPEAKER-CHAPTER-UTTERANCE TRANSCRIPT` \(e.g. `19-198-0001 NORTHANGER ABBEY`\)"
    with pytest.raises(ValueError, match=rf"{path}, line 2: {expected}, got '19-198-0001\\tFOUR'\."):
        builder._read_rows()
    # A line that is no utterance is not read as the audio file `garbage.flac`.
    builder = _librispeech(root, {"19/198/19-198.trans.txt": ["19-198-0000 ONE", "", "garbage line"]})
    with pytest.raises(ValueError, match=rf"{path}, line 3: {expected}, got 'garbage line'\."):
        builder._read_rows()


def test_librispeech_not_utf8_names_file_and_line(tmp_path):
    root = tmp_path / "LibriSpeech"
    path = root / "19" / "198" / "19-198.trans.txt"
    os.makedirs(path.parent)
    path.write_bytes("19-198-0000 ONE\n19-198-0001 CAF\u00c9\n".encode("latin-1"))
    builder = LibriSpeechFolder(folder=root, data_dir=tmp_path / "tfds")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}, line 2: expected UTF-8 text, got byte 0xc9 at "
                                         r"column 16\."):
        builder._read_rows()


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_librispeech_line_ends_of_every_kind_give_one_utterance_a_line(tmp_path, newline):
    # A "\r"-only transcript file (old Mac editors) used to read as one line: the
    # first utterance's transcript swallowed the others, which were lost unnamed.
    root = tmp_path / "LibriSpeech"
    path = root / "19" / "198" / "19-198.trans.txt"
    os.makedirs(path.parent)
    path.write_bytes(newline.join(["19-198-0000 ONE", "", "19-198-0001 TWO THREE", ""]).encode())
    rows = LibriSpeechFolder(folder=root, data_dir=tmp_path / "tfds")._read_rows()
    origin = os.path.join("19", "198", "19-198.trans.txt")
    assert [(r["id"], r["text"], r["origin"]) for r in rows] == [
        ("19-198-0000", "ONE", f"{origin}, line 1"),
        ("19-198-0001", "TWO THREE", f"{origin}, line 3"),
    ]

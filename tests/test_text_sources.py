"""Tests for `data.text_sources`: files, the shipped corpus, TFDS, bad input."""

import hashlib
import os

import pytest

from data.text_sources import (
    DEFAULT_TEXT_SOURCE,
    SHIPPED_CORPORA,
    load_text_source,
    read_text_file,
)


def test_reads_utf8_dropping_bom_and_crlf(tmp_path):
    path = tmp_path / "play.txt"
    path.write_bytes("\ufeffROMEO:\r\nO, né!\r\n".encode("utf-8"))
    assert read_text_file(str(path)) == "ROMEO:\nO, né!\n"
    source = load_text_source(str(path))
    assert (source.name, source.location, source.text) == (str(path), str(path), "ROMEO:\nO, né!\n")


def test_home_directory_tilde_is_expanded(tmp_path, monkeypatch):
    # `--dataset=~/play.txt` reaches the program unexpanded (the shell expands `~` only at a word's start).
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "play.txt").write_text("ROMEO:\nO!\n", encoding="utf-8")
    source = load_text_source("~/play.txt")
    assert (source.name, source.location, source.text) == ("~/play.txt", str(tmp_path / "play.txt"), "ROMEO:\nO!\n")


def test_shipped_corpus_is_the_default_and_is_tiny_shakespeare():
    assert DEFAULT_TEXT_SOURCE == "tinyshakespeare"
    source = load_text_source(DEFAULT_TEXT_SOURCE)
    assert source.location == SHIPPED_CORPORA["tinyshakespeare"]
    assert os.path.basename(source.location) == "tinyshakespeare.txt"
    assert len(source.text) == 1_115_394
    assert source.text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")
    with open(source.location, "rb") as f:
        assert hashlib.md5(f.read()).hexdigest() == "6fb458f1232090904fb40fe944165e91"
    assert len(set(source.text)) == 65


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError) as error:
        load_text_source(path)
    assert str(error.value).startswith(
        f"Text file {path!r} does not exist; expected a path to a UTF-8 text file, "
        "or the name of a shipped corpus (tinyshakespeare) or 'tfds:tiny_shakespeare'."
    )
    with pytest.raises(FileNotFoundError, match="is a directory; expected a path to a UTF-8 text file"):
        read_text_file(str(tmp_path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ValueError) as error:
        read_text_file(str(path))
    assert str(error.value) == f"Text file {str(path)!r} is empty (0 bytes); expected UTF-8 text."
    path.write_bytes(b"\xef\xbb\xbf")
    with pytest.raises(ValueError, match="holds only a byte-order mark; expected UTF-8 text"):
        read_text_file(str(path))


def test_nul_bytes_are_refused_naming_offset_and_line(tmp_path):
    # UTF-16 without a byte-order mark is valid UTF-8 with a NUL after every ASCII character.
    path = tmp_path / "utf16.txt"
    path.write_bytes("ROMEO:\nO, she doth teach\n".encode("utf-16-le"))
    with pytest.raises(ValueError) as error:
        read_text_file(str(path))
    assert str(error.value) == (
        f"Text file {str(path)!r} holds NUL bytes (the first at byte offset 1, line 1); expected "
        "UTF-8 text, not UTF-16 or a binary file. Convert UTF-16 first, e.g. `iconv -f utf-16le -t utf-8`."
    )
    path.write_bytes(b"line one\nline two\0\n")
    with pytest.raises(ValueError, match=r"the first at byte offset 17, line 2\)"):
        read_text_file(str(path))


@pytest.mark.parametrize("encoding, bom", [("utf-16", None), ("utf-16-le", "fffe"), ("utf-16-be", "feff")])
def test_utf16_with_a_byte_order_mark_is_named_as_such(tmp_path, encoding, bom):
    # Was "line 1: expected UTF-8 text, got byte 0xff at column 1. Convert it first, e.g. `iconv -f latin1 ...`".
    path = tmp_path / "unicode.txt"
    data = "ROMEO:\n".encode(encoding)
    if bom is not None:
        data = bytes.fromhex(bom) + data
    path.write_bytes(data)
    with pytest.raises(ValueError) as error:
        read_text_file(str(path))
    assert str(error.value) == (
        f"Text file {str(path)!r}: the file is UTF-16 (it starts with the byte-order mark 0x{data[:2].hex()}); "
        "expected UTF-8 text. Convert it first, e.g. `iconv -f utf-16 -t utf-8`."
    )


def test_undecodable_bytes_name_the_file_line_and_column(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\ncaf".encode() + b"\xe9 au lait\n")
    with pytest.raises(ValueError) as error:
        read_text_file(str(path))
    assert str(error.value) == (
        f"Text file {str(path)!r}, line 2: expected UTF-8 text, got byte 0xe9 at column 4. Convert it "
        "first, e.g. `iconv -f latin1 -t utf-8`."
    )


def test_invalid_dataset_argument():
    with pytest.raises(ValueError, match="argument `dataset`, expected a file path, a shipped corpus name or 'tfds:NAME', got ''"):
        load_text_source("")
    with pytest.raises(ValueError, match="'tfds:mnist' is not supported; expected one of \\['tfds:tiny_shakespeare'\\]"):
        load_text_source("tfds:mnist")


def test_tfds_not_prepared_is_an_error_and_never_downloads(tmp_path):
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(FileNotFoundError) as error:
        load_text_source("tfds:tiny_shakespeare", tfds_data_dir=data_dir)
    message = str(error.value)
    assert message.startswith(
        f"TFDS dataset 'tiny_shakespeare' is not prepared in "
        f"'{os.path.join(data_dir, 'tiny_shakespeare', '1.0.0')}', and training never downloads."
    )
    assert "download_and_prepare()" in message and "--dataset PATH" in message
    assert not os.path.exists(os.path.join(data_dir, "downloads"))


def test_tfds_prepared_gives_back_the_whole_text(tmp_path):
    """Prepare TFDS' real tiny_shakespeare builder from a local file, then read it."""
    from unittest import mock

    import tensorflow_datasets as tfds

    text = "".join(f"Citizen {i}:\nSpeak, speak.\n\n" for i in range(40))
    local = tmp_path / "input.txt"
    local.write_text(text, encoding="utf-8")
    data_dir = str(tmp_path / "tfds")
    builder = tfds.builder("tiny_shakespeare", data_dir=data_dir)
    builder_cls = type(builder)
    # The builder's checksum lookup needs the optional `importlib_resources`;
    # no download happens here, so no checksum is needed either.
    builder_cls.url_infos = None
    try:
        with mock.patch.object(tfds.download.DownloadManager, "download", return_value=str(local)):
            builder.download_and_prepare()
    finally:
        del builder_cls.url_infos
    source = load_text_source("tfds:tiny_shakespeare", tfds_data_dir=data_dir)
    assert source.text == text
    assert source.location == data_dir

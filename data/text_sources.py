"""Where the language model's text comes from: a file, the shipped corpus, or TFDS."""

import codecs
import dataclasses
import os

# The corpus shipped in this folder, used when no dataset is given.
DEFAULT_TEXT_SOURCE = "tinyshakespeare"
SHIPPED_CORPORA = {
    "tinyshakespeare": os.path.join(os.path.dirname(os.path.abspath(__file__)), "tinyshakespeare.txt"),
}
TFDS_PREFIX = "tfds:"
# TFDS text datasets whose splits, read in this order and joined, give back
# one contiguous text (so the 90/10 character split applies unchanged).
TFDS_TEXT_SPLITS = {
    "tiny_shakespeare": ("train", "validation", "test"),
}


@dataclasses.dataclass(frozen=True)
class TextSource:
    """A resolved text source.

    Attributes:
        name: What the user asked for (`"tinyshakespeare"`, a path,
            `"tfds:tiny_shakespeare"`); used in error messages.
        location: The file read, or the TFDS directory the text came from.
        text: The whole text, one Python string.
    """

    name: str
    location: str
    text: str


def decode_utf8(data, source):
    """`data`, the bytes of the file `source`, as text (a leading byte-order
    mark dropped, as spreadsheets write one); a ValueError naming the file, the
    line and the column of the first byte that is not UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    for bom in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        # Spreadsheets' "Unicode text": not latin1, as the message below would guess.
        if data.startswith(bom):
            raise ValueError(
                f"{source}: the file is UTF-16 (it starts with the byte-order mark 0x{bom.hex()}); expected "
                f"UTF-8 text. Convert it first, e.g. `iconv -f utf-16 -t utf-8`."
            )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - data.rfind(b"\n", 0, error.start)
        raise ValueError(
            f"{source}, line {line}: expected UTF-8 text, got byte 0x{data[error.start]:02x} at column {column}. "
            "Convert it first, e.g. `iconv -f latin1 -t utf-8`."
        ) from None


def _missing_text_file(path):
    """Why there is no text file at `path` (nothing there, or a directory), or None."""
    if not os.path.exists(path):
        return (
            f"Text file {path!r} does not exist; expected a path to a UTF-8 "
            f"text file, or the name of a shipped corpus ({', '.join(sorted(SHIPPED_CORPORA))}) "
            f"or '{TFDS_PREFIX}tiny_shakespeare'."
        )
    if os.path.isdir(path):
        return f"Text file {path!r} is a directory; expected a path to a UTF-8 text file."
    return None


def read_text_file(path):
    """The text of the UTF-8 file `path` (a leading BOM dropped, CRLF -> LF).

    Raises:
        FileNotFoundError: `path` does not exist or is a directory.
        ValueError: the file is empty, is not UTF-8 (`decode_utf8`: the
            line and column of the first bad byte) or holds NUL bytes (the byte
            offset and line of the first).
    """
    problem = _missing_text_file(path)
    if problem is not None:
        raise FileNotFoundError(problem)
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError(f"Text file {path!r} is empty (0 bytes); expected UTF-8 text.")
    text = decode_utf8(data, f"Text file {path!r}")
    if "\0" in text:
        # Valid UTF-8, but no text holds NUL: UTF-16 without a byte-order
        # mark (every other byte NUL) or a binary file given by mistake.
        start = data.index(b"\0")
        line = data.count(b"\n", 0, start) + 1
        raise ValueError(
            f"Text file {path!r} holds NUL bytes (the first at byte offset {start}, line {line}); "
            "expected UTF-8 text, not UTF-16 or a binary file. Convert UTF-16 first, e.g. "
            "`iconv -f utf-16le -t utf-8`."
        )
    text = text.replace("\r\n", "\n")
    if not text:
        raise ValueError(
            f"Text file {path!r} holds only a byte-order mark; expected UTF-8 text."
        )
    return text


def _check_tfds_name(name):
    if name not in TFDS_TEXT_SPLITS:
        raise ValueError(
            f"Text source '{TFDS_PREFIX}{name}' is not supported; expected one of "
            f"{[TFDS_PREFIX + n for n in sorted(TFDS_TEXT_SPLITS)]}."
        )


def read_tfds_text(name, *, data_dir=None):
    """The text of the TFDS dataset `name`, which must already be prepared.

    Nothing is downloaded: the dataset must have been prepared once in
    `data_dir` (default: TFDS' own, `~/tensorflow_datasets` or
    `$TFDS_DATA_DIR`). Its splits are joined in order, which for
    `tiny_shakespeare` gives back the original file.

    Raises:
        ValueError: `name` is not a supported TFDS text dataset.
        FileNotFoundError: the dataset is not prepared in `data_dir`.
    """
    _check_tfds_name(name)
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {os.fspath(builder.data_dir)!r}, "
            "and training never downloads. Prepare it once (needs the network): "
            f"`python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}'"
            f"{'' if data_dir is None else f', data_dir={data_dir!r}'}).download_and_prepare()\"`, "
            "or pass a text file with --dataset PATH."
        )
    parts = []
    for split in TFDS_TEXT_SPLITS[name]:
        for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
            parts.append(example["text"].decode("utf-8"))
    return "".join(parts)


def text_source_path(dataset):
    """The file a `--dataset` that is not `tfds:NAME` reads: a shipped corpus's,
    or the path with `~` expanded."""
    # `~` as the shell would expand it: unquoted `--dataset=~/text.txt` reaches
    # the program as it is (the shell expands `~` only at a word's start).
    return SHIPPED_CORPORA.get(dataset) or os.path.expanduser(dataset)


def check_text_source(dataset):
    """Refuse a `--dataset` that names no text, reading none (train.py checks its
    flags with it before importing TensorFlow): not a string, a `tfds:` name
    that is not supported (ValueError), no file at the path, or a directory
    (FileNotFoundError). Whether a `tfds:` dataset is prepared, and what the
    file holds, are `load_text_source`'s to find."""
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(
            "Received an invalid value for argument `dataset`, expected a file "
            f"path, a shipped corpus name or '{TFDS_PREFIX}NAME', got {dataset!r}."
        )
    if dataset.startswith(TFDS_PREFIX):
        _check_tfds_name(dataset[len(TFDS_PREFIX):])
        return
    problem = _missing_text_file(text_source_path(dataset))
    if problem is not None:
        raise FileNotFoundError(problem)


def load_text_source(dataset, *, tfds_data_dir=None):
    """Resolve `dataset` to a `TextSource`.

    Args:
        dataset: A shipped corpus name (`"tinyshakespeare"`, the default
            corpus, `data/tinyshakespeare.txt`), `"tfds:tiny_shakespeare"`
            (read from a prepared TFDS directory, never downloaded), or a
            path to any UTF-8 text file.
        tfds_data_dir: The TFDS data directory for `tfds:` sources; None
            uses TFDS' default.

    Returns:
        A `TextSource` holding the whole text.

    Example:

    ```python
    source = load_text_source("tinyshakespeare")
    len(source.text)  # 1115394
    ```
    """
    check_text_source(dataset)
    if dataset.startswith(TFDS_PREFIX):
        name = dataset[len(TFDS_PREFIX):]
        text = read_tfds_text(name, data_dir=tfds_data_dir)
        location = tfds_data_dir or "the default TFDS data directory"
        return TextSource(dataset, location, text)
    path = text_source_path(dataset)
    return TextSource(dataset, path, read_text_file(path))

"""On-disk store of one split's features: one float32 file plus a JSON index."""

import json
import os
import shutil
import tempfile
import time

import numpy as np

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where corpora are generated (`tfds/`) and features cached (`features/`) without --cache-dir.
DEFAULT_CACHE_DIR = os.path.join(PROJECT_ROOT, "runs", "cache")
FEATURES_FILE = "features.f32"
INDEX_FILE = "index.json"


def _damaged(directory, reason):
    return ValueError(
        f"Feature cache {directory} is damaged ({reason}): delete {directory} and run again "
        "to compute its features afresh."
    )


def file_stamp(path):
    """`[size, mtime_ns]` of the file at `path`, or None when it cannot be read.

    Kept in a split's index for every audio file whose features were
    computed (or that failed to load), so that a file replaced or fixed in
    place under an unchanged manifest is noticed (`changed_files`).
    """
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def changed_files(index):
    """Audio files of a split's `index` whose size or modification time changed.

    Indexes written before the stamps were kept hold none: nothing is found.
    """
    files = index.get("files")
    if not isinstance(files, dict):
        return []
    return [path for path, stamp in files.items() if file_stamp(path) != stamp]


def _tmp_prefix(directory):
    return f".tmp-{os.path.basename(os.path.abspath(directory))}-"


def stale_name(directory):
    """A fresh name beside `directory` to move it to while it is computed afresh."""
    return f"{directory}.stale-{os.getpid()}-{time.time_ns()}"


def remove_leftovers(directory):
    """Delete what runs killed while writing `directory` left beside it, and
    return their names: temporary copies (`FeatureCacheWriter`) and copies
    moved aside to be replaced (`stale_name`).

    Call only while no other writer of `directory` can run (under the lock
    every writer of the split holds): any such copy is then a dead run's.
    """
    parent = os.path.dirname(os.path.abspath(directory))
    name = os.path.basename(os.path.abspath(directory))
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    leftovers = sorted(
        entry for entry in names if entry.startswith(_tmp_prefix(directory)) or entry.startswith(f"{name}.stale-")
    )
    for entry in leftovers:
        shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
    return leftovers


class FeatureCacheWriter:
    """Append utterance features, then publish the split atomically.

    The directory appears whole or not at all: everything is written to a
    temporary sibling and renamed into place by `commit`.

    Args:
        directory: Final location of the split's cache.
        n_features: Width of every feature matrix.
    """

    def __init__(self, directory, n_features):
        self.directory = directory
        self.n_features = n_features
        if os.path.lexists(directory) and not FeatureCacheReader.exists(directory):
            # `commit` publishes the index with the directory, so this is not a
            # split being written; stop before computing features it cannot replace.
            raise _damaged(directory, f"it exists without {INDEX_FILE}")
        parent = os.path.dirname(os.path.abspath(directory))
        os.makedirs(parent, exist_ok=True)
        # Named after the split, so that `remove_leftovers` finds a killed run's copy.
        self._tmp = tempfile.mkdtemp(prefix=_tmp_prefix(directory), dir=parent)
        self._file = open(os.path.join(self._tmp, FEATURES_FILE), "wb")
        self._entries = []
        self._offset = 0

    def __len__(self):
        return len(self._entries)

    def append(self, key, text, source, features):
        """Store `(frames, n_features)` features of one utterance."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(
                f"{source}: expected features of shape (frames, {self.n_features}), got {features.shape}."
            )
        self._file.write(features.tobytes())
        self._entries.append(
            {"key": key, "text": text, "source": source, "offset": self._offset, "frames": int(features.shape[0])}
        )
        self._offset += int(features.shape[0])

    def commit(self, metadata):
        """Write the index (with `metadata`) and move the split into place."""
        self._file.close()
        index = {"n_features": self.n_features, "total_frames": self._offset, "entries": self._entries, **metadata}
        with open(os.path.join(self._tmp, INDEX_FILE), "w", encoding="utf-8") as f:
            json.dump(index, f)
        try:
            os.rename(self._tmp, self.directory)
        except OSError as error:
            shutil.rmtree(self._tmp, ignore_errors=True)
            if os.path.isfile(os.path.join(self.directory, INDEX_FILE)):
                # A concurrent run with the same key finished first: its split
                # is identical, and may be in use, so keep it.
                return
            if os.path.lexists(self.directory):
                raise _damaged(self.directory, f"it exists without {INDEX_FILE}") from error
            raise ValueError(
                f"Could not move the feature cache into {self.directory} ({error.strerror or error}); "
                "its temporary copy was removed: fix the cause and run again."
            ) from error

    def abort(self):
        """Remove the partial output."""
        self._file.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


class FeatureCacheReader:
    """Read a split written by `FeatureCacheWriter` (features memory-mapped).

    Args:
        directory: The split's cache directory.
    """

    def __init__(self, directory):
        self.index = index = _read_index(directory)
        self.n_features = index["n_features"]
        self.entries = index["entries"]
        self.offsets = np.array([e["offset"] for e in self.entries], dtype=np.int64)
        self.frames = np.array([e["frames"] for e in self.entries], dtype=np.int64)
        total = index["total_frames"]
        if len(self.entries) and (self.offsets + self.frames).max() > total:
            i = int(np.argmax(self.offsets + self.frames > total))
            raise _damaged(
                directory,
                f"{INDEX_FILE} entry {i} ends at frame {self.offsets[i] + self.frames[i]}, "
                f"expected at most its total_frames {total}",
            )
        path = os.path.join(directory, FEATURES_FILE)
        try:
            size = os.path.getsize(path)
        except OSError as error:
            raise _damaged(directory, f"{FEATURES_FILE}: {error.strerror or error}") from error
        expected = total * self.n_features * 4
        if size != expected:
            raise _damaged(
                directory,
                f"{FEATURES_FILE} holds {size} bytes, expected {expected} "
                f"({total} frames of {self.n_features} float32 features)",
            )
        self._features = (
            np.memmap(path, dtype=np.float32, mode="r", shape=(total, self.n_features))
            if total
            else np.zeros((0, self.n_features), np.float32)
        )

    @property
    def nbytes(self):
        """Size of all the split's features in bytes."""
        return int(self._features.shape[0]) * self.n_features * 4

    def all_features(self):
        """`(total_frames, n_features)` float32 array of every utterance, in order."""
        return np.asarray(self._features)

    @staticmethod
    def exists(directory):
        return os.path.isfile(os.path.join(directory, INDEX_FILE))

    def __len__(self):
        return len(self.entries)

    def features(self, i):
        """`(frames, n_features)` float32 features of utterance `i`."""
        start = self.offsets[i]
        return np.array(self._features[start:start + self.frames[i]])


def _is_count(value, minimum=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _read_index(directory):
    """The parsed `index.json` of `directory`, its fields checked, or a ValueError."""
    path = os.path.join(directory, INDEX_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except OSError as error:
        raise _damaged(directory, f"{INDEX_FILE}: {error.strerror or error}") from error
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise _damaged(directory, f"{INDEX_FILE} is not valid JSON: {error}") from error
    if not isinstance(index, dict):
        raise _damaged(directory, f"{INDEX_FILE} holds {type(index).__name__}, expected an object")
    for field, check, expected in (
        ("n_features", lambda v: _is_count(v, 1), "a positive integer"),
        ("total_frames", _is_count, "a non-negative integer"),
        ("entries", lambda v: isinstance(v, list), "a list"),
    ):
        if field not in index:
            raise _damaged(directory, f"{INDEX_FILE} has no `{field}`")
        if not check(index[field]):
            raise _damaged(directory, f"{INDEX_FILE} `{field}` is {index[field]!r}, expected {expected}")
    for i, entry in enumerate(index["entries"]):
        if not isinstance(entry, dict):
            raise _damaged(directory, f"{INDEX_FILE} entry {i} is {entry!r}, expected an object")
        for field in ("key", "text", "source", "offset", "frames"):
            if field not in entry:
                raise _damaged(directory, f"{INDEX_FILE} entry {i} has no `{field}`")
        for field in ("offset", "frames"):
            if not _is_count(entry[field]):
                raise _damaged(
                    directory, f"{INDEX_FILE} entry {i} `{field}` is {entry[field]!r}, expected a non-negative integer"
                )
    return index

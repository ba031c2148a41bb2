"""On-disk store of one split's features: one float32 file plus a JSON index."""

import json
import os
import shutil
import tempfile

import numpy as np

FEATURES_FILE = "features.f32"
INDEX_FILE = "index.json"


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
        parent = os.path.dirname(os.path.abspath(directory))
        os.makedirs(parent, exist_ok=True)
        self._tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
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
        except OSError:
            if not os.path.isfile(os.path.join(self.directory, INDEX_FILE)):
                raise
            # A concurrent run with the same key finished first: its split is
            # identical, and may be in use, so keep it.
            shutil.rmtree(self._tmp, ignore_errors=True)

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
        with open(os.path.join(directory, INDEX_FILE), encoding="utf-8") as f:
            self.index = json.load(f)
        self.n_features = self.index["n_features"]
        self.entries = self.index["entries"]
        self.offsets = np.array([e["offset"] for e in self.entries], dtype=np.int64)
        self.frames = np.array([e["frames"] for e in self.entries], dtype=np.int64)
        total = self.index["total_frames"]
        path = os.path.join(directory, FEATURES_FILE)
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

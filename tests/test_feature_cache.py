"""FeatureCacheWriter / FeatureCacheReader: a cache damaged on disk is reported, never misread."""

import json
import os
import re

import numpy as np
import pytest

from pipelines.feature_cache import FEATURES_FILE, INDEX_FILE, FeatureCacheReader, FeatureCacheWriter


def _split(tmp_path, frames=(2, 3)):
    directory = str(tmp_path / "train")
    writer = FeatureCacheWriter(directory, 4)
    for i, n in enumerate(frames):
        writer.append(f"k{i}", "text", f"u{i}.wav", np.full((n, 4), float(i)))
    writer.commit({"split": "train", "skipped": []})
    return directory


def _damaged(directory, reason):
    return rf"Feature cache {re.escape(directory)} is damaged \({reason}\): delete {re.escape(directory)} and run again"


def _edit_index(directory, edit):
    path = os.path.join(directory, INDEX_FILE)
    with open(path) as f:
        index = json.load(f)
    edit(index)
    with open(path, "w") as f:
        json.dump(index, f)


def test_index_without_entries(tmp_path):
    directory = _split(tmp_path)
    _edit_index(directory, lambda index: index.pop("entries"))
    with pytest.raises(ValueError, match=_damaged(directory, "index.json has no `entries`")):
        FeatureCacheReader(directory)


def test_index_truncated(tmp_path):
    directory = _split(tmp_path)
    path = os.path.join(directory, INDEX_FILE)
    text = open(path).read()
    open(path, "w").write(text[: len(text) // 2])
    with pytest.raises(ValueError, match=_damaged(directory, "index.json is not valid JSON: .*")):
        FeatureCacheReader(directory)


def test_features_truncated(tmp_path):
    directory = _split(tmp_path)
    path = os.path.join(directory, FEATURES_FILE)
    with open(path, "r+b") as f:
        f.truncate(40)
    with pytest.raises(ValueError, match=_damaged(directory, r"features.f32 holds 40 bytes, expected 80 \(5 frames of 4 float32 features\)")):
        FeatureCacheReader(directory)


def test_features_deleted(tmp_path):
    directory = _split(tmp_path)
    os.remove(os.path.join(directory, FEATURES_FILE))
    with pytest.raises(ValueError, match=_damaged(directory, "features.f32: No such file or directory")):
        FeatureCacheReader(directory)


def test_entry_beyond_the_features(tmp_path):
    directory = _split(tmp_path)
    _edit_index(directory, lambda index: index["entries"][1].update(frames=9))
    with pytest.raises(ValueError, match=_damaged(directory, "index.json entry 1 ends at frame 11, expected at most its total_frames 5")):
        FeatureCacheReader(directory)
    _edit_index(directory, lambda index: index["entries"][0].pop("offset"))
    with pytest.raises(ValueError, match=_damaged(directory, "index.json entry 0 has no `offset`")):
        FeatureCacheReader(directory)


def test_index_deleted_is_reported_before_computing_and_leaves_no_copy(tmp_path):
    directory = _split(tmp_path)
    os.remove(os.path.join(directory, INDEX_FILE))
    assert not FeatureCacheReader.exists(directory)  # so a run builds the split again
    with pytest.raises(ValueError, match=_damaged(directory, "it exists without index.json")):
        FeatureCacheWriter(directory, 4)
    assert sorted(os.listdir(tmp_path)) == ["train"]
    assert sorted(os.listdir(directory)) == [FEATURES_FILE]  # nothing of the old data lost


def test_commit_into_a_damaged_directory_removes_its_copy(tmp_path):
    directory = str(tmp_path / "train")
    writer = FeatureCacheWriter(directory, 4)  # before the directory appeared
    writer.append("k", "text", "u.wav", np.zeros((2, 4)))
    os.makedirs(directory)
    open(os.path.join(directory, FEATURES_FILE), "wb").close()
    with pytest.raises(ValueError, match=_damaged(directory, "it exists without index.json")):
        writer.commit({"split": "train"})
    assert sorted(os.listdir(tmp_path)) == ["train"]  # no `.tmp-*` copy left behind
    assert os.listdir(directory) == [FEATURES_FILE]


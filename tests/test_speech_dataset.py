"""build_speech_datasets: shapes, labels, caching, bucketing, masking, bad input."""

import dataclasses
import logging
import os
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

import pipelines.speech_dataset as speech_dataset
from pipelines.audio_features import FeatureConfig, compute_features
from pipelines.audio_loading import load_audio
from pipelines.spec_augment import spec_augment
from pipelines.speech_dataset import build_speech_datasets, load_features
from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary

CONFIG = FeatureConfig(n_mels=16)
VOCABULARY = Vocabulary(SPEECH_ALPHABET)


def _speech_like(seconds, rate, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 40 * rng.random()
    wave = np.sin(2 * np.pi * pitch * t) + 0.5 * np.sin(2 * np.pi * 3 * pitch * t)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t + rng.random())
    return (0.2 * wave * envelope + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


GOOD = [  # (file, seconds, rate, speaker, split, text)
    ("a1.wav", 0.6, 16000, "ann", "train", "hello there"),
    ("a2.wav", 1.1, 8000, "ann", "train", "good night"),
    ("b1.wav", 0.4, 22050, "bob", "train", "yes"),
    ("b2.flac", 1.6, 44100, "bob", "train", "a longer sentence here"),
    ("c1.wav", 0.8, 16000, "cy", "train", "Don't stop!"),
    ("c2.wav", 0.5, 11025, "cy", "train", "no"),
    ("d1.wav", 0.7, 16000, "dee", "test", "maybe so"),
    ("d2.wav", 0.9, 16000, "dee", "test", "it's fine"),
]


def _corpus(folder, bad=True):
    """A manifest folder of good utterances plus one of every bad kind."""
    os.makedirs(folder, exist_ok=True)
    rows = []
    for i, (name, seconds, rate, speaker, split, text) in enumerate(GOOD):
        sf.write(folder / name, _speech_like(seconds, rate, i), rate)
        rows.append((name, speaker, split, text))
    if bad:
        (folder / "garbage.wav").write_text("not audio at all")
        (folder / "empty.wav").write_bytes(b"")
        sf.write(folder / "full.wav", _speech_like(2.0, 16000, 99), 16000, subtype="PCM_16")
        (folder / "truncated.wav").write_bytes((folder / "full.wav").read_bytes()[:20000])
        sf.write(folder / "silent.wav", np.zeros(8000, np.float32), 16000, subtype="PCM_16")
        sf.write(folder / "minutes.wav", _speech_like(130.0, 8000, 5), 8000, subtype="PCM_16")
        sf.write(folder / "digits.wav", _speech_like(0.5, 16000, 6), 16000)
        sf.write(folder / "blank.wav", _speech_like(0.5, 16000, 7), 16000)
        rows += [
            ("garbage.wav", "eve", "train", "some words"),
            ("empty.wav", "eve", "train", "some words"),
            ("truncated.wav", "eve", "train", "some words"),
            ("silent.wav", "eve", "train", "some words"),
            ("minutes.wav", "eve", "train", "a very long talk"),
            ("digits.wav", "eve", "train", "press 1 now"),
            ("blank.wav", "eve", "train", ""),
            ("missing.wav", "eve", "test", "gone"),
        ]
    lines = ["path\tspeaker\tsplit\ttext"] + ["\t".join(row) for row in rows]
    (folder / "manifest.tsv").write_text("\n".join(lines) + "\n")
    return folder


def _build(folder, cache, **overrides):
    kwargs = dict(
        dataset=str(folder), feature_config=CONFIG, vocabulary=VOCABULARY, batch_size=2,
        cache_dir=str(cache), max_duration_s=60.0, strict=False, spec_augment=False, seed=3,
    )
    kwargs.update(overrides)
    return build_speech_datasets(**kwargs)


def _collect(dataset):
    out = []
    for inputs, labels in dataset:
        for features, length, label in zip(inputs["features"].numpy(), inputs["feature_length"].numpy(), labels.numpy()):
            out.append((features, int(length), label))
    return out


@pytest.fixture
def counted(monkeypatch):
    calls = []

    def counting(waveform, config):
        calls.append(len(waveform))
        return compute_features(waveform, config)

    monkeypatch.setattr(speech_dataset, "compute_features", counting)
    return calls


def test_elements_labels_and_counts(tmp_path, counted):
    folder = _corpus(tmp_path / "corpus")
    data = _build(folder, tmp_path / "cache")
    assert data.test is None  # the data's test split validates
    assert "validation = the data's test split" in data.description
    spec = data.train.element_spec
    assert spec[0]["features"].shape.as_list() == [None, None, 16]
    assert spec[0]["features"].dtype == tf.float32
    assert spec[0]["feature_length"].shape.as_list() == [None] and spec[0]["feature_length"].dtype == tf.int32
    assert spec[1].shape.as_list() == [None, None] and spec[1].dtype == tf.int32

    validation = _collect(data.validation)
    texts = sorted(VOCABULARY.decode(label) for _, _, label in validation)
    assert texts == ["it's fine", "maybe so"]
    train = _collect(data.train)
    assert sorted(VOCABULARY.decode(label) for _, _, label in train) == sorted(
        ["hello there", "good night", "yes", "a longer sentence here", "don't stop", "no"]
    )
    for inputs, labels in data.train:
        lengths = inputs["feature_length"].numpy()
        assert inputs["features"].shape[1] == lengths.max()
        for row, length in zip(inputs["features"].numpy(), lengths):
            assert not np.any(row[length:])  # zero padding after the end
        for label in labels.numpy():
            ids = label[label != VOCABULARY.pad_id]
            assert np.all(label[len(ids):] == VOCABULARY.pad_id)
    # feature lengths follow the definition, from the resampled duration
    by_text = {VOCABULARY.decode(label): length for _, length, label in train}
    assert by_text["good night"] == CONFIG.num_frames(int(1.1 * 16000))
    assert by_text["a longer sentence here"] == CONFIG.num_frames(int(1.6 * 16000))

    assert data.counts["train"]["used"] == 6 and data.counts["validation"]["used"] == 2
    assert data.counts["train"]["skipped_by_reason"] == {
        "empty": 1, "empty_transcript": 1, "out_of_vocabulary": 1,
        "silent": 1, "too_long": 1, "truncated": 1, "unreadable": 1,
    }
    assert data.counts["validation"]["skipped_by_reason"] == {"unreadable": 1}
    assert data.counts["skipped"] == 8 and data.counts["used"] == 8
    skipped = dict(data.skipped)
    assert skipped[str(folder / "garbage.wav")] == "unreadable"
    assert skipped[str(folder / "missing.wav")] == "unreadable"
    assert skipped[str(folder / "minutes.wav")] == "too_long"
    assert skipped[str(folder / "digits.wav")] == "out_of_vocabulary"
    assert skipped[str(folder / "blank.wav")] == "empty_transcript"
    import json
    assert json.loads(json.dumps(data.counts)) == data.counts
    assert len(counted) == 8  # bad files never reach the feature computation


def test_skips_are_logged_with_file_and_reason(tmp_path, caplog):
    folder = _corpus(tmp_path / "corpus")
    with caplog.at_level("WARNING", logger="pipelines.speech_dataset"):
        _build(folder, tmp_path / "cache")
    text = caplog.text
    assert f"{folder / 'truncated.wav'}: truncated:" in text
    assert f"{folder / 'digits.wav'}: out_of_vocabulary: transcript 'press 1 now' has characters '1'" in text
    assert f"{folder / 'minutes.wav'}: too_long: 130.0 s is longer than max_duration_s=60" in text


@pytest.mark.parametrize(
    "bad_row, reason",
    [
        (("garbage.wav", "eve", "train", "words"), "unreadable"),
        (("digits.wav", "eve", "train", "call 911"), "out_of_vocabulary"),
        (("blank.wav", "eve", "train", ""), "empty_transcript"),
        (("silent.wav", "eve", "train", "words"), "silent"),
    ],
)
def test_strict_raises_naming_file_and_reason(tmp_path, bad_row, reason):
    folder = _corpus(tmp_path / "corpus", bad=False)
    sf.write(folder / "silent.wav", np.zeros(8000, np.float32), 16000)
    sf.write(folder / "digits.wav", _speech_like(0.5, 16000, 1), 16000)
    sf.write(folder / "blank.wav", _speech_like(0.5, 16000, 1), 16000)
    (folder / "garbage.wav").write_text("nope")
    with open(folder / "manifest.tsv", "a") as f:
        f.write("\t".join(bad_row) + "\n")
    with pytest.raises(ValueError, match=rf"{bad_row[0]}: {reason}: ") as direct:
        _build(folder, tmp_path / "cache", strict=True)
    assert _build(folder, tmp_path / "cache2").counts["skipped_by_reason"] == {reason: 1}
    with pytest.raises(ValueError) as cached:
        _build(folder, tmp_path / "cache2", strict=True)  # from the cache too: the same message, detail included
    assert str(cached.value) == str(direct.value)


def test_cache_second_epoch_and_second_run_compute_nothing(tmp_path, counted):
    folder = _corpus(tmp_path / "corpus", bad=False)
    data = _build(folder, tmp_path / "cache", spec_augment=True)
    assert len(counted) == 8
    assert data.train.cardinality().numpy() == sum(1 for _ in data.train)  # with SpecAugment's zip
    assert data.validation.cardinality().numpy() == sum(1 for _ in data.validation)
    first = sorted(length for _, length, _ in _collect(data.train))
    second = sorted(length for _, length, _ in _collect(data.train))
    assert first == second and len(counted) == 8
    again = _build(folder, tmp_path / "cache")
    _collect(again.train)
    _collect(again.validation)
    assert len(counted) == 8
    # identical features from the cache
    a = {VOCABULARY.decode(l): f[:n] for f, n, l in _collect(data.validation)}
    b = {VOCABULARY.decode(l): f[:n] for f, n, l in _collect(again.validation)}
    for text in a:
        np.testing.assert_array_equal(a[text], b[text])
    # another feature configuration, or another duration cap, computes again
    _build(folder, tmp_path / "cache", feature_config=FeatureConfig(n_mels=20))
    assert len(counted) == 16
    _build(folder, tmp_path / "cache", max_duration_s=1.0)
    assert len(counted) == 16 + 6  # the two utterances over 1 s are skipped before computing


@pytest.mark.parametrize("in_memory", [True, False], ids=["in_memory", "memory_mapped"])
def test_cached_features_match_direct_computation(tmp_path, monkeypatch, in_memory):
    if not in_memory:
        monkeypatch.setattr(speech_dataset, "IN_MEMORY_LIMIT_BYTES", 0)
    folder = _corpus(tmp_path / "corpus", bad=False)
    data = _build(folder, tmp_path / "cache")
    got = {VOCABULARY.decode(l): f[:n] for f, n, l in _collect(data.validation)}
    expected = compute_features(load_audio(folder / "d1.wav", 16000), CONFIG)
    np.testing.assert_allclose(got["maybe so"], expected, atol=1e-6)
    np.testing.assert_allclose(load_features(folder / "d1.wav", CONFIG), expected, atol=1e-6)
    expected = compute_features(load_audio(folder / "d2.wav", 16000), CONFIG)
    np.testing.assert_allclose(got["it's fine"], expected, atol=1e-6)


def _epochs_of(index_batches, epochs):
    dataset, num_batches = index_batches
    batches = [b.numpy() for b in dataset.repeat(epochs)]
    assert len(batches) == num_batches * epochs
    return [batches[e * num_batches:(e + 1) * num_batches] for e in range(epochs)]


@pytest.mark.parametrize("seed", [None, 3])
def test_index_batches_cover_each_utterance_once_an_epoch_by_bucket(seed):
    buckets = np.random.default_rng(0).integers(0, 5, 103)
    buckets[buckets == 2] = 4  # bucket 2 left empty: no batch of it
    per_bucket = np.bincount(buckets)
    assert per_bucket.tolist() == [18, 21, 0, 24, 40]
    assert speech_dataset._index_batches(buckets, 8, seed)[1] == 3 + 3 + 0 + 3 + 5
    epochs = _epochs_of(speech_dataset._index_batches(buckets, 8, seed), 3)
    for batches in epochs:
        assert sorted(np.concatenate(batches).tolist()) == list(range(103))
        assert all(len(set(buckets[b].tolist())) == 1 and 1 <= len(b) <= 8 for b in batches)
        # full batches but for each bucket's last
        assert sorted(len(b) for b in batches) == sorted(
            [8] * int(np.sum(per_bucket // 8)) + [int(r) for r in per_bucket % 8 if r]
        )
    if seed is None:  # in order: bucket by bucket, utterances ascending
        flat = [np.concatenate(e).tolist() for e in epochs]
        assert flat[0] == flat[1] == flat[2] == np.argsort(buckets, kind="stable").tolist()
    else:  # reshuffled every epoch, the same epochs again from the same seed
        flat = [np.concatenate(e).tolist() for e in epochs]
        assert flat[0] != flat[1] and flat[1] != flat[2]
        again = _epochs_of(speech_dataset._index_batches(buckets, 8, seed), 3)
        assert flat == [np.concatenate(e).tolist() for e in again]
        other = _epochs_of(speech_dataset._index_batches(buckets, 8, seed + 1), 1)
        assert np.concatenate(other[0]).tolist() != flat[0]


def test_length_buckets_limit_padding(tmp_path):
    folder = tmp_path / "corpus"
    os.makedirs(folder)
    rows = []
    for i in range(40):
        seconds = 0.3 + 0.05 * i
        sf.write(folder / f"u{i}.wav", _speech_like(seconds, 16000, i), 16000)
        rows.append((f"u{i}.wav", "", "", "word " * (1 + i % 3)))
    lines = ["path\tspeaker\tsplit\ttext"] + ["\t".join(r) for r in rows]
    (folder / "manifest.tsv").write_text("\n".join(lines) + "\n")
    data = _build(folder, tmp_path / "cache", batch_size=4)
    lengths = sorted(n for _, n, _ in _collect(data.train))
    boundaries = speech_dataset._bucket_boundaries(np.array(lengths))
    assert len(boundaries) == 7
    bucket = lambda n: int(np.searchsorted(boundaries, n, side="right"))  # noqa: E731
    padded = real = 0
    shapes = []
    for epoch in range(2):
        shapes.append(set())
        for inputs, labels in data.train:
            batch_lengths = inputs["feature_length"].numpy()
            assert len({bucket(n) for n in batch_lengths}) == 1
            shapes[-1].add((bucket(batch_lengths[0]), tuple(inputs["features"].shape), tuple(labels.shape)))
            padded += inputs["features"].shape[0] * inputs["features"].shape[1]
            real += batch_lengths.sum()
    assert real / padded > 0.75
    assert data.train.cardinality().numpy() == sum(1 for _ in data.train)  # known to Keras up front
    # one padded shape per bucket and batch size, the same every epoch
    assert shapes[0] == shapes[1]
    per_bucket = {}
    for b, feature_shape, label_shape in shapes[0]:
        per_bucket.setdefault(b, set()).add(feature_shape[1:] + label_shape[1:])
    assert len(per_bucket) == 8 and all(len(v) == 1 for v in per_bucket.values())


def test_spec_augment_masks_training_only(tmp_path):
    features = tf.random.stateless_normal([3, 200, 40], seed=[1, 2]) + 5.0
    lengths = tf.constant([200, 150, 80], tf.int32)
    masked = spec_augment(features, lengths, tf.constant([7, 8]), max_frequency_width=6).numpy()
    again = spec_augment(features, lengths, tf.constant([7, 8]), max_frequency_width=6).numpy()
    np.testing.assert_array_equal(masked, again)
    other = spec_augment(features, lengths, tf.constant([7, 9]), max_frequency_width=6).numpy()
    assert not np.array_equal(masked, other)
    total_columns = total_rows = 0
    for example, length in zip(masked, lengths.numpy()):
        zero = example == 0
        zero_columns = np.all(zero, axis=0)
        zero_rows = np.all(zero, axis=1)
        assert zero_columns.sum() <= 12  # 2 masks of at most 6 bands
        assert zero_rows.sum() <= 2 * min(20, int(0.05 * length)) and not zero_rows[length:].any()
        assert np.array_equal(zero, zero_rows[:, None] | zero_columns[None, :])
        total_columns += zero_columns.sum()
        total_rows += zero_rows.sum()
    assert total_columns > 0 and total_rows > 0
    kept = masked != 0
    np.testing.assert_array_equal(masked[kept], features.numpy()[kept])

    folder = _corpus(tmp_path / "corpus", bad=False)
    plain = _build(folder, tmp_path / "cache")
    augmented = _build(folder, tmp_path / "cache", spec_augment=True)
    count_zero_columns = lambda ds: sum(  # noqa: E731
        int(np.all(f[:n] == 0, axis=0).sum()) for f, n, _ in _collect(ds)
    )
    assert count_zero_columns(plain.train) == 0
    assert count_zero_columns(augmented.train) > 0
    assert count_zero_columns(augmented.validation) == 0


def test_unnormalised_features_are_masked_with_each_utterances_mean(tmp_path):
    # Log-mel energies left unnormalised (--normalisation none): zero is an arbitrary level (energy 1),
    # so a masked band takes the utterance's mean over its valid frames and features; padding stays 0.
    lengths = np.array([200, 150, 80], np.int32)
    valid = np.arange(200)[None, :] < lengths[:, None]
    features = (tf.random.stateless_normal([3, 200, 40], seed=[1, 2]).numpy() - 9.0) * valid[:, :, None]
    zeroed = spec_augment(features, lengths, tf.constant([7, 8]), max_frequency_width=6).numpy()
    filled = spec_augment(features, lengths, tf.constant([7, 8]), max_frequency_width=6, fill="mean").numpy()
    masked = (zeroed == 0) & valid[:, :, None]  # the same bands as with zeros (no feature is 0 by chance)
    assert masked.any(axis=(1, 2)).all()
    for example in range(3):
        n = lengths[example]
        mean = features[example, :n].astype(np.float64).mean()
        np.testing.assert_allclose(filled[example][masked[example]], mean, rtol=1e-5)
    np.testing.assert_array_equal(filled[~masked], features[~masked])  # the rest as it was, padding 0
    assert not filled[~valid].any()
    with pytest.raises(ValueError, match="argument `fill`, expected 'zero' or 'mean', got 'noise'"):
        spec_augment(features, lengths, tf.constant([7, 8]), fill="noise")

    # The pipeline masks so when the feature configuration leaves the features unnormalised.
    folder = _corpus(tmp_path / "corpus", bad=False)
    config = dataclasses.replace(CONFIG, normalisation="none")
    built = _build(folder, tmp_path / "cache", feature_config=config)
    # No tf.data autotuning thread to wait for when an iterator is freed (pipelines.epochs.without_autotuning).
    assert built.train.options().autotune.enabled is False and built.validation.options().autotune.enabled is False
    plain = _collect(built.train)
    augmented = _collect(_build(folder, tmp_path / "cache", spec_augment=True, feature_config=config).train)
    assert [n for _, n, _ in plain] == [n for _, n, _ in augmented]  # the same batches, masked
    changed = 0
    for (before, n, _), (after, _, _) in zip(plain, augmented):
        masked = after[:n] != before[:n]
        np.testing.assert_allclose(after[:n][masked], before[:n].astype(np.float64).mean(), rtol=1e-5)
        assert not after[n:].any()
        changed += int(masked.sum())
    assert changed > 0


def test_spec_augment_max_frequency_sets_the_widest_frequency_mask(tmp_path):
    folder = _corpus(tmp_path / "corpus", bad=False)

    def zero_columns(data, epochs=6):
        # Whole feature columns zeroed, per training utterance, over a few epochs.
        iterator = iter(data.train.repeat(epochs))
        return [
            int(np.all(f[:n] == 0, axis=0).sum())
            for inputs, _ in iterator
            for f, n in zip(inputs["features"].numpy(), inputs["feature_length"].numpy())
        ]

    default = zero_columns(_build(folder, tmp_path / "cache", spec_augment=True))
    wide = zero_columns(_build(folder, tmp_path / "cache", spec_augment=True, spec_augment_max_frequency=0.5))
    # 16 bands: two masks of at most 2 bands (1/8) or of at most 8 (1/2).
    assert max(default) <= 4 and max(default) > 0
    assert max(wide) <= 16 and max(wide) > 4
    with pytest.raises(ValueError, match=r"`spec_augment_max_frequency`, expected a fraction of the features in \(0, 1\], got 0"):
        _build(folder, tmp_path / "cache", spec_augment_max_frequency=0)
    # 0.05 of 16 bands is no band at all: refused rather than silently unmasked.
    with pytest.raises(ValueError, match=r"expected at least 1/16 \(one of the 16 features; .*got 0.05"):
        _build(folder, tmp_path / "cache", spec_augment=True, spec_augment_max_frequency=0.05)


def test_argument_errors(tmp_path):
    folder = _corpus(tmp_path / "corpus", bad=False)
    with pytest.raises(ValueError, match="argument `batch_size`, expected a positive integer, got 0"):
        _build(folder, tmp_path / "cache", batch_size=0)
    with pytest.raises(ValueError, match="argument `max_duration_s`"):
        _build(folder, tmp_path / "cache", max_duration_s=-1.0)
    with pytest.raises(TypeError, match="argument `feature_config`, expected a FeatureConfig, got dict"):
        _build(folder, tmp_path / "cache", feature_config={"n_mels": 16})


def test_feature_cache_atomic_and_first_writer_wins(tmp_path):
    from pipelines.feature_cache import FeatureCacheReader, FeatureCacheWriter

    directory = str(tmp_path / "train")
    first = FeatureCacheWriter(directory, 3)
    second = FeatureCacheWriter(directory, 3)
    first.append("a", "one", "a.wav", np.full((2, 3), 1.0))
    second.append("a", "one", "a.wav", np.full((2, 3), 2.0))
    assert not FeatureCacheReader.exists(directory)  # nothing visible before commit
    first.commit({"split": "train"})
    second.commit({"split": "train"})
    reader = FeatureCacheReader(directory)
    np.testing.assert_array_equal(reader.features(0), np.ones((2, 3)))
    assert os.listdir(tmp_path) == ["train"]  # no temporary directory left
    with pytest.raises(ValueError, match=r"b.wav: expected features of shape \(frames, 3\), got \(2, 4\)"):
        FeatureCacheWriter(str(tmp_path / "other"), 3).append("b", "two", "b.wav", np.zeros((2, 4)))


def test_held_out_speakers_are_a_test_split_never_trained_or_validated_on(tmp_path):
    from data.speech_sources import resolve_speech_source

    folder = _corpus(tmp_path / "corpus", bad=False)
    # bob and ann (train in the manifest) are the test split; the manifest has no
    # validation split, so the other speakers' test split (dee) validates.
    source = resolve_speech_source(f"{folder}:held_out_speakers=bob;ann", cache_dir=str(tmp_path / "cache"))
    speakers = {name: sorted(u.speaker for u in read()) for name, read in source.splits.items()}
    assert speakers == {"train": ["cy", "cy"], "validation": ["dee", "dee"], "test": ["ann", "ann", "bob", "bob"]}
    assert "held_out_speakers=bob;ann" in source.identity
    assert "test: every utterance of speakers bob;ann, never heard in training" in source.description
    plain = resolve_speech_source(str(folder), cache_dir=str(tmp_path / "cache"))
    assert plain.identity != source.identity  # separate feature caches

    with pytest.raises(ValueError, match=r"held_out_speakers \['zed'\] do not occur in .*speakers are \['ann', 'bob', 'cy', 'dee'\]"):
        resolve_speech_source(f"{folder}:held_out_speakers=zed", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"expected 'FOLDER' or 'FOLDER:OPTION\[,OPTION...\]' with options held_out_speakers=NAME\[;NAME...\] or test_fraction=F \(0 < F < 1, not both\), validation_speakers=NAME\[;NAME...\], text_column=NAME, spell_out=true\|false; got 'speakers=bob'"):
        resolve_speech_source(f"{folder}:speakers=bob", cache_dir=str(tmp_path / "cache"))


def test_validation_speakers_choose_the_checkpoint_on_voices_never_trained_on(tmp_path):
    from data.speech_sources import resolve_speech_source

    folder = _corpus(tmp_path / "corpus", bad=False)
    cache = str(tmp_path / "cache")
    keys = lambda source: {name: sorted(u.key for u in read()) for name, read in source.splits.items()}  # noqa: E731
    speakers = lambda source: {name: sorted(u.speaker for u in read()) for name, read in source.splits.items()}  # noqa: E731
    held = resolve_speech_source(f"{folder}:held_out_speakers=bob", cache_dir=cache)
    assert speakers(held) == {"train": ["ann", "ann", "cy", "cy"], "validation": ["dee", "dee"], "test": ["bob", "bob"]}
    # cy validates instead of dee's test clips, which, no longer needed to
    # choose the checkpoint, train; the test split is untouched.
    both = resolve_speech_source(f"{folder}:held_out_speakers=bob,validation_speakers=cy", cache_dir=cache)
    assert speakers(both) == {"train": ["ann", "ann", "dee", "dee"], "validation": ["cy", "cy"], "test": ["bob", "bob"]}
    assert keys(both)["test"] == keys(held)["test"]
    assert sorted(sum(keys(both).values(), [])) == sorted(sum(keys(held).values(), []))  # nothing lost
    assert both.description.endswith(
        "test: every utterance of speakers bob, never heard in training; validation: every training or validation "
        "utterance of speakers cy, never trained on (the other speakers' utterances of the split that validated "
        "before train)"
    )
    assert len({held.identity, both.identity}) == 2 and "validation_speakers=cy" in both.identity  # separate caches
    # Alone: the manifest's test split (dee) validated before and now trains.
    alone = resolve_speech_source(f"{folder}:validation_speakers=ann;cy", cache_dir=cache)
    assert speakers(alone) == {"train": ["bob", "bob", "dee", "dee"], "validation": ["ann", "ann", "cy", "cy"]}
    assert alone.description.endswith("corpus (train 6, test 2); validation: every training or validation utterance of "
                                      "speakers ann;cy, never trained on (the other speakers' utterances of the "
                                      "split that validated before train)")

    with pytest.raises(ValueError, match=r"validation_speakers \['zed'\] do not occur in the training or validation split of .*corpus; its speakers there are \['ann', 'cy', 'dee'\]"):
        resolve_speech_source(f"{folder}:held_out_speakers=bob,validation_speakers=zed", cache_dir=cache)
    with pytest.raises(ValueError, match=r"speakers \['bob'\] are both held_out_speakers and validation_speakers"):
        resolve_speech_source(f"{folder}:held_out_speakers=bob,validation_speakers=bob;cy", cache_dir=cache)
    with pytest.raises(ValueError, match=r"validation_speakers \['ann', 'cy', 'dee'\] leave no speaker to train on in .*corpus"):
        resolve_speech_source(f"{folder}:held_out_speakers=bob,validation_speakers=ann;cy;dee", cache_dir=cache)
    with pytest.raises(ValueError, match=r"validation_speakers=NAME\[;NAME...\], .*; got 'validation_speakers='"):
        resolve_speech_source(f"{folder}:validation_speakers=", cache_dir=cache)


def test_test_fraction_carves_unseen_transcripts_out_of_training(tmp_path):
    from data.speech_sources import resolve_speech_source

    folder = tmp_path / "prompts"
    folder.mkdir()
    texts = [f"prompt {word}" for word in "one two three four five six seven eight nine ten".split()]
    rows = []
    for i, text in enumerate(texts * 2):  # every prompt read twice, one speaker, no split column values
        sf.write(folder / f"{i}.wav", _speech_like(0.3, 8000, i), 8000)
        rows.append(f"{i}.wav\tann\t\t{text}")
    (folder / "manifest.tsv").write_text("path\tspeaker\tsplit\ttext\n" + "\n".join(rows) + "\n")
    cache = str(tmp_path / "cache")

    plain = resolve_speech_source(str(folder), cache_dir=cache)
    carved = resolve_speech_source(f"{folder}:test_fraction=0.2", cache_dir=cache)
    texts_of = lambda source: {name: sorted(u.text for u in read()) for name, read in source.splits.items()}  # noqa: E731
    before, after = texts_of(plain), texts_of(carved)
    assert "test" not in before and after["validation"] == before["validation"]
    # Two of the nine training prompts (0.2 x 9, rounded) are test, both readings of each.
    assert len(after["test"]) == 4 and len(set(after["test"])) == 2
    assert not set(after["test"]) & set(after["train"]) and not set(after["test"]) & set(after["validation"])
    assert sorted(after["train"] + after["test"]) == before["train"]  # nothing lost
    assert "test: the utterances of 2 of 9 training transcripts" in carved.description
    assert carved.identity != plain.identity  # separate feature caches
    # Deterministic: the same prompts again.
    assert texts_of(resolve_speech_source(f"{folder}:test_fraction=0.2", cache_dir=cache)) == after

    three = tmp_path / "three_splits"
    three.mkdir()
    for i, split in enumerate(("train", "validation", "test")):
        sf.write(three / f"{i}.wav", _speech_like(0.3, 8000, i), 8000)
    (three / "manifest.tsv").write_text(
        "path\tspeaker\tsplit\ttext\n0.wav\tann\ttrain\tone\n1.wav\tann\tvalidation\ttwo\n2.wav\tann\ttest\tthree\n"
    )
    with pytest.raises(ValueError, match=r"three_splits already has a test split; test_fraction only carves one out of a folder that has none"):
        resolve_speech_source(f"{three}:test_fraction=0.1", cache_dir=cache)
    for bad in ("test_fraction=0", "test_fraction=1.5", "test_fraction=x", "test_fraction=0.1,test_fraction=0.2",
                "held_out_speakers=ann,test_fraction=0.1"):
        with pytest.raises(ValueError, match=r"test_fraction=F \(0 < F < 1, not both\), .*; got"):
            resolve_speech_source(f"{folder}:{bad}", cache_dir=cache)


def test_spell_out_turns_digit_prompts_into_training_rows(tmp_path):
    folder = _corpus(tmp_path / "corpus")  # "press 1 now" is refused as out of vocabulary
    with open(folder / "manifest.tsv", "a") as f:
        f.write("teen.wav\teve\ttrain\tpress 11 now\n")
    sf.write(folder / "teen.wav", _speech_like(0.5, 16000, 8), 16000)
    plain = _build(folder, tmp_path / "cache")
    spoken = _build(f"{folder}:spell_out=true", tmp_path / "cache")
    assert plain.counts["train"]["skipped_by_reason"]["out_of_vocabulary"] == 2
    # "press 1 now" is now "press one now"; "press 11 now" has no single spoken form.
    assert spoken.counts["train"]["skipped_by_reason"]["out_of_vocabulary"] == 1
    assert dict(spoken.skipped)[str(folder / "teen.wav")] == "out_of_vocabulary"
    assert spoken.counts["train"]["used"] == plain.counts["train"]["used"] + 1
    texts = sorted(VOCABULARY.decode(label) for _, _, label in _collect(spoken.train))
    assert "press one now" in texts and "press one now" not in [
        VOCABULARY.decode(label) for _, _, label in _collect(plain.train)
    ]


def test_text_column_and_spell_out_options(tmp_path):
    from data.speech_sources import resolve_speech_source

    folder = tmp_path / "prompts"
    folder.mkdir()
    rows = []
    for i in range(4):
        sf.write(folder / f"{i}.wav", _speech_like(0.3, 8000, i), 8000)
        rows.append(f"{i}.wav\tann\t\t\tPress {i} now.")
    (folder / "manifest.tsv").write_text("path\tspeaker\tsplit\ttext\ttext_raw\n" + "\n".join(rows) + "\n")
    cache = str(tmp_path / "cache")
    texts_of = lambda source: sorted(u.text for read in source.splits.values() for u in read())  # noqa: E731

    raw = resolve_speech_source(f"{folder}:text_column=text_raw", cache_dir=cache)
    assert texts_of(raw) == [f"Press {i} now." for i in range(4)]
    spoken = resolve_speech_source(f"{folder}:text_column=text_raw,spell_out=true,test_fraction=0.3", cache_dir=cache)
    assert texts_of(spoken) == ["press one now", "press three now", "press two now", "press zero now"]
    assert len({raw.identity, spoken.identity}) == 2  # separate feature caches
    assert set(spoken.splits) == {"train", "validation", "test"}

    for bad in ("spell_out=yes", "text_column=", "spell_out=true,spell_out=false"):
        with pytest.raises(ValueError, match=rf"text_column=NAME, spell_out=true\|false; got '{bad.split(',')[-1]}'"):
            resolve_speech_source(f"{folder}:{bad}", cache_dir=cache)
    ljspeech = tmp_path / "lj"
    os.makedirs(ljspeech / "wavs")
    (ljspeech / "metadata.csv").write_text("LJ1|Hi.|Hi.\n")
    sf.write(ljspeech / "wavs" / "LJ1.wav", _speech_like(0.3, 8000, 0), 8000)
    with pytest.raises(ValueError, match=r"text_column=text_raw needs a folder with a manifest.tsv; .*lj is a LjSpeechFolder folder"):
        resolve_speech_source(f"{ljspeech}:text_column=text_raw", cache_dir=cache)


def test_repeated_training_epochs_cover_every_utterance_with_new_masks(tmp_path):
    from pipelines.epochs import repeat_epochs

    folder = _corpus(tmp_path / "corpus", bad=False)
    data = _build(folder, tmp_path / "cache", spec_augment=True)
    repeated, steps = repeat_epochs(data.train)  # as train.py feeds fit
    batches = list(repeated.take(2 * steps))
    epochs = [_collect(batches[:steps]), _collect(batches[steps:])]
    once = _collect(data.train)
    key = lambda item: (VOCABULARY.decode(item[2]), item[1])  # noqa: E731
    assert sorted(map(key, epochs[0])) == sorted(map(key, epochs[1])) == sorted(map(key, once))
    first = {key(item): item[0][: item[1]] for item in epochs[0]}
    second = {key(item): item[0][: item[1]] for item in epochs[1]}
    assert any(not np.array_equal(first[k], second[k]) for k in first)  # masks drawn again


@pytest.mark.parametrize("seconds, threaded", [(0.3, False), (1.6, True)])
def test_worker_threads_only_for_long_clips_and_the_same_cache(tmp_path, monkeypatch, seconds, threaded):
    from data.speech_sources import Utterance
    from pipelines.feature_cache import FeatureCacheReader

    monkeypatch.setattr(speech_dataset, "_PROBE_UTTERANCES", 4)
    monkeypatch.setattr(speech_dataset, "usable_cores", lambda: 2)
    pools = []

    class CountedPool(speech_dataset.concurrent.futures.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(speech_dataset.concurrent.futures, "ThreadPoolExecutor", CountedPool)
    utterances = [
        Utterance(f"u{i}", "some words", audio=_speech_like(seconds, 16000, i), sample_rate=16000) for i in range(9)
    ]
    utterances.insert(6, Utterance("quiet", "some words", audio=np.zeros(8000, np.float32), sample_rate=16000))
    utterances.insert(2, Utterance("early quiet", "some words", audio=np.zeros(800, np.float32), sample_rate=16000))
    kwargs = dict(feature_config=CONFIG, vocabulary=VOCABULARY, max_duration_s=60.0, strict=False)
    speech_dataset._build_split_cache(str(tmp_path / "split"), "train", iter(utterances), **kwargs)
    assert len(pools) == int(threaded)  # after 4 clips of 0.3 s: one thread; of 1.6 s: the pool
    reader = FeatureCacheReader(str(tmp_path / "split"))
    assert [e["key"] for e in reader.entries] == [f"u{i}" for i in range(9)]  # input order
    assert [entry[:2] for entry in reader.index["skipped"]] == [["early quiet", "silent"], ["quiet", "silent"]]
    assert all(detail.startswith("peak amplitude 0 is below") for _, _, detail in reader.index["skipped"])
    for i, utterance in enumerate(u for u in utterances if u.key.startswith("u")):
        expected = compute_features(_speech_like(seconds, 16000, i), CONFIG)
        np.testing.assert_array_equal(reader.features(i), expected)
    with pytest.raises(ValueError, match="quiet: silent"):  # strict: the same error, either way
        speech_dataset._build_split_cache(
            str(tmp_path / "strict"), "train", iter(utterances), **{**kwargs, "strict": True}
        )


@pytest.mark.parametrize("threaded", [False, True])
def test_strict_names_the_first_bad_utterance_in_input_order(tmp_path, monkeypatch, threaded):
    # A bad transcript is known before any audio is read, a bad file only once
    # its features are computed (maybe on a worker thread): the file before the
    # transcript is still named first, and skips are listed in input order.
    from data.speech_sources import Utterance
    from pipelines.feature_cache import FeatureCacheReader

    monkeypatch.setattr(speech_dataset, "_PROBE_UTTERANCES", 1)
    monkeypatch.setattr(speech_dataset, "THREADED_MIN_SECONDS", 0.0 if threaded else 1e9)
    monkeypatch.setattr(speech_dataset, "usable_cores", lambda: 2)
    utterances = [
        Utterance(f"u{i}", "some words", audio=_speech_like(0.3, 16000, i), sample_rate=16000) for i in range(6)
    ]
    utterances[2] = Utterance("quiet", "some words", audio=np.zeros(8000, np.float32), sample_rate=16000)
    utterances[4] = Utterance("unspoken", "", audio=_speech_like(0.3, 16000, 4), sample_rate=16000)
    kwargs = dict(feature_config=CONFIG, vocabulary=VOCABULARY, max_duration_s=60.0)
    with pytest.raises(ValueError, match=r"^Bad train utterance \(strict mode\): quiet: silent: "):
        speech_dataset._build_split_cache(str(tmp_path / "strict"), "train", iter(utterances), strict=True, **kwargs)
    assert not os.path.exists(tmp_path / "strict") and not os.listdir(tmp_path)  # nothing left behind
    speech_dataset._build_split_cache(str(tmp_path / "split"), "train", iter(utterances), strict=False, **kwargs)
    index = FeatureCacheReader(str(tmp_path / "split")).index
    assert [entry[:2] for entry in index["skipped"]] == [["quiet", "silent"], ["unspoken", "empty_transcript"]]
    assert [entry["key"] for entry in index["entries"]] == ["u0", "u1", "u3", "u5"]


def test_damaged_feature_cache_is_reported_not_rebuilt_over(tmp_path):
    folder = _corpus(tmp_path / "corpus", bad=False)
    _build(folder, tmp_path / "cache")
    (train,) = [p for p in (tmp_path / "cache" / "features").glob("*/train") if p.is_dir()]
    os.remove(train / "index.json")
    with pytest.raises(ValueError, match=rf"Feature cache {train} is damaged \(it exists without index.json\): delete {train}"):
        _build(folder, tmp_path / "cache")
    assert not [p for p in train.parent.iterdir() if p.name.startswith(".tmp-")]  # no copy left behind


def test_audio_changed_in_place_is_featurised_afresh(tmp_path, counted, caplog):
    # The manifest is unchanged, so the dataset's identity is too: only the
    # files' stamps in the cache index tell that d1.wav was replaced and that
    # garbage.wav (skipped as unreadable) was fixed.
    folder = _corpus(tmp_path / "corpus")
    first = _build(folder, tmp_path / "cache")
    assert "garbage.wav" in {os.path.basename(f) for f, _ in first.skipped}
    computed = len(counted)
    louder = 3.0 * _speech_like(0.7, 16000, 0)  # same length, other samples
    sf.write(folder / "d1.wav", np.clip(louder, -1, 1), 16000)
    os.utime(folder / "d1.wav", ns=(1, 1))  # a copy that kept an old date still differs in its stamp
    sf.write(folder / "garbage.wav", _speech_like(0.5, 16000, 42), 16000)
    with caplog.at_level(logging.WARNING, logger="pipelines.speech_dataset"):
        again = _build(folder, tmp_path / "cache")
    assert "audio file(s) changed since their features were cached" in caplog.text
    assert str(folder / "d1.wav") in caplog.text
    got = {VOCABULARY.decode(l): f[:n] for f, n, l in _collect(again.validation)}
    np.testing.assert_allclose(got["maybe so"], compute_features(load_audio(folder / "d1.wav", 16000), CONFIG), atol=1e-6)
    assert "garbage.wav" not in {os.path.basename(f) for f, _ in again.skipped}
    assert again.counts["train"]["used"] == first.counts["train"]["used"] + 1
    assert len(counted) > computed
    # no stale copy left, and an unchanged folder computes nothing more
    assert not [p for p in (tmp_path / "cache" / "features").glob("*/*.stale-*")]
    computed = len(counted)
    _build(folder, tmp_path / "cache")
    assert len(counted) == computed


def test_the_transcripts_digest_follows_the_transcripts_not_the_folder(tmp_path):
    folder = _corpus(tmp_path / "corpus", bad=False)
    digest = _build(folder, tmp_path / "cache").transcripts_sha256
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    assert _build(moved, tmp_path / "cache").transcripts_sha256 == digest
    # One transcript edited in place, the counts and the audio unchanged: another digest.
    manifest = moved / "manifest.tsv"
    rows = manifest.read_text().split("\n")
    name, speaker, split, text = rows[1].split("\t")
    rows[1] = "\t".join([name, speaker, split, text + "s" if not text.endswith("s") else text[:-1]])
    manifest.write_text("\n".join(rows))
    edited = _build(moved, tmp_path / "cache")
    assert edited.transcripts_sha256 != digest
    assert edited.counts["used"] == _build(folder, tmp_path / "cache").counts["used"]


def test_copies_left_by_a_killed_run_are_removed_by_the_next_build(tmp_path, caplog):
    import signal
    import subprocess
    import sys

    from pipelines.feature_cache import PROJECT_ROOT, FeatureCacheWriter

    folder = _corpus(tmp_path / "corpus", bad=False)
    _build(folder, tmp_path / "cache")
    (train,) = [p for p in (tmp_path / "cache" / "features").glob("*/train") if p.is_dir()]
    root = train.parent
    shutil.rmtree(train)  # as if the first run had been killed while computing it
    # A run SIGKILLed part way through writing the split (features written, no index) ...
    script = (
        "import os, signal, sys; import numpy as np; from pipelines.feature_cache import FeatureCacheWriter; "
        "w = FeatureCacheWriter(sys.argv[1], 16); w.append('k', 'text', 'u.wav', np.ones((50, 16))); "
        "w._file.flush(); os.kill(os.getpid(), signal.SIGKILL)"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(train)], cwd=PROJECT_ROOT)
    assert killed.returncode == -signal.SIGKILL
    (tmp,) = [p.name for p in root.iterdir() if p.name.startswith(".tmp-")]
    # ... and one killed while refreshing it, after moving the old copy aside.
    (root / "train.stale-123-456").mkdir()
    (root / "train.stale-123-456" / "features.f32").write_bytes(b"\0" * 64)
    # Another split's copy, being written by a live run (it holds that split's lock), is left alone.
    before = {p.name for p in root.iterdir()}
    writing = FeatureCacheWriter(str(root / "validation"), 16)
    (live,) = {p.name for p in root.iterdir()} - before
    with caplog.at_level(logging.WARNING, logger="pipelines.speech_dataset"):
        data = _build(folder, tmp_path / "cache")
    assert f"train: removed {root / tmp}, {root / 'train.stale-123-456'}, left by a run killed" in caplog.text
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["train", "train.lock", "validation", "validation.lock", live]
    )
    assert data.counts["train"]["used"] == 6
    writing.abort()
    assert sorted(p.name for p in root.iterdir()) == ["train", "train.lock", "validation", "validation.lock"]


def test_a_split_moved_aside_by_a_concurrent_run_while_read_is_not_called_damaged(tmp_path, monkeypatch, counted):
    import pipelines.feature_cache as feature_cache

    folder = _corpus(tmp_path / "corpus", bad=False)
    first = _build(folder, tmp_path / "cache")
    assert len(counted) == 8
    read_index = feature_cache._read_index
    moved = []

    def read_while_another_run_refreshes(directory):
        index = read_index(directory)
        if os.path.basename(directory) == "validation" and not moved:
            # Between this run's reading the index and opening the features, another
            # run (its audio changed) moves the split aside to compute it afresh.
            moved.append(f"{directory}.stale-1-1")
            os.rename(directory, moved[0])
        return index

    monkeypatch.setattr(feature_cache, "_read_index", read_while_another_run_refreshes)
    again = _build(folder, tmp_path / "cache")  # was: "Feature cache .../validation is damaged (features.f32: ..."
    assert moved and not os.path.exists(moved[0])
    assert len(counted) == 8 + 2  # the split was computed under the lock, as the other run would have
    assert again.counts == first.counts
    got = {VOCABULARY.decode(l): f[:n] for f, n, l in _collect(again.validation)}
    np.testing.assert_allclose(got["maybe so"], compute_features(load_audio(folder / "d1.wav", 16000), CONFIG), atol=1e-6)

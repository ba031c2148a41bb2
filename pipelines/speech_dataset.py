"""The speech input pipeline: dataset spec -> cached features -> bucketed batches."""

import collections
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from data.speech_sources import resolve_speech_source
from pipelines.audio_features import SPEC_AUGMENT_MAX_FREQUENCY, FeatureConfig, compute_features
from pipelines.audio_loading import AudioError, load_audio, prepare_waveform
from pipelines.cores import usable_cores
from pipelines.epochs import without_autotuning
from pipelines.feature_cache import (
    DEFAULT_CACHE_DIR, FeatureCacheReader, FeatureCacheWriter, changed_files, file_stamp, remove_leftovers,
    stale_name,
)
from pipelines.spec_augment import spec_augment
from pipelines.vocabulary import Vocabulary, normalize_transcript

logger = logging.getLogger(__name__)

# Bump when what the cache holds changes; part of every cache key.
# 2: float audio beyond [-1, 1] scaled to a peak of 1 (was clipped); truncated
# WAVEX and AIFF files skipped as truncated (were read as shorter recordings).
PIPELINE_VERSION = 2

EMPTY_TRANSCRIPT = "empty_transcript"
OUT_OF_VOCABULARY = "out_of_vocabulary"

NUM_BUCKETS = 8
# Splits whose features fit are held in memory as one tensor; larger ones are
# read from the memory-mapped cache file.
IN_MEMORY_LIMIT_BYTES = 1024**3
_IN_FLIGHT = 64  # utterances queued for the worker threads at a time
# Worker threads pay only for long utterances. Featurising a short clip is
# mostly Python holding the GIL, and threads then wait on each other: on 2
# cores, 2,000 clips of 0.5 s took 1.4 s one after another and 1.9 s on two
# threads, while 80 clips of 12 s took 0.63 s against 0.33 s. So the first
# `_PROBE_UTTERANCES` of a split are featurised in the calling thread, and
# the rest go to worker threads only if those averaged
# `THREADED_MIN_SECONDS` of audio or more (whole cold runs of FSDD's 0.45 s
# clips: ~500x real time against ~340x on threads; the synthetic corpus's
# 0.8 s: ~1500x against ~1050x; asterisk's 2 s clips: the same either way).
_PROBE_UTTERANCES = 32
THREADED_MIN_SECONDS = 1.5


@dataclass(frozen=True)
class SpeechData:
    """Batched speech datasets and an account of what was used and skipped.

    Elements of each dataset are
    `({"features": (batch, frames, n_features) float32,
    "feature_length": (batch,) int32}, labels (batch, max_label_len) int32)`,
    labels padded with `vocabulary.pad_id`; reference texts are
    `vocabulary.decode(labels[i])`.

    Args:
        train: Shuffled (and, if asked, SpecAugment-masked) batches.
        validation: Batches in a fixed order.
        test: Batches in a fixed order, or `None` when the data has no
            separate test split.
        counts: JSON-serialisable: per split `used`, `skipped`,
            `skipped_by_reason`, `audio_seconds`; and the totals.
        skipped: `(file, reason)` for every utterance not used.
        description: What the data is.
        feature_config: The `FeatureConfig` used.
        vocabulary: The `Vocabulary` the labels use.
        transcripts_sha256: A digest of every used utterance's split, id and
            transcript: the same for the same data wherever its folder is,
            different once a transcript is edited.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset | None
    counts: dict
    skipped: list
    description: str
    feature_config: FeatureConfig = field(repr=False, default=None)
    vocabulary: Vocabulary = field(repr=False, default=None)
    transcripts_sha256: str = field(repr=False, default=None)


def load_features(path, feature_config, *, max_duration_s=None, limit_name="max_duration_s"):
    """Features of one audio file (wav, flac, any rate), as in training
    (`limit_name`: how the too-long message names `max_duration_s`, say a flag).

    Returns:
        `(frames, n_features)` float32 array.

    Raises:
        AudioError: (a `ValueError`) naming the file and what is wrong.
    """
    waveform = load_audio(
        path, feature_config.sample_rate, max_duration_s=max_duration_s, min_samples=feature_config.n_fft,
        limit_name=limit_name,
    )
    return compute_features(waveform, feature_config)


def utterance_waveform(utterance, sample_rate, *, max_duration_s=None, min_samples=1):
    """The mono float32 waveform of a `data.speech_sources.Utterance` at `sample_rate`.

    Decoded samples are resampled, files are loaded; either way bad audio
    raises `AudioError` naming the file (or the dataset key).
    """
    if utterance.audio is not None:
        return prepare_waveform(
            utterance.audio,
            utterance.sample_rate,
            sample_rate,
            source=utterance.source,
            max_duration_s=max_duration_s,
            min_samples=min_samples,
        )
    return load_audio(utterance.path, sample_rate, max_duration_s=max_duration_s, min_samples=min_samples)


def _featurise(utterance, feature_config, max_duration_s):
    waveform = utterance_waveform(
        utterance,
        feature_config.sample_rate,
        max_duration_s=max_duration_s,
        min_samples=feature_config.n_fft,
    )
    # Looked up at call time so that tests can count the computations.
    return compute_features(waveform, feature_config), waveform.shape[0] / feature_config.sample_rate


def single_threaded_blas():
    """Context: OpenBLAS runs each (small) matmul on one thread.

    The mel projection is a small matmul; a multi-threaded BLAS spends ~10x
    longer synchronising its threads than computing on a busy 2-core machine.
    Parallelism, where it pays, comes from the worker threads instead.
    """
    try:
        import threadpoolctl
    except ImportError:  # librosa's scikit-learn dependency normally brings it
        return contextlib.nullcontext()
    return threadpoolctl.threadpool_limits(1, user_api="blas")


@contextlib.contextmanager
def _exclusive(lock_path):
    """Hold an exclusive lock on `lock_path` (no-op where fcntl is missing)."""
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:
            pass
        yield


def _check_transcript(utterance, vocabulary):
    """(normalised text, None) or (None, (reason, detail))."""
    text = normalize_transcript(utterance.text or "")
    if not text:
        return None, (EMPTY_TRANSCRIPT, "empty transcript")
    unknown = vocabulary.unknown_characters(text)
    if unknown:
        return None, (
            OUT_OF_VOCABULARY,
            f"transcript {text!r} has characters {''.join(unknown)!r} outside the vocabulary",
        )
    return text, None


def _slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "data"


def _cache_directory(cache_dir, source, feature_config, vocabulary, max_duration_s):
    payload = json.dumps(
        {
            "pipeline_version": PIPELINE_VERSION,
            "source": source.identity,
            "features": feature_config.cache_key(),
            "characters": list(vocabulary.characters),
            "max_duration_s": max_duration_s,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return os.path.join(cache_dir, "features", f"{_slug(source.name)}-{key}")


def _inline(fn, *args):
    """`fn(*args)` run now, as a finished `Future` (its error kept in it)."""
    future = concurrent.futures.Future()
    try:
        future.set_result(fn(*args))
    except Exception as error:  # raised again by `future.result()`
        future.set_exception(error)
    return future


def _build_split_cache(directory, split, utterances, *, feature_config, vocabulary, max_duration_s, strict):
    """Compute and store the features of one split; returns nothing."""
    writer = FeatureCacheWriter(directory, feature_config.n_features)
    skipped = []
    files = {}  # path -> file_stamp, for every file read (see feature_cache.changed_files)
    audio_seconds = 0.0
    started = time.perf_counter()

    def skip(utterance, reason, detail):
        message = f"{utterance.source}: {reason}: {detail}"
        if strict:
            raise ValueError(f"Bad {split} utterance (strict mode): {message}.")
        logger.warning("Skipping %s utterance %s", split, message)
        skipped.append([utterance.source, reason, str(detail)])

    workers = min(4, usable_cores())
    # (utterance, text, future, problem) in input order. A bad transcript
    # (its `problem`, no future) waits for the audio queued before it, so
    # skips are listed in input order and `strict` names the split's first
    # bad utterance, not the first one noticed.
    pending = collections.deque()
    probed = []  # seconds of audio of the first utterances, featurised inline

    def finish_oldest():
        nonlocal audio_seconds
        utterance, text, future, problem = pending.popleft()
        if problem:
            skip(utterance, *problem)
            return
        try:
            features, seconds = future.result()
        except AudioError as error:
            skip(utterance, error.reason, error.detail)
            return
        writer.append(utterance.key, text, utterance.source, features)
        audio_seconds += seconds

    try:
        with single_threaded_blas(), contextlib.ExitStack() as stack:
            # On worker threads, reading the next utterances overlaps with
            # computing earlier ones; results are written in input order.
            pool = None
            for utterance in utterances:
                text, problem = _check_transcript(utterance, vocabulary)
                if problem:
                    future = None
                else:
                    if utterance.path is not None:
                        files[utterance.path] = file_stamp(utterance.path)
                    if (
                        pool is None and workers > 1 and len(probed) >= _PROBE_UTTERANCES
                        and sum(probed) / len(probed) >= THREADED_MIN_SECONDS
                    ):
                        pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(workers))
                    if pool is not None:
                        future = pool.submit(_featurise, utterance, feature_config, max_duration_s)
                    else:
                        future = _inline(_featurise, utterance, feature_config, max_duration_s)
                        if len(probed) < _PROBE_UTTERANCES and future.exception() is None:
                            probed.append(future.result()[1])
                pending.append((utterance, text, future, problem))
                if len(pending) >= _IN_FLIGHT:
                    finish_oldest()
            while pending:
                finish_oldest()
    except BaseException:
        for _, _, future, _ in pending:
            if future is not None:
                future.cancel()
        writer.abort()
        raise
    elapsed = time.perf_counter() - started
    reasons = collections.Counter(reason for _, reason, _ in skipped)
    writer.commit(
        {
            "split": split,
            "skipped": skipped,
            "skipped_by_reason": dict(sorted(reasons.items())),
            "files": files,
            "audio_seconds": audio_seconds,
            "compute_seconds": elapsed,
        }
    )
    logger.info(
        "%s: featurised %d utterances (%.0f s of audio) in %.1f s (%.0fx real time), skipped %d",
        split, len(writer), audio_seconds, elapsed, audio_seconds / max(elapsed, 1e-9), len(skipped),
    )


def _build_or_refresh_split(directory, split, read, **kwargs):
    """Compute a split's features unless another run just did (call under its lock).

    A split whose audio files changed since their features were computed
    (same manifest, a file replaced or fixed in place) is computed afresh:
    the stale copy is moved aside first and removed once the new one is in
    place, so a failure leaves no cache and the next run computes it again.
    What a run killed meanwhile (SIGKILL, a power cut) left beside the split,
    a temporary or a stale copy, is removed first: it is never read, and
    would otherwise keep its disk space for good.
    """
    leftovers = remove_leftovers(directory)
    if leftovers:
        logger.warning(
            "%s: removed %s, left by a run killed while computing the split's features",
            split, ", ".join(os.path.join(os.path.dirname(directory), name) for name in leftovers),
        )
    stale = None
    if FeatureCacheReader.exists(directory):
        changed = changed_files(FeatureCacheReader(directory).index)
        if not changed:
            return  # built (or refreshed) by a concurrent run meanwhile
        logger.warning(
            "%s: %d audio file(s) changed since their features were cached (%s%s): computing the "
            "split's features afresh in %s",
            split, len(changed), ", ".join(changed[:3]), ", ..." if len(changed) > 3 else "", directory,
        )
        stale = stale_name(directory)
        os.rename(directory, stale)
    try:
        _build_split_cache(directory, split, read(), **kwargs)
    finally:
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)


def _bucket_boundaries(frames):
    """Exclusive upper frame counts of all buckets but the last (quantiles)."""
    if len(frames) == 0:
        return [1]
    quantiles = np.quantile(frames, np.linspace(0, 1, NUM_BUCKETS + 1)[1:-1])
    boundaries = sorted({int(q) + 1 for q in quantiles if q > 0})
    return boundaries or [int(np.max(frames)) + 1]


def _bucket_shapes(frames, label_lengths, reference=None):
    """Bucket of each utterance, and each bucket's padded frames and label length.

    Every batch of a bucket is padded to the same shape, so a split yields
    at most two shapes per bucket (full batches and the remainder), the same
    every epoch: XLA-compiled kernels compile a handful of times, not once
    per distinct utterance length. With `reference` (the training split's
    `(boundaries, frames_cap)`), another split reuses the training buckets'
    frame counts, so evaluation mostly meets shapes already compiled.

    Returns:
        `(buckets, frames_cap, labels_cap, boundaries)`.
    """
    if reference is None:
        boundaries = _bucket_boundaries(frames)
        frames_cap = None
    else:
        boundaries, frames_cap = reference
    buckets = np.searchsorted(boundaries, frames, side="right").astype(np.int64)
    count = len(boundaries) + 1
    longest = np.zeros(count, np.int64)
    labels_cap = np.ones(count, np.int64)
    for bucket, length, label_length in zip(buckets, frames, label_lengths):
        longest[bucket] = max(longest[bucket], length)
        labels_cap[bucket] = max(labels_cap[bucket], label_length)
    if frames_cap is None:
        # Each bucket pads to its longest member.
        frames_cap = np.where(longest > 0, longest, 1).astype(np.int64)
    else:
        frames_cap = np.maximum(frames_cap, longest).astype(np.int64)
    return buckets, frames_cap, labels_cap, boundaries


def _index_batches(buckets, batch_size, seed):
    """`(dataset, num_batches)`: the utterance indices of each batch of one
    epoch, a dataset of 1-D int64, and how many batches an epoch has.

    Every batch holds utterances of one length bucket, at most `batch_size`
    of them (each bucket's last batch the rest), and every utterance is in
    one batch an epoch. With a `seed` (training) the utterances are shuffled
    before they are cut into batches and the batches are shuffled too, anew
    each time the dataset is iterated (each epoch of a repeated dataset);
    without one, batches follow the buckets and the utterances' order.

    One vectorised computation an epoch, then a slice a batch: grouping the
    shuffled utterances one by one (`Dataset.shuffle` then `group_by_window`)
    cost about 1 ms of CPU a batch on 2 cores, 7-8% of a 14 ms FSDD training
    step that the pipeline runs beside (2026-12-05).
    """
    n = len(buckets)
    buckets = np.asarray(buckets, np.int64)
    num_batches = int(np.sum(-(-np.bincount(buckets) // batch_size)))
    buckets_t = tf.constant(buckets)

    def epoch(seeds):
        order = tf.range(n, dtype=tf.int64)
        if seed is not None:
            order = tf.random.experimental.stateless_shuffle(order, seed=seeds[0])
        # Stable: each bucket keeps the (shuffled) order of its utterances.
        order = tf.gather(order, tf.argsort(tf.gather(buckets_t, order), stable=True))
        sorted_buckets = tf.gather(buckets_t, order)
        position = tf.range(n, dtype=tf.int64)
        # Each utterance's rank within its bucket decides its batch.
        first = tf.searchsorted(sorted_buckets, sorted_buckets, side="left", out_type=tf.int64)
        starts_batch = (position - first) % batch_size == 0
        splits = tf.concat([tf.boolean_mask(position, starts_batch), [n]], axis=0)
        batches = tf.range(num_batches, dtype=tf.int64)
        if seed is not None:
            batches = tf.random.experimental.stateless_shuffle(batches, seed=seeds[1])
        return tf.data.Dataset.from_tensor_slices(batches).map(
            lambda k: order[splits[k]:splits[k + 1]]
        )

    if seed is None:
        seeds = tf.data.Dataset.from_tensors(tf.zeros([2, 2], tf.int64))
    else:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(4).take(1)
        seeds = seeds.map(lambda s: tf.reshape(s, [2, 2]))
    return seeds.flat_map(epoch), num_batches


def _make_dataset(
    reader, vocabulary, *, batch_size, training, spec_augment_enabled, seed, reference=None,
    spec_augment_max_frequency=SPEC_AUGMENT_MAX_FREQUENCY, spec_augment_fill="zero",
):
    """The batched dataset of one cached split, and its `(boundaries, frames_cap)`."""
    n = len(reader)
    if n == 0:
        raise ValueError(f"No usable utterances left in split {reader.index['split']!r}; see the skipped list.")
    label_ids = [vocabulary.encode(entry["text"]) for entry in reader.entries]
    label_lengths = np.array([len(ids) for ids in label_ids], np.int64)
    label_offsets = np.concatenate([[0], np.cumsum(label_lengths)[:-1]]).astype(np.int64)
    flat_labels = tf.constant(np.concatenate([np.array(ids, np.int32) for ids in label_ids]), tf.int32)
    label_offsets_t = tf.constant(label_offsets)
    label_lengths_t = tf.constant(label_lengths)
    frames_t = tf.constant(reader.frames.astype(np.int32))
    offsets_t = tf.constant(reader.offsets)
    n_features = reader.n_features
    buckets, frames_cap, labels_cap, boundaries = _bucket_shapes(reader.frames, label_lengths, reference)
    buckets_t = tf.constant(buckets)
    frames_cap_t = tf.constant(frames_cap)
    labels_cap_t = tf.constant(labels_cap)

    # Utterances are grouped into batches as bare indices first (shuffled,
    # by bucket), and each batch is then read and padded in one step: one
    # map call per batch, not one per utterance, so the pipeline takes as
    # little CPU as possible from the training step it runs beside.
    if reader.nbytes <= IN_MEMORY_LIMIT_BYTES:
        # Small enough: one tensor in memory, gathered in-graph (no Python, no GIL).
        all_features = tf.constant(reader.all_features())

        def read_batch(indices, cap):
            starts = tf.gather(offsets_t, indices)
            rows = tf.ragged.range(starts, starts + tf.cast(tf.gather(frames_t, indices), tf.int64))
            ragged = tf.RaggedTensor.from_row_splits(tf.gather(all_features, rows.flat_values), rows.row_splits)
            return ragged.to_tensor(0.0, shape=tf.stack([tf.size(indices, tf.int64), cap, n_features]))
    else:
        def read_numpy(indices, cap):
            batch = np.zeros((len(indices), int(cap), n_features), np.float32)
            for row, i in enumerate(indices):
                features = reader.features(int(i))
                batch[row, : len(features)] = features
            return batch

        def read_batch(indices, cap):
            features = tf.numpy_function(read_numpy, [indices, cap], tf.float32, stateful=False)
            features.set_shape([None, None, n_features])
            return features

    def load_batch(indices):
        bucket = buckets_t[indices[0]]
        label_starts = tf.gather(label_offsets_t, indices)
        label_rows = tf.ragged.range(label_starts, label_starts + tf.gather(label_lengths_t, indices))
        labels = tf.RaggedTensor.from_row_splits(
            tf.gather(flat_labels, label_rows.flat_values), label_rows.row_splits
        ).to_tensor(vocabulary.pad_id, shape=tf.stack([tf.size(indices, tf.int64), labels_cap_t[bucket]]))
        inputs = {
            "features": read_batch(indices, frames_cap_t[bucket]),
            "feature_length": tf.gather(frames_t, indices),
        }
        return inputs, labels

    dataset, num_batches = _index_batches(buckets, batch_size, seed if training else None)
    if training and spec_augment_enabled:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def load_augmented(indices, batch_seed):
            inputs, labels = load_batch(indices)
            masked = spec_augment(
                inputs["features"], inputs["feature_length"], batch_seed,
                max_frequency_width=int(n_features * spec_augment_max_frequency), fill=spec_augment_fill,
            )
            return {"features": masked, "feature_length": inputs["feature_length"]}, labels

        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            load_augmented, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    else:
        dataset = dataset.map(load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Every bucket's utterances are fixed, so the number of batches is known:
    # Keras shows it in the progress bar from the first epoch.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_batches))
    return without_autotuning(dataset.prefetch(tf.data.AUTOTUNE)), (boundaries, frames_cap)


def build_speech_datasets(
    *,
    dataset: str,
    feature_config: FeatureConfig,
    vocabulary: Vocabulary,
    batch_size: int,
    cache_dir: str,
    max_duration_s: float,
    strict: bool,
    spec_augment: bool,
    seed: int,
    data_dir: str | None = None,
    spec_augment_max_frequency: float = SPEC_AUGMENT_MAX_FREQUENCY,
) -> SpeechData:
    """Resolve `dataset`, featurise it once (cached), and batch it.

    Features are computed on the first run (on worker threads when the
    clips are long, see `THREADED_MIN_SECONDS`) and stored under
    `cache_dir/features/<data>-<key>/<split>/`, the key hashing the data's
    identity, `feature_config`, the vocabulary and `max_duration_s`; later
    epochs and runs with the same key read them memory-mapped and compute
    none. Batches group utterances of similar length (8 length buckets, at
    the length quantiles of the split) to limit padding; every batch of a
    bucket has the same padded shape (the bucket's longest utterance and
    longest transcript), so a split has at most two shapes per bucket, the
    same every epoch, and shape-specialised (XLA) kernels compile a few times
    only. Batches are prefetched.

    Every utterance that cannot be used (unreadable, empty, truncated,
    silent, too short or longer than `max_duration_s` audio; empty
    transcript; characters outside `vocabulary`) is logged with its file and
    reason, listed in `skipped` and counted in `counts` — or, with
    `strict=True`, raises `ValueError` naming the file and reason.

    Args:
        dataset: `"synthetic[:options]"`, a folder, or a TFDS catalog name
            (see `data.speech_sources`).
        feature_config: A `FeatureConfig`.
        vocabulary: The `Vocabulary` (for speech, `Vocabulary(SPEECH_ALPHABET)`).
        batch_size: Utterances per batch.
        cache_dir: Root of the TFDS and feature caches.
        max_duration_s: Longest utterance kept, seconds.
        strict: Raise on the first bad utterance (in the order the split is
            read) instead of skipping it.
        spec_augment: Mask time and frequency bands of training features.
        spec_augment_max_frequency: Widest frequency mask (two per
            utterance) as a fraction of the features, in (0, 1].
        seed: Seed of shuffling and masking.
        data_dir: The user's TFDS data directory, for catalog names.

    Returns:
        A `SpeechData`.
    """
    if not isinstance(feature_config, FeatureConfig):
        raise TypeError(
            f"Received an invalid value for argument `feature_config`, expected a FeatureConfig, "
            f"got {type(feature_config).__name__}."
        )
    if not isinstance(vocabulary, Vocabulary):
        raise TypeError(
            f"Received an invalid value for argument `vocabulary`, expected a Vocabulary, "
            f"got {type(vocabulary).__name__}."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(
            f"Received an invalid value for argument `batch_size`, expected a positive integer, got {batch_size!r}."
        )
    if (
        isinstance(spec_augment_max_frequency, bool)
        or not isinstance(spec_augment_max_frequency, (int, float))
        or not 0 < spec_augment_max_frequency <= 1
    ):
        raise ValueError(
            "Received an invalid value for argument `spec_augment_max_frequency`, expected a fraction "
            f"of the features in (0, 1], got {spec_augment_max_frequency!r}."
        )
    if spec_augment and int(feature_config.n_features * spec_augment_max_frequency) == 0:
        raise ValueError(
            "Received an invalid value for argument `spec_augment_max_frequency`, expected at least "
            f"1/{feature_config.n_features} (one of the {feature_config.n_features} features; a smaller "
            f"fraction masks no band), got {spec_augment_max_frequency!r}."
        )
    if not max_duration_s or max_duration_s <= 0:
        raise ValueError(
            f"Received an invalid value for argument `max_duration_s`, expected a positive number "
            f"of seconds, got {max_duration_s!r}."
        )
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR))
    source = resolve_speech_source(dataset, cache_dir=cache_dir, data_dir=data_dir)
    root = _cache_directory(cache_dir, source, feature_config, vocabulary, float(max_duration_s))

    readers = {}
    for split, read in source.splits.items():
        directory = os.path.join(root, split)
        reader = None
        if FeatureCacheReader.exists(directory):
            try:
                reader = FeatureCacheReader(directory)
            except ValueError:
                # Damaged, or moved aside meanwhile by a concurrent run that
                # computes it afresh: looked at again under the lock, where a
                # damaged split is reported.
                reader = None
        if reader is None or changed_files(reader.index):
            with _exclusive(f"{directory}.lock"):  # concurrent runs compute a split once
                _build_or_refresh_split(
                    directory, split, read,
                    feature_config=feature_config, vocabulary=vocabulary,
                    max_duration_s=float(max_duration_s), strict=strict,
                )
            reader = FeatureCacheReader(directory)
        if strict and reader.index["skipped"]:
            # Found when the cache was built by a run without --strict; caches
            # older than the detail hold (file, reason) only.
            file, reason, *detail = reader.index["skipped"][0]
            raise ValueError(f"Bad {split} utterance (strict mode): {': '.join([file, reason, *detail])}.")
        readers[split] = reader

    counts, skipped = {}, []
    totals = collections.Counter()
    for split, reader in readers.items():
        index = reader.index
        counts[split] = {
            "used": len(reader),
            "skipped": len(index["skipped"]),
            "skipped_by_reason": index["skipped_by_reason"],
            "audio_seconds": round(index["audio_seconds"], 3),
        }
        totals.update(index["skipped_by_reason"])
        skipped.extend((file, reason) for file, reason, *_ in index["skipped"])
        if index["skipped"]:
            logger.warning(
                "%s: %d utterances skipped (%s); SpeechData.skipped lists them",
                split, len(index["skipped"]),
                ", ".join(f"{k} {v}" for k, v in sorted(index["skipped_by_reason"].items())),
            )
    counts["used"] = sum(counts[s]["used"] for s in readers)
    counts["skipped"] = len(skipped)
    counts["skipped_by_reason"] = dict(sorted(totals.items()))

    def make(split, reference=None):
        return _make_dataset(
            readers[split], vocabulary, batch_size=batch_size, training=split == "train",
            spec_augment_enabled=spec_augment, seed=seed, reference=reference,
            spec_augment_max_frequency=spec_augment_max_frequency,
            # Unnormalised features are masked with each utterance's mean, not 0 (an arbitrary level).
            spec_augment_fill="mean" if feature_config.normalisation == "none" else "zero",
        )

    transcripts = hashlib.sha256()
    for split in sorted(readers):
        for entry in readers[split].entries:
            transcripts.update(f"{split}\0{entry['key']}\0{entry['text']}\n".encode("utf-8"))

    train, reference = make("train")
    validation, _ = make("validation", reference)
    test = make("test", reference)[0] if "test" in readers else None
    return SpeechData(
        train=train,
        validation=validation,
        test=test,
        counts=counts,
        skipped=skipped,
        description=source.description,
        feature_config=feature_config,
        vocabulary=vocabulary,
        transcripts_sha256=transcripts.hexdigest(),
    )

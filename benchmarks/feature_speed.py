"""Benchmark: can the speech input pipeline keep up with training?

Reports, in multiples of real time (seconds of audio per second of wall time):

1. cold: load/decode, resample and compute librosa features for a whole
   split, in the pipeline's worker threads, into an empty feature cache
   (best and median of `--cold-repeats` runs: other processes on a shared
   machine inflate single runs);
2. features only: `compute_features` on waveforms already in memory, one
   thread (the per-core cost of the feature definition);
3. from the cache: one epoch of the real `tf.data` pipeline (memory-mapped
   cache, parallel map, length buckets, padding, prefetch);

and then the training step time of the default transcription model fed by the
real pipeline against the same epoch of batches held in memory, both fed to
`fit` as train.py feeds it (`pipelines.epochs.repeat_epochs`: one iterator per
run; the batches in memory through `tf.data` with no Python per batch): the
median of the epochs of alternating fits, leaving out each fit's first epoch
(which creates the iterator, once in a training run).

    python -m benchmarks.feature_speed                      # the default synthetic corpus
    python -m benchmarks.feature_speed --dataset ../shared/data/fsdd
    python -m benchmarks.feature_speed --skip-training      # features only

The synthetic corpus (or a folder's index) is prepared in the usual cache
directory and reused; the feature cache of the cold measurement is a fresh
temporary directory, so "cold" is always cold.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.machine import describe  # noqa: E402  (no TensorFlow: --help stays fast)
from pipelines.cores import usable_cores  # noqa: E402


def in_memory_feed(batches, element_spec):
    """A `tf.data.Dataset` of `batches` (a list of one epoch's batches, any
    nested structure of tensors) in their order, with no Python per batch.

    Batches of one shape are stacked into one tensor and sliced back; a list of
    which shape comes next picks among them (`choose_from_datasets`). A
    `from_generator` feed instead runs Python for each batch, CPU time the real
    pipeline's comparison should not be charged with: on the synthetic corpus it
    fed the model 2.3% slower than the real pipeline did (24.42 against 23.87 ms
    a step, one probe, 2026-12-05).
    """
    import tensorflow as tf

    groups, order, index_of = [], [], {}
    for batch in batches:
        flat = tf.nest.flatten(batch)
        key = tuple((tuple(t.shape), t.dtype) for t in flat)
        if key not in index_of:
            index_of[key] = len(groups)
            groups.append([])
        groups[index_of[key]].append(flat)
        order.append(index_of[key])
    if not groups:
        raise ValueError("in_memory_feed needs at least one batch")
    datasets = [
        tf.data.Dataset.from_tensor_slices(
            tf.nest.pack_sequence_as(element_spec, [tf.stack(parts) for parts in zip(*group)])
        )
        for group in groups
    ]
    choices = tf.data.Dataset.from_tensor_slices(tf.constant(order, tf.int64))
    feed = tf.data.Dataset.choose_from_datasets(datasets, choices) if len(datasets) > 1 else datasets[0]
    return feed.apply(tf.data.experimental.assert_cardinality(len(batches)))


def _real_time(audio_seconds, wall_seconds):
    return audio_seconds / max(wall_seconds, 1e-9)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic", help="Dataset spec, as for train.py (default: synthetic).")
    parser.add_argument("--split", default="train", help="Split featurised cold (default: train).")
    parser.add_argument("--cache-dir", default=None, help="Where the corpus is prepared (default: runs/cache).")
    parser.add_argument("--batch-size", type=int, default=32, help="Batch size of the pipeline (default: 32).")
    parser.add_argument("--cold-repeats", type=int, default=3, help="Cold runs, best and median reported (default: 3).")
    parser.add_argument("--repeats", type=int, default=5, help="Timed fits per feed, alternating (default: 5).")
    parser.add_argument(
        "--epochs-per-fit", type=int, default=3,
        help="Epochs of each timed fit; all but the first are timed (default: 3; with 5 repeats, ten timed "
        "epochs a feed).",
    )
    parser.add_argument("--skip-training", action="store_true", help="Only measure feature extraction.")
    args = parser.parse_args(argv)
    for flag, value in (("--batch-size", args.batch_size), ("--cold-repeats", args.cold_repeats),
                        ("--repeats", args.repeats)):
        if value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    if args.epochs_per_fit < 2:
        parser.error(f"--epochs-per-fit must be at least 2 (the first epoch of a fit is not timed), got {args.epochs_per_fit}")

    import numpy as np

    from data.speech_sources import resolve_speech_source
    from pipelines import speech_dataset
    from pipelines.audio_features import FeatureConfig, compute_features
    from pipelines.audio_loading import load_audio, prepare_waveform
    from pipelines.feature_cache import FeatureCacheReader
    from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary

    cache_dir = os.path.abspath(args.cache_dir or speech_dataset.DEFAULT_CACHE_DIR)
    config = FeatureConfig()
    vocabulary = Vocabulary(SPEECH_ALPHABET)
    print(f"machine: {describe()}; load average {os.getloadavg()[0]:.1f} at start")
    print(f"features: {config}")

    started = time.perf_counter()
    try:
        source = resolve_speech_source(args.dataset, cache_dir=cache_dir)
    except (OSError, ValueError) as error:
        parser.error(f"--dataset {args.dataset}: {getattr(error, 'strerror', None) or error}")
    print(f"data: {source.description} (resolved/prepared in {time.perf_counter() - started:.1f} s)")
    if args.split not in source.splits:
        parser.error(f"--split {args.split!r} not in {sorted(source.splits)}")

    with tempfile.TemporaryDirectory(prefix="feature_speed-") as scratch:
        # A process's first featurisation imports librosa's audio modules
        # (and scipy.signal) and compiles its numba functions: ~3 s once, like
        # `import tensorflow`, not per utterance. Paid here, untimed, so the
        # cold runs time the extraction itself.
        noise = np.random.default_rng(0).uniform(-0.5, 0.5, 8000).astype(np.float32)
        compute_features(prepare_waveform(noise, 8000, config.sample_rate, min_samples=config.n_fft), config)

        # 1. cold: each run into a fresh, empty feature cache
        cold_walls = []
        for run in range(args.cold_repeats):
            directory = os.path.join(scratch, f"{args.split}-{run}")
            started = time.perf_counter()
            speech_dataset._build_split_cache(
                directory, args.split, source.splits[args.split](),
                feature_config=config, vocabulary=vocabulary, max_duration_s=30.0, strict=False,
            )
            cold_walls.append(time.perf_counter() - started)
        reader = FeatureCacheReader(directory)
        if not len(reader):  # nothing to time: every clip was skipped
            skipped = reader.index.get("skipped", [])
            print(f"feature_speed: error: --dataset {args.dataset} --split {args.split}: no usable utterance "
                  f"({len(skipped)} skipped, e.g. {skipped[:3]}); expected a split with readable audio and "
                  "transcripts", file=sys.stderr)
            return 2
        audio_seconds = reader.index["audio_seconds"]
        print(
            f"cold (read + resample + features; {min(4, usable_cores())} worker threads if the first clips "
            f"average {speech_dataset.THREADED_MIN_SECONDS:g} s or more, else one thread; {args.cold_repeats} runs): "
            f"{len(reader)} utterances, {audio_seconds:.0f} s of audio in {min(cold_walls):.1f} s best, "
            f"{statistics.median(cold_walls):.1f} s median = {_real_time(audio_seconds, min(cold_walls)):.0f}x "
            f"real time best, {_real_time(audio_seconds, statistics.median(cold_walls)):.0f}x median"
        )

        # 2. features only, one thread, waveforms in memory
        waveforms = []
        for utterance in source.splits[args.split]():
            try:
                if utterance.audio is not None:
                    waveform = prepare_waveform(
                        utterance.audio, utterance.sample_rate, config.sample_rate, min_samples=config.n_fft
                    )
                else:
                    waveform = load_audio(utterance.path, config.sample_rate, min_samples=config.n_fft)
            except ValueError:
                continue
            waveforms.append(waveform)
            if len(waveforms) >= 500:
                break
        seconds = sum(len(w) for w in waveforms) / config.sample_rate
        walls = []
        with speech_dataset.single_threaded_blas():
            compute_features(waveforms[0], config)
            for _ in range(args.cold_repeats):
                started = time.perf_counter()
                for waveform in waveforms:
                    compute_features(waveform, config)
                walls.append(time.perf_counter() - started)
        print(
            f"features only (1 thread, {len(waveforms)} waveforms in memory, {seconds:.0f} s, best of "
            f"{args.cold_repeats}): {_real_time(seconds, min(walls)):.0f}x real time"
        )

        # 3. from the cache: the real tf.data pipeline
        dataset, _ = speech_dataset._make_dataset(
            reader, vocabulary, batch_size=args.batch_size, training=True, spec_augment_enabled=True, seed=0
        )
        for _ in dataset:  # first pass: page cache warm, tf.data graphs built
            pass
        walls = []
        for _ in range(args.cold_repeats):
            started = time.perf_counter()
            batches = sum(1 for _ in dataset)
            walls.append(time.perf_counter() - started)
        print(
            f"from the cache (tf.data epoch: {batches} batches, shuffle, SpecAugment, buckets, prefetch; "
            f"best of {args.cold_repeats}): {min(walls):.2f} s = {_real_time(audio_seconds, min(walls)):.0f}x real time"
        )

        if args.skip_training:
            return

        # 4. training step: real pipeline vs the same batches in memory
        import keras

        from models.transcription import build_transcription_model
        from pipelines.epochs import repeat_epochs

        model = build_transcription_model(num_features=config.n_features, vocabulary_size=vocabulary.size)
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)  # warm-up: every bucket shape traced/compiled
        in_memory = in_memory_feed(list(dataset), dataset.element_spec)  # one epoch's batches
        batches_per_epoch = int(in_memory.cardinality())
        # Both fed as train.py feeds fit: repeated, one iterator per fit.
        feeds = {"real": repeat_epochs(dataset), "memory": repeat_epochs(in_memory)}
        times = []  # seconds a step, per epoch of the current fit

        class EpochTimes(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append((time.perf_counter() - self.started) / batches_per_epoch)

        def timed(name):
            feed, steps = feeds[name]
            times.clear()
            model.fit(
                feed, steps_per_epoch=steps, epochs=args.epochs_per_fit, verbose=0, shuffle=False,
                callbacks=[EpochTimes()],
            )
            return times[1:]  # the first epoch of a fit also creates the iterator: once per run

        timed("memory")  # warm-up of the in-memory feed
        step_times = {"real": [], "memory": []}
        for _ in range(args.repeats):
            for name in step_times:
                step_times[name] += timed(name)
        real_median, memory_median = (statistics.median(step_times[name]) for name in ("real", "memory"))
        print(
            f"training step ({keras.backend.backend()}, default transcription model, batch {args.batch_size}, "
            f"median over {args.repeats} alternating fits of {args.epochs_per_fit} epochs of {batches_per_epoch} steps, "
            f"the first epoch of each fit left out): real pipeline "
            f"{real_median * 1000:.1f} ms, same batches in memory {memory_median * 1000:.1f} ms, "
            f"ratio {real_median / memory_median:.3f}"
        )
        for name in ("real", "memory"):
            print(f"  {name}: " + ", ".join(f"{t * 1000:.1f}" for t in step_times[name]) + " ms a step, epoch by epoch")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    sys.exit(main())

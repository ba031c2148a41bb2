"""Speed of the fused `ElmanRNN` against Keras' own recurrent layers.

Run: `.venv/bin/python -m benchmarks.rnn_speed [--quick] [--output FILE]`.

For each shape (speech one-directional and bidirectional, character LM) it
builds the same model four ways:

- `elman_rnn`: `ElmanRNN(ElmanCell)` (the fused path; in the bidirectional
  shape wrapped in `layers.Bidirectional`, as the transcription model is,
  the other variants in `keras.layers.Bidirectional`),
- `simple_rnn`: `keras.layers.SimpleRNN`, default settings (the builtin),
- `simple_rnn_no_remap`: the same builtin with TensorFlow's Grappler
  remapper off,
- `rnn_elman_cell`: `keras.layers.RNN(ElmanCell)` (Keras' step loop),

with the same weights, then times a training step (forward, backward, Adam;
one `tf.function`, not XLA-compiled on the outside, as Keras' `fit` does on
CPU) and an inference call. After warm-up the variants are timed in
alternation, one call each per round, and the median over the rounds is
reported, with the ratio to the builtin and the fraction of this machine's
float32 matmul peak (measured with a large matmul in the same process).

The remapper switch (`tf.config.optimizer.set_experimental_options`) is
process-wide, but TensorFlow instantiates (and Grappler-optimizes) a
`tf.function` per configuration at call time. So every call of the
`simple_rnn_no_remap` functions, warm-up included, runs inside a block that
turns the remapper off and then back to the setting it had (the default);
the switch happens outside the timed region, and the other variants always
run with the default setting, the one they were warmed up under.

The loss is a per-step softmax cross-entropy over a dense output layer (for
speech a stand-in for the CTC head, whose cost is the same for every
variant).

`--dtype-policy mixed_bfloat16` (or `mixed_float16`) builds every variant
under that Keras dtype policy (16-bit compute, float32 weights), so the
ratios compare like with like; the issue's targets are for float32, the
default. The "% of matmul peak" column stays relative to the float32 peak.
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Nothing imported here imports TensorFlow or Keras (about 5 s): --help and a bad
# flag answer at once; each function below imports what it runs.
import numpy as np  # noqa: E402

from benchmarks.machine import cpu_model, describe  # noqa: E402
from models.dtype_policy import DTYPE_POLICIES, dtype_policy  # noqa: E402
from pipelines.cores import usable_cores  # noqa: E402
from training.cli import output_file_error  # noqa: E402

VARIANTS = ("elman_rnn", "simple_rnn", "simple_rnn_no_remap", "rnn_elman_cell")
BASELINE = "simple_rnn"

SHAPES = {
    "speech": dict(
        batch=32, steps=200, features=80, units=256, layers=2,
        bidirectional=False, vocab=32,
    ),
    "speech_bidirectional": dict(
        batch=32, steps=200, features=80, units=256, layers=2,
        bidirectional=True, vocab=32,
    ),
    "char_lm": dict(
        batch=64, steps=100, embedding=64, units=512, layers=1,
        bidirectional=False, vocab=65,
    ),
}

# Targets from issue 6: time of `elman_rnn` / time of the reference.
TARGETS = {
    ("speech", "train", BASELINE): 0.55,
    ("char_lm", "train", BASELINE): 0.55,
    ("speech_bidirectional", "train", BASELINE): 0.65,
    ("speech", "infer", BASELINE): 0.6,
    ("char_lm", "infer", BASELINE): 0.6,
    ("speech_bidirectional", "infer", BASELINE): 0.6,
}
REMAP_TARGET = 0.75
MIN_ROUNDS = 20  # the "median of at least 20" steps or calls


@contextlib.contextmanager
def _remapper_off():
    # Back to the setting before, not to an explicit "on": a function is
    # instantiated (and Grappler-optimized) again for every config it is
    # called under, so an explicit "on" after the first such block made the
    # first timed call of the variants warmed up before it pay that again.
    # None, the setting when nothing was set, restores the default.
    import tensorflow as tf

    previous = tf.config.optimizer.get_experimental_options().get("remapping")
    tf.config.optimizer.set_experimental_options({"remapping": False})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"remapping": previous})


def _recurrent_layer(variant, units, name):
    import keras

    from layers import ElmanCell, ElmanRNN

    if variant == "elman_rnn":
        return ElmanRNN(ElmanCell(units), return_sequences=True, name=name)
    if variant == "rnn_elman_cell":
        return keras.layers.RNN(
            ElmanCell(units), return_sequences=True, name=name
        )
    return keras.layers.SimpleRNN(units, return_sequences=True, name=name)


def build_model(variant, shape):
    """The benchmark model of one shape, built with one recurrent variant."""
    import keras

    from layers import Bidirectional

    if "embedding" in shape:
        inputs = keras.Input((None,), dtype="int32", name="ids")
        hidden = keras.layers.Embedding(
            shape["vocab"], shape["embedding"], name="embedding"
        )(inputs)
    else:
        inputs = keras.Input((None, shape["features"]), name="features")
        hidden = inputs
    for index in range(shape["layers"]):
        layer = _recurrent_layer(variant, shape["units"], f"rnn_{index}")
        if shape["bidirectional"]:
            # The fused layer in the wrapper the models use (its directions
            # share the cores); Keras' own for the others.
            wrapper = (
                Bidirectional if variant == "elman_rnn"
                else keras.layers.Bidirectional
            )
            layer = wrapper(layer, name=f"birnn_{index}")
        hidden = layer(hidden)
    logits = keras.layers.Dense(shape["vocab"], name="logits")(hidden)
    return keras.Model(inputs, logits, name=variant)


def model_flops(shape):
    """Matmul FLOPs of one forward pass (the same for every variant)."""
    batch, steps, units = shape["batch"], shape["steps"], shape["units"]
    directions = 2 if shape["bidirectional"] else 1
    features = shape.get("features", shape.get("embedding"))
    flops = 0
    for _ in range(shape["layers"]):
        flops += directions * 2 * batch * steps * (features + units) * units
        features = directions * units
    flops += 2 * batch * steps * features * shape["vocab"]
    return flops


def measure_matmul_peak(size=2048, repeats=20):
    """This machine's float32 matmul peak in FLOP/s (best of repeats)."""
    import tensorflow as tf

    a = tf.random.normal((size, size), seed=1)
    b = tf.random.normal((size, size), seed=2)
    matmul = tf.function(lambda a, b: tf.matmul(a, b))
    for _ in range(3):
        matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)


def _make_batch(shape):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    if "embedding" in shape:
        x = rng.integers(0, shape["vocab"], (shape["batch"], shape["steps"]))
        x = tf.constant(x, tf.int32)
    else:
        x = tf.constant(
            rng.normal(size=(shape["batch"], shape["steps"], shape["features"])),
            tf.float32,
        )
    y = tf.constant(
        rng.integers(0, shape["vocab"], (shape["batch"], shape["steps"])),
        tf.int32,
    )
    return x, y


def _functions(model):
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(1e-4)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer.build(model.trainable_variables)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    @tf.function
    def infer(x):
        return model(x, training=False)

    return {"train": lambda x, y: train_step(x, y), "infer": lambda x, y: infer(x)}


def _timed_call(fn, variant, x, y):
    context = (
        _remapper_off() if variant == "simple_rnn_no_remap"
        else contextlib.nullcontext()
    )
    with context:
        start = time.perf_counter()
        result = fn(x, y)
        result.numpy()
        return time.perf_counter() - start


def benchmark_shape(name, shape, variants, warmup, rounds, log):
    """Median seconds per call, `{mode: {variant: seconds}}`, for one shape."""
    import keras

    from layers import ElmanRNN

    x, y = _make_batch(shape)
    models = {}
    for variant in variants:
        keras.utils.set_random_seed(0)
        models[variant] = build_model(variant, shape)
    reference = models[variants[0]].get_weights()
    for model in models.values():
        model.set_weights(reference)
    functions = {variant: _functions(models[variant]) for variant in variants}
    if "elman_rnn" in models:
        fused = [
            layer for layer in models["elman_rnn"]._flatten_layers()
            if isinstance(layer, ElmanRNN)
        ]
        reasons = {layer.name: layer.fused_reason for layer in fused}
        log(f"  fused_reason per ElmanRNN layer: {reasons}")
    results = {}
    for mode in ("train", "infer"):
        for variant in variants:
            for _ in range(warmup):
                _timed_call(functions[variant][mode], variant, x, y)
        times = {variant: [] for variant in variants}
        for _ in range(rounds):
            for variant in variants:
                times[variant].append(
                    _timed_call(functions[variant][mode], variant, x, y)
                )
        results[mode] = {
            variant: statistics.median(values) for variant, values in times.items()
        }
        log(
            f"  {name} {mode}: "
            + ", ".join(
                f"{v} {1000 * s:.1f} ms" for v, s in results[mode].items()
            )
        )
    return results


def _table(all_results, peak, variants):
    lines = []
    header = (
        f"| shape | mode | variant | median ms | x {BASELINE} | "
        "x simple_rnn_no_remap | % of matmul peak |"
    )
    lines += [header, "|" + "---|" * 7]
    for name, entry in all_results.items():
        for mode in ("train", "infer"):
            times = entry["seconds"][mode]
            flops = entry["flops_per_call"][mode]
            for variant in variants:
                seconds = times[variant]
                base = times.get(BASELINE)
                remap = times.get("simple_rnn_no_remap")
                ratio = f"{seconds / base:.2f}" if base else "-"
                ratio_remap = f"{seconds / remap:.2f}" if remap else "-"
                lines.append(
                    f"| {name} | {mode} | {variant} | {1000 * seconds:.1f} | "
                    f"{ratio} | {ratio_remap} | "
                    f"{100 * flops / seconds / peak:.1f} |"
                )
    return "\n".join(lines)


def _verdicts(all_results):
    verdicts = []
    for name, entry in all_results.items():
        for mode in ("train", "infer"):
            times = entry["seconds"][mode]
            if "elman_rnn" not in times:
                continue
            for reference, target in (
                (BASELINE, TARGETS.get((name, mode, BASELINE))),
                ("simple_rnn_no_remap", REMAP_TARGET),
            ):
                if reference not in times or target is None:
                    continue
                ratio = times["elman_rnn"] / times[reference]
                verdicts.append(
                    dict(
                        shape=name, mode=mode, reference=reference,
                        ratio=round(ratio, 3), target=target,
                        met=bool(ratio <= target),
                    )
                )
    return verdicts


def write_json(path, report):
    """Write `report` as JSON to `path` (`training.cli.write_text`: a failed
    write leaves an existing `path` as it was)."""
    from training.cli import write_text

    write_text(path, json.dumps(report, indent=2))


def main(argv=None):
    """Command line entry: run the benchmark, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: 1 warm-up call and 3 timed rounds (default 3 and 20)",
    )
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed rounds per variant (default 20, quick 3)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up calls per variant (default 3, quick 1)")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES),
                        default=list(SHAPES), help="shapes to run")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS,
                        default=list(VARIANTS), help="variants to run")
    parser.add_argument(
        "--batch-shards", default="auto",
        help="loops per fused layer over parts of the batch: a positive "
        "integer, or 'auto' (the layer's own choice; see "
        "layers.fused_elman.batch_shards)",
    )
    parser.add_argument(
        "--dtype-policy", default="float32", choices=DTYPE_POLICIES,
        help="Keras dtype policy every variant is built under (default "
        "float32; the mixed ones compute in 16 bits with float32 weights)",
    )
    parser.add_argument("--output", default=None,
                        help="write the results as JSON to this path")
    args = parser.parse_args(argv)
    for flag, values in (("--shapes", args.shapes), ("--variants", args.variants)):
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:  # each would be timed twice a round, its row printed twice
            parser.error(f"{flag} names {', '.join(repeated)} more than once")
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    if rounds < 1:
        parser.error(f"--rounds must be a positive integer, got {rounds}")
    if warmup < 0:
        parser.error(f"--warmup must be an integer >= 0, got {warmup}")
    if args.output is not None:
        error = output_file_error(args.output)
        if error is not None:
            parser.error(error)
    shards = None
    if args.batch_shards != "auto":
        try:
            shards = int(args.batch_shards)
        except ValueError:
            shards = 0
        if shards <= 0:
            parser.error(
                "--batch-shards must be a positive integer or 'auto', got "
                f"{args.batch_shards!r}"
            )

    import keras
    import tensorflow as tf

    from layers.fused_elman import batch_shards

    tf.get_logger().setLevel("ERROR")  # one train_step per model: no retrace

    def log(message):
        print(message, file=sys.stderr, flush=True)

    # The peak is re-measured around every shape and the best kept: on a
    # busy machine a single measurement can land in a bad moment.
    peaks = [measure_matmul_peak()]
    log(f"float32 matmul peak: {peaks[-1] / 1e9:.1f} GFLOP/s ({describe()})")
    all_results = {}
    log(f"dtype policy: {args.dtype_policy}")
    for name in args.shapes:
        shape = SHAPES[name]
        log(f"{name}: {shape}")
        with batch_shards(shards), dtype_policy(args.dtype_policy):
            seconds = benchmark_shape(
                name, shape, list(args.variants), warmup, rounds, log
            )
        peaks.append(measure_matmul_peak())
        log(f"float32 matmul peak: {peaks[-1] / 1e9:.1f} GFLOP/s")
        forward = model_flops(shape)
        all_results[name] = {
            "shape": shape,
            "seconds": seconds,
            # Training: forward plus the two backward matmuls per matmul.
            "flops_per_call": {"train": 3 * forward, "infer": forward},
        }
    peak = max(peaks)
    variants = list(args.variants)
    print(f"machine: {describe()}")
    print(f"float32 matmul peak (best of {len(peaks)} measurements): "
          f"{peak / 1e9:.1f} GFLOP/s; every variant built under the "
          f"{args.dtype_policy} dtype policy")
    print(_table(all_results, peak, variants))
    verdicts = _verdicts(all_results)
    # The targets are judged on medians of at least MIN_ROUNDS rounds: fewer
    # (--quick) print the ratios without a verdict.
    judged = rounds >= MIN_ROUNDS
    if not judged:
        print(f"{rounds} timed rounds, fewer than the {MIN_ROUNDS} the targets are judged on: "
              "ratios without a verdict")
    for v in verdicts:
        verdict = ("met" if v["met"] else "NOT met") if judged else "no verdict"
        print(
            f"{v['shape']} {v['mode']}: elman_rnn / {v['reference']} = "
            f"{v['ratio']:.2f} (target <= {v['target']}) {verdict}"
        )
    report = {
        "command": "python -m benchmarks.rnn_speed " + " ".join(
            argv if argv is not None else sys.argv[1:]
        ),
        "rounds": rounds,
        "judged": judged,  # rounds >= MIN_ROUNDS: the verdicts' `met` count
        "batch_shards": args.batch_shards,
        "dtype_policy": args.dtype_policy,
        "warmup": warmup,
        "matmul_peak_flops": peak,
        "matmul_peak_measurements": peaks,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "results": all_results,
        "verdicts": verdicts,
    }
    if args.output is not None:
        write_json(args.output, report)
    return report


if __name__ == "__main__":
    main()

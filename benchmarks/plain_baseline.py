"""The issues' plain baseline: a bidirectional `keras.layers.SimpleRNN` CTC model.

Trains, on exactly the data, features, callbacks and evaluation of
`python train.py --task transcription`, the model the issues compare against:

    features -> FrameStacking(--frame-stack) -> --num-layers x
    Bidirectional(keras.layers.SimpleRNN(--hidden-size)) -> Dense -> log-softmax

no dense front end, no dropout, no frequency warp (pass --frequency-warp 0,
--no-spec-augment, --num-dense-layers 0 and --dropout 0 to make the
configuration say so; flags that the baseline model ignores are rejected).
Every other flag is train.py's. An accuracy run, not a test:

    python -m benchmarks.plain_baseline --dataset '../shared/data/asterisk_en:test_fraction=0.1' \\
        --fmax 3800 --top-db 30 --batch-size 8 --frame-stack 1 --num-dense-layers 0 \\
        --hidden-size 128 --dropout 0 --no-spec-augment --frequency-warp 0 \\
        --learning-rate 1e-3 --lr-schedule constant --max-train-minutes 10 \\
        --early-stopping-patience 1000 --output-dir runs/asterisk_baseline
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Keras and the project's layers are imported where the model is built, and
# the run once the flags are read: --help and a bad flag answer at once.

# Config fields that shape the project's model but have no place in the
# baseline: they must be off, so the run's config.json describes what ran.
_OFF = {"num_dense_layers": 0, "dropout": 0.0, "frequency_warp": 0.0, "ema_momentum": None,
        "dtype_policy": "float32"}


def check_config(config):
    """ValueError naming the flags set that the baseline model does not have."""
    wrong = {name: getattr(config, name) for name, off in _OFF.items() if getattr(config, name) != off}
    if wrong:
        raise ValueError(
            f"The plain baseline has no {', '.join(sorted(wrong))}; pass "
            + " ".join(
                f"--{name.replace('_', '-')} {_OFF[name]:g}" if isinstance(_OFF[name], (int, float))
                else f"--{name.replace('_', '-')} {_OFF[name]}" if _OFF[name] is not None
                else f"no --{name.replace('_', '-')}"
                for name in sorted(wrong)
            )
            + f" (got {wrong})."
        )


def build_plain_model(config, *, num_features, vocabulary_size):
    """The compiled baseline `CTCModel` for a transcription `Config`."""
    import keras

    from models.ctc_model import CTCModel
    from models.frame_stacking import FrameStacking
    from models.log_probabilities import LogProbabilities

    check_config(config)
    features = keras.Input((None, num_features), name="features")
    feature_length = keras.Input((), dtype="int32", name="feature_length")
    x, frame_length, mask = FrameStacking(config.frame_stack, name="frame_stacking")(
        [features, feature_length]
    )
    for index in range(config.num_layers):
        rnn = keras.layers.SimpleRNN(config.hidden_size, return_sequences=True, name=f"simple_rnn_{index}")
        if config.bidirectional:
            rnn = keras.layers.Bidirectional(rnn, name=f"rnn_{index}")
        x = rnn(x, mask=mask)
    logits = keras.layers.Dense(vocabulary_size, name="logits")(x)
    log_probs = LogProbabilities(name="log_probs")(logits)
    model = CTCModel(
        inputs={"features": features, "feature_length": feature_length},
        outputs={"log_probs": log_probs, "frame_length": frame_length},
        name="plain_baseline",
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate, clipnorm=5.0))
    return model


def main(argv=None):
    import train

    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        # Only the flags it takes: train.py's transcription flags, without --task, --tune and the search's.
        import argparse

        from training.cli import add_config_flags
        from training.transcription_config import Config

        parser = argparse.ArgumentParser(prog="python -m benchmarks.plain_baseline",
                                         description=__doc__.splitlines()[0])
        add_config_flags(parser, Config, group_title="transcription options")
        parser.parse_args(["--help"])
    if "--task" in argv or any(a.startswith("--task=") or a == "--tune" for a in argv):
        raise SystemExit("plain_baseline: --task and --tune do not apply (it trains one transcription model).")
    _, config = train.parse_args(["--task", "transcription", *argv])
    try:
        check_config(config)  # before any data work
    except ValueError as error:
        raise SystemExit(f"plain_baseline: {error}") from None
    # The builder by its importable name (under `python -m` this module is
    # `__main__`): config.json records it, and runs compare it.
    from benchmarks import plain_baseline
    from training import transcription

    # As train.py: SIGTERM (`kill`, a scheduler) ends the run as Ctrl-C does,
    # so that half-written exports and caches are removed, and either ends
    # it with one line (exit 130), not a traceback.
    previous_handler = signal.signal(signal.SIGTERM, train._interrupt)
    try:
        transcription.run(config, model_builder=plain_baseline.build_plain_model)
    except (OSError, ValueError) as error:  # as train.py: bad data, a run directory of other settings
        raise SystemExit(f"plain_baseline: error: {error}") from None
    except KeyboardInterrupt:
        print(f"plain_baseline: interrupted. What {config.output_dir} holds is kept: run the same command again "
              "to resume from the last finished epoch.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`--distribute mirrored`: data-parallel training, checked on two logical CPU devices."""

import json
import os
import subprocess
import sys

import pytest

from tests.fresh_process import clean_env
from training import transcription
from training.distribute import distribution_strategy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.long
def test_two_replicas_take_the_step_of_one_device_and_runs_train_evaluate_and_export(tmp_path):
    process = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "distributed_run.py"), str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT, env=clean_env(PYTHONPATH=ROOT), timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.strip().splitlines()[-1])
    for optimizer in ("sgd", "adam_clipped"):
        step = result[optimizer]
        assert step["replicas"] == [1, 2]
        assert step["initial_difference"] == 0.0
        # Each replica's CTC loss is a mean over half the batch and the gradients are summed: the
        # loss scaled by 1 / replicas makes the step the one-device step (unscaled, twice as large
        # with SGD), and the clip acts on the summed gradient (Keras alone clips each replica's part:
        # 0.018 apart here).
        assert step["update_size"] > 1e-3
        assert step["step_difference"] < 1e-5
        assert step["loss"][1] == pytest.approx(step["loss"][0], rel=1e-5)
    # The run's metrics are those of its saved model read back on one device (not of each
    # replica's copy of the batch), and its export computes what that model computes.
    assert "Distribution: MirroredStrategy, 2 replica(s)" in process.stdout
    assert result["val_cer"] == pytest.approx(result["val_cer_reloaded"])
    assert result["export_difference"] < 1e-4
    # Killed after its first epoch, the run on two replicas resumes at the second with its weights.
    assert result["resumed_at_epoch"] == 1 and result["resumed_weights_difference"] == 0.0
    # Its backup resumes on one device too (--distribute dropped, e.g. moved to another machine).
    assert result["resumed_on_one_device_at_epoch"] == 1
    assert result["resumed_on_one_device_weights_difference"] == 0.0
    # A search (--tune) builds and trains every trial on the two replicas, and its best model too.
    assert "[tuning] every trial on MirroredStrategy, 2 replica(s)" in process.stdout
    # (keras-tuner's first build, outside any strategy, only registers the hyperparameters.)
    assert result["search_built_on"][0] == 1 and result["search_built_on"][1:] == [2, 2]  # the trial, the best
    assert result["search_best_val_cer"] == pytest.approx(result["search_best_val_cer_reloaded"])
    # The language model too: its validation losses are those of its saved model on one device.
    assert result["lm_val_loss"] == pytest.approx(result["lm_val_loss_reloaded"], rel=1e-5)
    assert result["lm_long_context"][0] == pytest.approx(result["lm_long_context"][1], rel=1e-5)


def test_distribute_is_checked(capsys):
    import train

    assert train.parse_args(["--distribute", "mirrored"])[1].distribute == "mirrored"
    with pytest.raises(SystemExit):
        train.parse_args(["--distribute", "horovod"])
    assert "argument --distribute: invalid choice: 'horovod'" in capsys.readouterr().err
    assert distribution_strategy("none").num_replicas_in_sync == 1
    with pytest.raises(ValueError, match=r"`distribute` \(--distribute\), expected one of \('none', 'mirrored'\)"):
        transcription.Config(distribute="horovod")


def test_mirrored_on_one_device_says_each_step_is_the_whole_batch(capsys):
    import keras

    from training.distribute import build_distributed

    def build():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        return model

    model = build_distributed("mirrored", build, batch_size=8)
    assert model.distribute_strategy.num_replicas_in_sync == 1
    assert capsys.readouterr().out == (
        "Distribution: MirroredStrategy, 1 replica(s), one device: each step is the whole batch\n")


# Steps on two replicas against those on one device, each model made by `build_distributed` as
# the runs make theirs: batches that `tf.distribute` splits unevenly (3 -> 2 + 1, 1 -> 1 + 0),
# mixed_float16 (a LossScaleOptimizer around the clipped Adam), and the language model's
# embedding (sparse gradients) under its clip.
STEPS_ON_TWO_REPLICAS = r'''
import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np

from tests.transcription_fixtures import NUM_FEATURES, make_dataset, make_utterances
from training import language_model, transcription
from training.distribute import build_distributed

VOCABULARY = transcription.Vocabulary(transcription.SPEECH_ALPHABET)


def compare(build, data):
    out = {}
    for name in ("none", "mirrored"):
        keras.utils.set_random_seed(5)
        model = build_distributed(name, build, batch_size=3)
        try:
            before = model.evaluate(data, verbose=0)
            loss = model.fit(data, epochs=1, verbose=0).history["loss"][0]
        except Exception as error:
            return {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"}
        out[name] = ([w.numpy().astype("float64") for w in model.weights], [before, loss])
    return {
        "step_difference": max(float(np.abs(a - b).max()) for a, b in zip(out["none"][0], out["mirrored"][0])),
        "losses": [out["none"][1], out["mirrored"][1]],
    }


def transcriber(policy):
    config = transcription.Config(hidden_size=24, num_layers=1, frame_stack=1, frequency_warp=0.0,
                                  dtype_policy=policy)

    def build():
        model = transcription.build_model(config, num_features=NUM_FEATURES, vocabulary_size=VOCABULARY.size)
        # A clip that acts on every step: it must see the replicas' summed gradient.
        optimizer = keras.optimizers.Adam(0.01, clipnorm=0.05)
        if policy == "mixed_float16":  # a loss scale whose first step does not overflow (and is skipped)
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=4.0)
        model.compile(optimizer=optimizer)
        return model

    return build


def language_model_builder(clipnorm):
    config = language_model.Config(hidden_size=16, embedding_dim=8, num_layers=1, sequence_length=10,
                                   clipnorm=clipnorm, dropout=0.0)
    return lambda: language_model.build_model(config, 12)


utterances = make_utterances(4, seed=1)
uneven = make_dataset(utterances[:3], 3).concatenate(make_dataset(utterances[3:], 3))  # batches of 3 and 1
ids = np.random.default_rng(0).integers(0, 12, size=(4, 11)).astype("int32")
windows = tf.data.Dataset.from_tensor_slices((ids[:, :-1], ids[:, 1:]))
print(json.dumps({
    "uneven_transcription": compare(transcriber("float32"), uneven),
    "mixed_float16_transcription": compare(transcriber("mixed_float16"), uneven),
    # Batches of 3 and 1 windows under the clip: both the uneven shares and the sparse rows.
    "clipped_language_model": compare(language_model_builder(0.05), windows.batch(3)),
}))
'''


@pytest.fixture(scope="module")
def steps_on_two_replicas():
    process = subprocess.run(
        [sys.executable, "-c", STEPS_ON_TWO_REPLICAS],
        capture_output=True, text=True, cwd=ROOT, env=clean_env(PYTHONPATH=ROOT), timeout=600,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


def _assert_one_device_step(step, tolerance=1e-5):
    assert "error" not in step, step
    assert step["step_difference"] < tolerance, step
    (evaluated, trained), (evaluated_mirrored, trained_mirrored) = step["losses"]
    assert evaluated_mirrored == pytest.approx(evaluated, rel=1e-4)
    assert trained_mirrored == pytest.approx(trained, rel=1e-4)


@pytest.mark.long
def test_batches_that_split_unevenly_across_replicas_take_the_one_device_step(steps_on_two_replicas):
    # Batches of 3 and 1 utterances (or windows). Keras builds the model from the first batch
    # averaged across the replicas, which failed on shares of 2 and 1 ("AddN ... must have the same
    # size"); the CTC loss failed on a share of none ("batch_size must not be 0"); and each
    # replica's mean weighed a share of 1 as much as one of 2.
    _assert_one_device_step(steps_on_two_replicas["uneven_transcription"])
    _assert_one_device_step(steps_on_two_replicas["clipped_language_model"])


@pytest.mark.long
def test_mixed_float16_clips_the_replicas_summed_gradient(steps_on_two_replicas):
    # The LossScaleOptimizer has no clip of its own: the Adam it wraps clipped each replica's part
    # (on the same uneven batches).
    _assert_one_device_step(steps_on_two_replicas["mixed_float16_transcription"], tolerance=3e-3)


@pytest.mark.long
def test_the_language_models_clipped_step_is_the_one_device_step(steps_on_two_replicas):
    # Its embedding's gradient is sparse: halved copies of its rows on each replica changed
    # Adam's second moment, which squares rows before adding them up.
    _assert_one_device_step(steps_on_two_replicas["clipped_language_model"])

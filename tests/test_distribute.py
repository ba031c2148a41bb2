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

"""Distributed tuning: one chief and two workers on 127.0.0.1, on tiny data.

Every trial must be run exactly once by some worker, recorded by the chief,
and every process must exit by itself (the launcher's timeout stops them
all and fails the test otherwise, so it never hangs).
"""

import csv
import json
import os
import re
import socket
import sys

import pytest

from tuning.distributed import launch_search

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ)
    env.update(
        PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""),
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return env


def test_chief_and_two_workers_run_every_trial_once_and_exit(tmp_path):
    output_dir = tmp_path / "run"
    logs = tmp_path / "logs"
    command = [
        sys.executable, "-m", "tests.tuning_toy_task", str(output_dir),
        "--tuner", "random", "--max-trials", "3", "--max-epochs", "1",
    ]
    codes = launch_search(
        command, workers=2, port=_free_port(), timeout=170, log_dir=str(logs), env=_env()
    )
    text = {name: (logs / f"{name}.log").read_text() for name in ("chief", "tuner1", "tuner2")}
    assert codes == {"chief": 0, "tuner1": 0, "tuner2": 0}, text

    # Each worker says which trials it finished; together: each trial once.
    finished = {
        name: re.findall(rf"\[tuning {name}\] trial (\d+) of 3 completed", text[name])
        for name in ("tuner1", "tuner2")
    }
    assert sorted(finished["tuner1"] + finished["tuner2"]) == ["1", "2", "3"], finished
    for name in ("tuner1", "tuner2"):
        # Both asked the chief's oracle (which of them ran more trials
        # depends on start-up times) and left when it had none left.
        assert f"worker {name} of a distributed random search, oracle at 127.0.0.1:" in text[name]
        assert f"worker {name}: the oracle has no more trials; exiting" in text[name]

    # The chief's table accounts for all of them.
    with open(output_dir / "tuning" / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["trial_id"], r["status"]) for r in rows] == [
        ("0", "COMPLETED"),
        ("1", "COMPLETED"),
        ("2", "COMPLETED"),
    ]
    best = json.loads((output_dir / "tuning" / "best.json").read_text())
    assert best["trials"]["completed"] == 3
    assert best["objective"]["value"] == pytest.approx(min(float(r["objective"]) for r in rows))
    # The shared folder holds the workers' checkpoints: the chief restores, not retrains.
    assert best["model"]["source"].startswith("restored")
    assert "[toy] done as chief" in text["chief"]


def test_launcher_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`workers`, expected a positive integer, got 0"):
        launch_search(["true"], workers=0, port=8000)
    with pytest.raises(ValueError, match="`port`, expected an integer in 1..65535, got 70000"):
        launch_search(["true"], workers=1, port=70000)


def test_launcher_reports_a_chief_that_dies_before_listening(tmp_path):
    with pytest.raises(RuntimeError, match="chief exited with code 3 before serving"):
        launch_search(
            [sys.executable, "-c", "import sys; sys.exit(3)"], workers=1, port=_free_port(), timeout=30
        )

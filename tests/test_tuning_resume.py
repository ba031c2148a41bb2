"""Killing a search mid-trial and running the same command again resumes it."""

import csv
import json
import os
import subprocess
import sys
import time

import pytest

from tests.fresh_process import clean_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.long
def test_killed_search_resumes_without_repeating_finished_trials(tmp_path):
    output_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "tests.tuning_toy_task", str(output_dir),
        "--tuner", "random", "--max-trials", "3", "--max-epochs", "1",
    ]
    env = clean_env(PYTHONPATH=ROOT)
    project = output_dir / "tuning" / "search"

    hold = tmp_path / "holding"
    first = subprocess.Popen(command, cwd=ROOT, env=dict(env, TOY_TASK_HOLD_FILE=str(hold)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The toy task holds when it builds the second trial's model (after
        # the first trial completed): kill the run there, in the middle of it.
        deadline = time.monotonic() + 240
        while not hold.exists():
            assert first.poll() is None, "the search ended before it could be interrupted"
            assert time.monotonic() < deadline, "the search did not reach its second trial"
            time.sleep(0.1)
    finally:
        first.kill()
        first.wait()
    done = json.loads((project / "trial_0" / "trial.json").read_text())
    assert done["status"] == "COMPLETED"
    assert json.loads((project / "trial_1" / "trial.json").read_text())["status"] == "RUNNING"

    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    out = second.stdout
    assert "resuming: 1 trial(s) already completed" in out
    # The interrupted trial 2 runs again, trial 3 is new, trial 1 is kept.
    assert out.count(" starts: ") == 2
    assert "trial 2 of 3 (trial_1) starts" in out and "trial 3 of 3 (trial_2) starts" in out
    assert "trial 1 of 3 (trial_0) starts" not in out

    with open(output_dir / "tuning" / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["trial_id"], r["status"]) for r in rows] == [
        ("0", "COMPLETED"),
        ("1", "COMPLETED"),
        ("2", "COMPLETED"),
    ]
    assert float(rows[0]["objective"]) == done["score"]
    assert json.loads(rows[0]["hyperparameters"]) == done["hyperparameters"]["values"]

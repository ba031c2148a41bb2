"""Distributed tuning: one chief and two workers on 127.0.0.1, on tiny data.

Every trial must be run exactly once by some worker, recorded by the chief,
and every process must exit by itself (the launcher's timeout stops them
all and fails the test otherwise, so it never hangs).
"""

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.fresh_process import clean_env
from tuning.distributed import launch_search

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.long
def test_chief_and_two_workers_run_every_trial_once_and_exit(tmp_path):
    output_dir = tmp_path / "run"
    logs = tmp_path / "logs"
    command = [
        sys.executable, "-m", "tests.tuning_toy_task", str(output_dir),
        "--tuner", "random", "--max-trials", "3", "--max-epochs", "1",
    ]
    codes = launch_search(
        command, workers=2, port=_free_port(), timeout=170, log_dir=str(logs),
        # Each worker's first trial waits for the other's: both get one.
        env=clean_env(PYTHONPATH=ROOT, TOY_TASK_MEET_DIR=str(tmp_path / "meet"), TOY_TASK_MEET_COUNT="2"),
    )
    text = {name: (logs / f"{name}.log").read_text() for name in ("chief", "tuner1", "tuner2")}
    assert codes == {"chief": 0, "tuner1": 0, "tuner2": 0}, text

    # Each worker says which trials it finished; together: each trial once.
    finished = {
        name: re.findall(rf"\[tuning {name}\] trial (\d+) of 3 \(trial_(\d+)\) completed", text[name])
        for name in ("tuner1", "tuner2")
    }
    # Counted from 1, named by keras-tuner's id (from 0), the trial's folder.
    assert sorted(finished["tuner1"] + finished["tuner2"]) == [("1", "0"), ("2", "1"), ("3", "2")], finished
    for name in ("tuner1", "tuner2"):
        # Both asked the chief's oracle and had a trial (which of them ran
        # the third depends on timing), and left when it had none left.
        assert finished[name], finished
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


def _main_error(capsys, code, *argv):
    from tuning.distributed import main

    with pytest.raises(SystemExit) as exit_info:
        result = main([str(a) for a in argv])
        raise SystemExit(result)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path, capsys):
    marker = tmp_path / "ran"
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        message = _main_error(capsys, 2, "--workers", 1, "--port", port, "--",
                              sys.executable, "-c", f"open({str(marker)!r}, 'w')")
        with pytest.raises(ValueError, match=f"port {port} is already in use"):
            launch_search(["true"], workers=1, port=port)
    assert f"argument --port: port {port} is already in use" in message
    assert not marker.exists()


def test_bad_commands_and_timeouts_are_one_line_usage_errors(capsys):
    message = _main_error(capsys, 2, "--port", _free_port(), "--", "/nonexistent/prog")
    assert "'/nonexistent/prog' cannot be run" in message
    message = _main_error(capsys, 2, "--timeout", -1, "--port", _free_port(), "--", "true")
    assert "argument --timeout: expected a positive number of seconds, got -1" in message


def test_a_failing_chief_is_one_line_naming_its_code_and_output(tmp_path, capsys):
    message = _main_error(capsys, 1, "--workers", 1, "--port", _free_port(), "--log-dir", tmp_path, "--",
                          sys.executable, "-c", "import sys; sys.exit(3)")
    assert "chief exited with code 3" in message and str(tmp_path / "chief.log") in message


def test_workers_are_stopped_when_the_chief_fails_after_listening(tmp_path, capsys):
    port = _free_port()
    script = (
        "import os, socket, sys, time\n"
        "if os.environ['KERASTUNER_TUNER_ID'] == 'chief':\n"
        "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"    s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(1); sys.exit(4)\n"
        "time.sleep(120)\n"
    )
    message = _main_error(capsys, 1, "--workers", 2, "--port", port, "--timeout", 60, "--log-dir", tmp_path, "--",
                          sys.executable, "-c", script)
    assert "the chief exited with code 4 (the workers were stopped)" in message
    assert str(tmp_path / "chief.log") in message



def _chief_done_script(port, chief_code):
    """A chief that listens for a second and exits with `chief_code`, a tuner1
    that exits at once and a tuner2 that sleeps: the race of a small search,
    where tuner1 runs every trial before tuner2 first asks the oracle."""
    return (
        "import os, socket, sys, time\n"
        "role = os.environ['KERASTUNER_TUNER_ID']\n"
        "if role == 'chief':\n"
        "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"    s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(1); sys.exit({chief_code})\n"
        "if role == 'tuner2':\n"
        "    time.sleep(120)\n"
    )


def test_a_worker_that_got_no_trial_is_stopped_once_the_chief_has_finished(capsys):
    port = _free_port()
    started = time.monotonic()
    codes = launch_search([sys.executable, "-c", _chief_done_script(port, 0)], workers=2, port=port,
                          timeout=60, worker_grace=2)
    assert codes == {"chief": 0, "tuner1": 0, "tuner2": None}
    assert time.monotonic() - started < 30  # stopped after the grace, not at the timeout

    from tuning.distributed import main

    port = _free_port()
    assert main(["--workers", "2", "--port", str(port), "--timeout", "60", "--worker-grace", "2", "--",
                 sys.executable, "-c", _chief_done_script(port, 0)]) == 0
    out = capsys.readouterr().out
    assert "[tuning] exit codes: chief=0, tuner1=0, tuner2=stopped" in out
    assert ("[tuning] tuner2 got no trial: the other workers had run every trial and the chief had finished; "
            "still waiting for the oracle 2 s later, it was stopped.") in out


def test_a_failing_chief_stops_its_workers_and_the_codes_say_so():
    port = _free_port()
    codes = launch_search([sys.executable, "-c", _chief_done_script(port, 4)], workers=2, port=port,
                          timeout=60, worker_grace=2)
    assert codes["chief"] == 4 and codes["tuner1"] == 0
    assert codes["tuner2"] == -signal.SIGTERM  # stopped, not reported as a worker without a trial


def test_train_py_without_tune_is_refused(capsys):
    # It would train one model as the "chief" and never serve an oracle.
    message = _main_error(capsys, 2, "--port", _free_port(), "--", sys.executable, "train.py", "--task",
                          "language_model")
    assert "the search command runs train.py without --tune; expected a search" in message


def test_a_terminated_launcher_stops_its_processes(tmp_path):
    # The processes run in sessions of their own: SIGTERM to the launcher must reach them.
    port = _free_port()
    pids = tmp_path / "pids"
    script = (
        "import os, socket, time\n"
        f"open({str(pids)!r} + os.environ['KERASTUNER_TUNER_ID'], 'w').write(str(os.getpid()))\n"
        "if os.environ['KERASTUNER_TUNER_ID'] == 'chief':\n"
        "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"    s.bind(('127.0.0.1', {port})); s.listen()\n"
        "time.sleep(120)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-m", "tuning.distributed", "--workers", "1", "--port", str(port),
                                 "--", sys.executable, "-c", script], cwd=ROOT, env=clean_env(PYTHONPATH=ROOT))
    files = [tmp_path / "pidschief", tmp_path / "pidstuner1"]
    deadline = time.monotonic() + 60
    while not all(f.exists() and f.read_text() for f in files):
        assert time.monotonic() < deadline and launcher.poll() is None, "the processes did not start"
        time.sleep(0.1)
    launcher.terminate()
    assert launcher.wait(timeout=30) == 128 + signal.SIGTERM
    for f in files:
        pid = int(f.read_text())
        deadline = time.monotonic() + 15
        while _alive(pid):
            assert time.monotonic() < deadline, f"{f.name[4:]} (pid {pid}) outlived its launcher"
            time.sleep(0.1)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited
        return f.read().split(") ")[-1][0] != "Z"

"""Shared test set-up: quiet TensorFlow, deterministic seeds, CPU only."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Under pytest-xdist (`make test`: one worker per core), TensorFlow's thread
# pools default to one thread per core in every worker, and the workers (and
# the processes some tests start) then fight over the cores: the slowest tests
# took 4-12 times their time alone. The cores are shared out instead; set in
# the environment before TensorFlow starts, so the tests' subprocesses get it
# too (docs/experiments.md, "Timings of make train and make test").
if os.environ.get("PYTEST_XDIST_WORKER"):
    from pipelines.cores import usable_cores

    _threads = str(max(1, usable_cores() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)))
    for _name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_name, _threads)

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


def pytest_collection_modifyitems(config, items):
    """The tests marked `long` (a whole run, a search, other processes: 15-80 s each in
    the suite) first, in their order, then the others in theirs.

    pytest-xdist's `worksteal` gives each worker a part of this order and lets an idle
    worker take tests from the end of another's: with the long tests first, the last
    tests of the suite are short ones, not one worker idling while the other runs a
    minute-long test to the end."""
    items[:] = sorted(items, key=lambda item: item.get_closest_marker("long") is None)

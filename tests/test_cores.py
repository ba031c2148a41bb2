"""The cores the process may run on (`pipelines.cores`), not the host's."""

import os

import pytest

from pipelines import cores


@pytest.fixture
def python_3_11(monkeypatch):
    monkeypatch.delattr(os, "process_cpu_count", raising=False)


def test_the_affinity_mask_not_the_hosts_count(monkeypatch, python_3_11):
    # A container or `taskset -c 0,1` on a 64-core host.
    monkeypatch.setattr(cores.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert cores.usable_cores() == 2


def test_the_hosts_count_without_an_affinity_mask(monkeypatch, python_3_11):
    # macOS and Windows have no `sched_getaffinity`.
    monkeypatch.delattr(cores.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(cores.os, "cpu_count", lambda: 6)
    assert cores.usable_cores() == 6
    monkeypatch.setattr(cores.os, "cpu_count", lambda: None)  # "cannot be determined"
    assert cores.usable_cores() == 1


def test_python_3_13s_process_cpu_count_first(monkeypatch):
    monkeypatch.setattr(cores.os, "process_cpu_count", lambda: 3, raising=False)
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert cores.usable_cores() == 3


def test_this_process():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert cores.usable_cores() == expected >= 1


def test_the_fused_loops_count_the_process_cores(monkeypatch, python_3_11):
    from layers import fused_elman

    monkeypatch.setattr(cores.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {5}, raising=False)
    assert fused_elman._shard_count(256) == 1  # one core: one loop, whatever the host has
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {5, 6}, raising=False)
    assert fused_elman._shard_count(256) == 2
    with fused_elman.side_by_side(2):
        assert fused_elman._shard_count(256) == 1  # two cores, two directions: one loop each

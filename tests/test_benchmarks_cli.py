"""Usage errors of the benchmark command lines: refused before any benchmark work."""

import os

import pytest

from benchmarks import feature_speed, machine, plain_baseline, rnn_speed


def _usage_error(main, capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def no_benchmark(monkeypatch):
    """Any benchmark work fails the test: the usage errors come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(rnn_speed, "measure_matmul_peak", refuse)


@pytest.mark.parametrize("argv, needle", [
    (["--rounds", "0"], "--rounds must be a positive integer, got 0"),
    (["--rounds", "0", "--quick"], "--rounds must be a positive integer, got 0"),
    (["--warmup", "-1"], "--warmup must be an integer >= 0, got -1"),
])
def test_rnn_speed_refuses_rounds_and_warmup_out_of_range(argv, needle, no_benchmark, capsys):
    assert needle in _usage_error(rnn_speed.main, capsys, *argv)


def test_rnn_speed_uses_the_rounds_and_warmup_given(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(rnn_speed, "measure_matmul_peak", lambda: 1e9)
    monkeypatch.setattr(rnn_speed, "benchmark_shape",
                        lambda name, shape, variants, warmup, rounds, log: calls.append((warmup, rounds)) or {
                            mode: {v: 1.0 for v in variants} for mode in ("train", "infer")})
    output = tmp_path / "new" / "dir" / "report.json"  # a missing parent is made
    report = rnn_speed.main(["--warmup", "0", "--rounds", "2", "--shapes", sorted(rnn_speed.SHAPES)[0],
                             "--output", str(output)])
    assert calls == [(0, 2)] and (report["warmup"], report["rounds"]) == (0, 2)
    assert output.is_file()
    assert report["cpu"] == machine.cpu_model() and report["cpu_count"] == os.cpu_count()


def test_the_cpu_model_comes_from_cpuinfo_else_the_platform(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B45\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 9B45\n")
    assert machine.cpu_model(cpuinfo) == "AMD EPYC 9B45"
    monkeypatch.setattr(machine.platform, "processor", lambda: "x86_64")
    assert machine.cpu_model(tmp_path / "missing") == "x86_64"
    cpuinfo.write_text("processor\t: 0\nmodel name\t:\n")  # an empty name is no name
    assert machine.cpu_model(cpuinfo) == "x86_64"
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    assert machine.cpu_model(tmp_path / "missing") == "unknown"


def test_rnn_speed_builds_the_variants_under_the_dtype_policy_given(monkeypatch, capsys):
    import keras

    seen = []
    monkeypatch.setattr(rnn_speed, "measure_matmul_peak", lambda: 1e9)
    monkeypatch.setattr(rnn_speed, "benchmark_shape",
                        lambda name, shape, variants, warmup, rounds, log: seen.append(
                            keras.config.dtype_policy().name) or {
                            mode: {v: 1.0 for v in variants} for mode in ("train", "infer")})
    before = keras.config.dtype_policy().name
    report = rnn_speed.main(["--rounds", "1", "--shapes", sorted(rnn_speed.SHAPES)[0],
                             "--dtype-policy", "mixed_bfloat16"])
    assert seen == ["mixed_bfloat16"] and report["dtype_policy"] == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before == "float32"  # restored
    assert "under the mixed_bfloat16 dtype policy" in capsys.readouterr().out
    assert "invalid choice: 'bfloat16'" in _usage_error(rnn_speed.main, capsys, "--dtype-policy", "bfloat16")


def test_rnn_speed_checks_the_output_before_running(tmp_path, no_benchmark, capsys):
    message = _usage_error(rnn_speed.main, capsys, "--output", tmp_path)
    assert f"--output {tmp_path} is a directory" in message
    file = tmp_path / "file"
    file.write_text("keep me\n")
    message = _usage_error(rnn_speed.main, capsys, "--output", file / "report.json")
    assert f"--output {file / 'report.json'}" in message and "not a directory" in message
    assert file.read_text() == "keep me\n"


@pytest.mark.parametrize("flag, value", [
    ("--cold-repeats", "0"), ("--cold-repeats", "-1"), ("--batch-size", "0"), ("--repeats", "0"),
])
def test_feature_speed_refuses_counts_below_one(flag, value, capsys, tmp_path):
    message = _usage_error(feature_speed.main, capsys, flag, value, "--cache-dir", tmp_path / "cache")
    assert f"{flag} must be a positive integer, got {value}" in message
    assert not os.path.exists(tmp_path / "cache")


def test_plain_baseline_help_lists_only_the_flags_it_takes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        plain_baseline.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--hidden-size" in text and "--dataset" in text
    assert "--task" not in text and "--tune" not in text and "hyperparameter search" not in text


def test_in_memory_feed_gives_back_the_batches_in_order_without_python():
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    shapes = [(4, 7), (4, 9), (2, 7), (4, 7), (3, 9), (4, 9)]  # shapes repeat, not in runs
    batches = [
        ({"features": tf.constant(rng.normal(size=(rows, frames, 3)), tf.float32),
          "lengths": tf.constant(rng.integers(1, frames + 1, rows), tf.int32)},
         tf.constant(rng.integers(0, 5, (rows, frames // 2)), tf.int32))
        for rows, frames in shapes
    ]
    spec = ({"features": tf.TensorSpec((None, None, 3), tf.float32), "lengths": tf.TensorSpec((None,), tf.int32)},
            tf.TensorSpec((None, None), tf.int32))
    feed = feature_speed.in_memory_feed(batches, spec)
    assert int(feed.cardinality()) == len(batches)
    for _ in range(2):  # each iteration is the same epoch
        got = list(feed)
        assert len(got) == len(batches)
        for want, have in zip(batches, got):
            tf.nest.assert_same_structure(want, have)
            for a, b in zip(tf.nest.flatten(want), tf.nest.flatten(have)):
                assert a.shape == b.shape and a.dtype == b.dtype
                np.testing.assert_array_equal(a.numpy(), b.numpy())
    graph = feed._as_serialized_graph().numpy()
    assert b"PyFunc" not in graph and b"Generator" not in graph
    generator_feed = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=spec)
    assert b"PyFunc" in generator_feed._as_serialized_graph().numpy()  # the check above can fail


def test_in_memory_feed_of_no_batches_is_an_error():
    with pytest.raises(ValueError, match="at least one batch"):
        feature_speed.in_memory_feed([], None)


def test_load_test_and_feature_fidelity_refuse_bad_flags_before_any_work(tmp_path, capsys):
    from serving import feature_fidelity, load_test

    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("path\ttext\n")
    for main, argv, needle in (
        (load_test.main, ["--model_name", "m", "--kind", "transcribe", "--seconds", "-1"],
         "--seconds must be a positive number of seconds, got -1.0"),
        (load_test.main, ["--model_name", "m", "--kind", "transcribe", "--audio", tmp_path / "none.wav"],
         f"--audio {tmp_path / 'none.wav'} is not a file"),
        (load_test.main, ["--model_name", "m", "--kind", "generate", "--max_new_chars", "-3"],
         "--max_new_chars must be >= 0, got -3"),
        (load_test.main, ["--model_name", "m", "--kind", "generate", "--url", "127.0.0.1:8501"],
         "--url must start with http:// or https://"),
        (feature_fidelity.main, ["--manifest", tmp_path], f"--manifest {tmp_path} is not a file"),
        (feature_fidelity.main, ["--manifest", manifest, "--limit", "-1"], "--limit must be 0 (all)"),
        (feature_fidelity.main, ["--manifest", manifest, "--batch_size", "0"], "--batch_size must be a positive"),
        (feature_fidelity.main, ["--manifest", manifest, "--export", tmp_path],
         f"--export {tmp_path} is not a SavedModel version directory"),
    ):
        assert needle in _usage_error(main, capsys, *argv), argv


def test_load_test_without_a_server_is_one_line(capsys):
    from serving import load_test

    port = _free_port()
    assert load_test.main(["--model_name", "m", "--kind", "generate", "--url", f"http://127.0.0.1:{port}",
                           "--timeout", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"load_test: error: no answer from http://127.0.0.1:{port} (ConnectError")
    assert "Traceback" not in err


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

"""Language model export: layout, metadata, signatures, a fresh process, the CLI."""

import json
import os
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.language_model import build_language_model
from models.language_model_io import save_language_model
from models.text_generation import generate_text
from pipelines.vocabulary import Vocabulary
from serving.export import pinned_devices, read_metadata, write_saved_model_version, xla_compiled_functions
from serving.export_run import export_run
from serving.language_model_export import SEEDED_SIGNATURE, export_language_model
from tests.fresh_process import PROJECT_PACKAGES, run_side_by_side

TEXT = "to be, or not to be: that is the question.\nwhether 'tis nobler in the mind\n"
PROMPTS = ["to be", "w", "the question"]


@pytest.fixture(scope="module")
def vocabulary():
    return Vocabulary.from_text(TEXT)


def fitted_language_model(vocabulary, *, seed=7, num_layers=2, dropout=0.1):
    """A small language model fitted a few steps on TEXT, so greedy decoding is not a constant string."""
    keras.utils.set_random_seed(seed)
    model = build_language_model(
        vocabulary_size=vocabulary.size, embedding_dim=8, hidden_size=24, num_layers=num_layers, dropout=dropout
    )
    ids = np.array([vocabulary.encode(TEXT)] * 4, np.int32)
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ids[:, :-1], ids[:, 1:], epochs=15, verbose=0)
    return model


@pytest.fixture(scope="module")
def model(vocabulary):
    return fitted_language_model(vocabulary)


@pytest.fixture(scope="module")
def export_path(model, vocabulary, tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    return export_language_model(
        model, vocabulary, base, trained_on={"dataset": "hamlet line"},
        metrics={"val_bpc": 2.5}, config={"hidden_size": 24},
    )


@pytest.fixture(scope="module")
def loaded(export_path):
    return tf.saved_model.load(export_path)


def _generate(loaded, prompts, n, temperature=0.0, seed=None):
    inputs = dict(prompt=tf.constant(prompts), max_new_chars=tf.constant(n, tf.int32),
                  temperature=tf.constant(temperature, tf.float32))
    if seed is None:
        out = loaded.signatures["serving_default"](**inputs)
    else:
        out = loaded.signatures[SEEDED_SIGNATURE](**inputs, seed=tf.constant(seed, tf.int64))
    return [t.decode("utf-8") for t in out["text"].numpy()]


def _keras_nll(model, vocabulary, text):
    ids = np.array([vocabulary.encode(text)], np.int32)
    logits = np.asarray(model(ids, training=False), np.float64)[0]
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    return -sum(log_probs[t, ids[0, t + 1]] for t in range(len(text) - 1))


def test_layout_and_metadata(export_path, vocabulary):
    base, version = os.path.split(export_path)
    assert version == "1" and os.path.basename(base) == "language_model"
    assert sorted(os.listdir(base)) == ["1"]  # no staging directory left behind
    assert os.path.isfile(os.path.join(export_path, "saved_model.pb"))
    metadata = read_metadata(export_path)
    assert metadata["task"] == "language_model"
    assert Vocabulary.from_config(metadata["vocabulary"]) == vocabulary
    assert metadata["trained_on"] == {"dataset": "hamlet line"}
    assert metadata["metrics"] == {"val_bpc": 2.5}
    assert metadata["config"] == {"hidden_size": 24}
    assert metadata["tensorflow_version"] == tf.__version__


def test_nothing_is_xla_compiled_or_pinned_to_a_device(export_path):
    # TF Serving's images cannot run XLA-compiled functions (see the README);
    # no device names: the placer puts each op on the GPU when it has one.
    assert xla_compiled_functions(export_path) == []
    assert pinned_devices(export_path) == []


def test_greedy_generation_matches_keras(loaded, model, vocabulary):
    got = _generate(loaded, PROMPTS, 25)
    expected = generate_text(model, vocabulary, PROMPTS, length=25, temperature=0.0)
    assert got == expected
    assert _generate(loaded, PROMPTS, 25, seed=3) == expected  # greedy ignores the seed
    assert len(set(got[0])) > 2  # a real continuation, not one repeated character


def test_generation_lengths_temperature_and_zero(loaded, vocabulary):
    samples = _generate(loaded, PROMPTS, 40, temperature=1.5)
    assert [len(s) for s in samples] == [40, 40, 40]
    assert set("".join(samples)) <= set(vocabulary.characters)  # no pad/unk
    assert _generate(loaded, PROMPTS, 0) == ["", "", ""]


@pytest.mark.parametrize("seed", [None, 12345], ids=["serving_default", "generate_seeded"])
def test_sampling_follows_the_tempered_softmax(loaded, model, vocabulary, seed):
    # 4,000 one-character samples after "to b" at temperature 0.5 against the
    # Keras model's softmax(logits / 0.5) over the characters (reserved ids
    # excluded). Hoeffding: a frequency 0.05 off its probability has odds
    # under 1e-8 per character, so this does not flake (and with a seed it
    # is one fixed draw).
    samples = _generate(loaded, ["to b"] * 4000, 1, temperature=0.5, seed=seed)
    logits = np.asarray(model(np.array([vocabulary.encode("to b")], np.int32), training=False), np.float64)[0, -1]
    logits[: Vocabulary.num_reserved] = -np.inf
    probs = np.exp((logits - logits.max()) / 0.5)
    probs /= probs.sum()
    counts = np.zeros(vocabulary.size)
    for text in samples:
        counts[vocabulary.encode(text)[0]] += 1
    np.testing.assert_allclose(counts / len(samples), probs, atol=0.05)
    assert probs.max() < 0.95  # the check is not of a near-certain choice


def test_every_load_samples_afresh(export_path):
    # Two server processes (here two loads) must not replay the same samples:
    # an op seed fixed at export time would make every replica and every
    # restart return the same "random" text.
    first, second = (
        _generate(tf.saved_model.load(export_path), ["to", "wh"], 40, temperature=1.0) for _ in range(2)
    )
    assert first != second
    loaded = tf.saved_model.load(export_path)
    assert _generate(loaded, ["to"], 40, temperature=1.0) != _generate(loaded, ["to"], 40, temperature=1.0)


def test_seeded_generation_repeats_across_loads(export_path):
    # The same request and seed give the same text on every call and in every
    # process (here two loads); rows of one request still differ, and another
    # seed gives other text.
    first, second = (tf.saved_model.load(export_path) for _ in range(2))
    prompts = ["to", "to", "to", "wh"]
    sampled = _generate(first, prompts, 40, temperature=1.0, seed=7)
    assert _generate(first, prompts, 40, temperature=1.0, seed=7) == sampled
    assert _generate(second, prompts, 40, temperature=1.0, seed=7) == sampled
    assert len(set(sampled[:3])) == 3
    assert _generate(second, prompts, 40, temperature=1.0, seed=8) != sampled
    assert _generate(second, prompts, 40, temperature=1.0, seed=-2**63) != sampled  # the whole int64 range


def test_bad_generation_arguments_are_invalid_argument(loaded):
    for prompts, n, temperature, message in (
        (["to", ""], 5, 0.0, "at least one character"),
        (["to", "to bé"], 5, 0.0, "must be in the vocabulary of the model"),  # é is unknown
        (["{"], 0, 0.0, "must be in the vocabulary of the model"),
        (["to"], -1, 0.0, "max_new_chars"),
        (["to"], 5, -0.5, "temperature"),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            _generate(loaded, prompts, n, temperature)
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            _generate(loaded, prompts, n, temperature, seed=1)


@pytest.mark.parametrize("temperature, shown", [(float("nan"), "nan"), (float("inf"), "inf"),
                                                (float("-inf"), "-inf"), (-0.5, "-0.5")])
def test_temperature_must_be_a_finite_number(loaded, temperature, shown):
    message = f"assertion failed: [`temperature` must be a finite number >= 0 (0 is greedy), got {shown}]"
    for seed in (None, 1):  # serving_default and generate_seeded
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            _generate(loaded, ["to"], 5, temperature, seed=seed)
        assert message in error.value.message


HINT = ("; expected characters of its vocabulary (the characters of its training text, listed in "
        "assets/metadata.json of the export)")


def test_unknown_characters_are_named_with_their_row(loaded):
    cases = [
        (["to", "to bé"], "`prompt`[1] holds characters é (U+00E9) the model was not trained on"),
        (["{éa}", "to"], "`prompt`[0] holds characters { (U+007B), } (U+007D), é (U+00E9) the model was not "
                         "trained on"),
        (["t\u00a0o", "to", "x]", "\U0001F600"],
         "`prompt`[0] holds characters \u00a0 (U+00A0) the model was not trained on (and 2 more rows do)"),
        (["to", "t\x00o", "\t"],
         "`prompt`[1] holds characters \\000 (U+0000) the model was not trained on (and 1 more row does)"),
    ]
    for prompts, detail in cases:
        for seed in (None, 1):
            with pytest.raises(tf.errors.InvalidArgumentError) as error:
                _generate(loaded, prompts, 5, 0.0, seed=seed)
            expected = f"every `prompt` character must be in the vocabulary of the model: {detail}{HINT}"
            assert f"assertion failed: [{expected}]" in error.value.message
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        loaded.signatures["score"](text=tf.constant(["to be", "\U0001F600 to ]"]))
    assert ("every `text` character must be in the vocabulary of the model: `text`[1] holds characters "
            "] (U+005D), \U0001F600 (U+1F600) the model was not trained on" + HINT) in error.value.message
    # An empty batch has nothing to refuse.
    assert _generate(loaded, tf.constant([], tf.string), 3) == []


def test_score_matches_keras(loaded, model, vocabulary):
    texts = ["to be or not", "t", "", "whether 'tis", "to be"]
    out = loaded.signatures["score"](text=tf.constant(texts))
    np.testing.assert_array_equal(out["char_count"].numpy(), [11, 0, 0, 11, 4])
    expected = [_keras_nll(model, vocabulary, t) if len(t) > 1 else 0.0 for t in texts]
    np.testing.assert_allclose(out["nll"].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_score_of_empty_texts_only(loaded):
    # As in a batch with longer texts: nothing to score, not TensorFlow's "Tried to stack elements of an
    # empty list" from the model's loop over no step.
    for texts in ([""], ["", ""], []):
        out = loaded.signatures["score"](text=tf.constant(texts, tf.string))
        assert out["nll"].numpy().tolist() == [0.0] * len(texts)
        assert out["char_count"].numpy().tolist() == [0] * len(texts)


def test_score_refuses_characters_outside_the_vocabulary(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="every `text` character must be in the vocabulary"):
        loaded.signatures["score"](text=tf.constant(["to be", "to bé"]))  # é is unknown


def test_versions_count_up_and_ignore_other_names(model, vocabulary, tmp_path):
    os.makedirs(tmp_path / "language_model" / "7")
    os.makedirs(tmp_path / "language_model" / "notes")
    first = export_language_model(model, vocabulary, tmp_path, trained_on="t", metrics={})
    second = export_language_model(model, vocabulary, tmp_path, trained_on="t", metrics={})
    assert [os.path.basename(first), os.path.basename(second)] == ["8", "9"]
    assert sorted(os.listdir(tmp_path / "language_model")) == ["7", "8", "9", "notes"]


def test_output_hidden_layer_and_relu_cells_are_generated_from(vocabulary, tmp_path):
    keras.utils.set_random_seed(5)
    model = build_language_model(vocabulary_size=vocabulary.size, embedding_dim=6, hidden_size=12,
                                 num_layers=2, activation="relu", output_hidden_size=10)
    loaded = tf.saved_model.load(
        export_language_model(model, vocabulary, tmp_path, trained_on="t", metrics={}))
    assert _generate(loaded, PROMPTS, 15) == generate_text(model, vocabulary, PROMPTS, length=15, temperature=0.0)


def test_export_run_exports_a_saved_run(model, vocabulary, tmp_path):
    save_language_model(model, vocabulary, str(tmp_path / "model.keras"))
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "hamlet.txt", "hidden_size": 24}))
    (tmp_path / "metrics.json").write_text(json.dumps({"val_bpc": 2.5, "history": {"loss": [3.0]}}))
    path = export_run(str(tmp_path))
    assert path == str(tmp_path / "export" / "language_model" / "1")
    metadata = read_metadata(path)
    assert metadata["trained_on"]["dataset"] == "hamlet.txt"
    assert metadata["metrics"] == {"val_bpc": 2.5}
    assert metadata["config"]["hidden_size"] == 24
    loaded = tf.saved_model.load(path)
    assert _generate(loaded, PROMPTS, 10) == generate_text(model, vocabulary, PROMPTS, length=10, temperature=0.0)


def test_a_failed_write_leaves_no_version(tmp_path):
    class Failing:
        def write_out(self, path, verbose=False):
            with open(os.path.join(path, "saved_model.pb"), "wb") as f:
                f.write(b"partial")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_saved_model_version(Failing(), tmp_path, "m", {"task": "x"})
    assert os.listdir(tmp_path / "m") == []


def test_a_killed_exports_staging_folder_is_removed_by_the_next_export(tmp_path):
    import socket
    import subprocess
    import sys

    class Failing:
        def write_out(self, path, verbose=False):
            raise OSError("disk full")

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = socket.gethostname()
    folders = {
        "killed": f".staging-{int(gone.stdout)}@{host}-abc12_yz",  # its process has exited: removed
        "running": f".staging-{alive.pid}@{host}-abc12_yz",  # its process runs: maybe still writing
        "elsewhere": f".staging-{int(gone.stdout)}@not-{host}-abc12_yz",  # another host's (shared storage)
        "older": ".staging-abc12_yz",  # written before staging folders named their process
    }
    try:
        for name in folders.values():
            (tmp_path / "m" / name).mkdir(parents=True)
            (tmp_path / "m" / name / "saved_model.pb").write_bytes(b"partial")
        with pytest.raises(OSError, match="disk full"):
            write_saved_model_version(Failing(), tmp_path, "m", {"task": "x"})
    finally:
        alive.kill()
        alive.wait()
    assert sorted(os.listdir(tmp_path / "m")) == sorted(folders[k] for k in ("running", "elsewhere", "older"))


def test_an_xla_compiled_endpoint_is_refused(tmp_path):
    archive = keras.export.ExportArchive()
    archive.add_endpoint(
        "serving_default", tf.function(lambda x: {"y": x * 2.0}, jit_compile=True),
        input_signature=[tf.TensorSpec((None,), tf.float32, name="x")])
    with pytest.raises(ValueError, match="XLA-compiled"):
        write_saved_model_version(archive, tmp_path, "m", {})
    assert os.listdir(tmp_path / "m") == []


def test_a_device_pinned_endpoint_is_refused(tmp_path):
    def pinned(x):
        with tf.device("/CPU:0"):
            return {"y": tf.math.tanh(x)}

    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", pinned,
                         input_signature=[tf.TensorSpec((None,), tf.float32, name="x")])
    with pytest.raises(ValueError, match="pins nodes to devices .*Tanh"):
        write_saved_model_version(archive, tmp_path, "m", {})


def test_argument_errors(model, vocabulary, tmp_path):
    with pytest.raises(ValueError, match="vocabulary has"):
        export_language_model(model, Vocabulary.from_text("ab"), tmp_path, trained_on="t", metrics={})
    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(vocabulary.size, 4)(ids)
    x = keras.layers.Conv1D(4, 3, padding="causal", name="conv")(x)
    conv_model = keras.Model(ids, keras.layers.Dense(vocabulary.size)(x))
    with pytest.raises(ValueError, match="`conv` .*no one-step form"):
        export_language_model(conv_model, vocabulary, tmp_path, trained_on="t", metrics={})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        export_language_model(model, vocabulary, tmp_path, trained_on=object(), metrics={})
    with pytest.raises(ValueError, match="model_name"):
        export_language_model(model, vocabulary, tmp_path, trained_on="t", metrics={}, model_name="a/b")


def _fresh_process_script(export_path):
    return textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        loaded = tf.saved_model.load({export_path!r})
        gen = loaded.signatures["serving_default"](
            prompt=tf.constant({PROMPTS!r}), max_new_chars=tf.constant(25),
            temperature=tf.constant(0.0))
        score = loaded.signatures["score"](text=tf.constant(["to be or not"]))
        project = sorted(m for m in sys.modules if m.split(".")[0] in {PROJECT_PACKAGES!r})
        print(json.dumps({{"text": [t.decode() for t in gen["text"].numpy()],
                          "nll": score["nll"].numpy().tolist(), "project": project}}))
    """)


@pytest.fixture(scope="module")
def processes(export_path, tmp_path_factory):
    """A fresh Python loading the export, `saved_model_cli show --all` and
    `saved_model_cli run`, side by side (each mostly imports TensorFlow)."""
    workdir = tmp_path_factory.mktemp("fresh")
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    commands = {
        "fresh": [sys.executable, "-c", _fresh_process_script(export_path)],
        "show": [cli, "show", "--dir", export_path, "--all"],
        "run": [cli, "run", "--dir", export_path, "--tag_set", "serve", "--signature_def",
                "score", "--input_exprs", 'text=["to be or not", "w"]'],
    }
    results = run_side_by_side(commands, workdir)
    return results


def test_fresh_process_without_project_code(processes, model, vocabulary):
    result = processes["fresh"]
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["project"] == []
    assert out["text"] == generate_text(model, vocabulary, PROMPTS, length=25, temperature=0.0)
    np.testing.assert_allclose(out["nll"], [_keras_nll(model, vocabulary, "to be or not")], rtol=1e-4)


def test_saved_model_cli_show_lists_the_signatures(processes):
    show = processes["show"]
    assert show.returncode == 0, show.stderr[-3000:]
    for expected in ("signature_def['serving_default']", "signature_def['score']",
                     "signature_def['generate_seeded']", "inputs['seed']",
                     "inputs['prompt']", "inputs['max_new_chars']", "inputs['temperature']",
                     "outputs['text']", "outputs['nll']", "outputs['char_count']"):
        assert expected in show.stdout


def test_saved_model_cli_run_scores(processes, model, vocabulary):
    run = processes["run"]
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    counts = lines[lines.index("Result for output key char_count:") + 1]
    assert counts.strip() == "[11  0]"
    nll = float(lines[lines.index("Result for output key nll:") + 1].strip("[] ").split()[0])
    assert nll == pytest.approx(_keras_nll(model, vocabulary, "to be or not"), rel=1e-4)

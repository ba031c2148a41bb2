"""Tests for the language model: builder, fitting, generation, saving, config, train.py."""

import dataclasses
import json
import math
import os

import keras
import numpy as np
import pytest

import train
from layers import ElmanRNN
from models.language_model import build_language_model
from models.language_model_io import load_language_model, save_language_model
from models.text_generation import build_step_model, generate_text
from pipelines.text_dataset import text_window_dataset
from pipelines.vocabulary import Vocabulary
from training.language_model import Config, compile_model, run


def _tiny_model(vocabulary_size=10, **kwargs):
    kwargs = {"embedding_dim": 4, "hidden_size": 8, "num_layers": 2, "seed": 1, **kwargs}
    return build_language_model(vocabulary_size=vocabulary_size, **kwargs)


def test_build_shapes_names_and_parameter_count():
    model = _tiny_model()
    assert [layer.name for layer in model.layers] == [
        "ids", "embedding", "embedding_dropout", "rnn_1", "rnn_1_dropout",
        "rnn_2", "rnn_2_dropout", "logits",
    ]
    assert model.inputs[0].dtype == "int32" and tuple(model.inputs[0].shape) == (None, None)
    assert all(isinstance(model.get_layer(f"rnn_{i}"), ElmanRNN) for i in (1, 2))
    # embedding 10*4, rnn_1 4*8+8*8+8, rnn_2 8*8+8*8+8, logits 8*10+10
    assert model.count_params() == 40 + 104 + 136 + 90
    logits = model(np.zeros((3, 7), "int32"))
    assert tuple(logits.shape) == (3, 7, 10)
    deep = _tiny_model(num_layers=1, output_hidden_size=6)
    # embedding 40, rnn_1 104, output_hidden 8*6+6, logits 6*10+10
    assert deep.count_params() == 40 + 104 + 54 + 70


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"vocabulary_size": 0}, "argument `vocabulary_size`, expected a positive integer, got 0"),
        ({"vocabulary_size": 5, "hidden_size": 2.5}, "argument `hidden_size`, expected a positive integer, got 2.5"),
        ({"vocabulary_size": 5, "num_layers": 0}, "argument `num_layers`, expected a positive integer, got 0"),
        ({"vocabulary_size": 5, "dropout": 1.0}, "argument `dropout`, expected a float in [0, 1), got 1.0"),
        ({"vocabulary_size": 5, "output_hidden_size": -1}, "argument `output_hidden_size`, expected a non-negative integer, got -1"),
        ({"vocabulary_size": 5, "dtype_policy": "bfloat16"},
         "`dtype_policy`, expected one of ('float32', 'mixed_bfloat16', 'mixed_float16'), got 'bfloat16'"),
    ],
)
def test_build_errors(kwargs, message):
    with pytest.raises(ValueError) as error:
        build_language_model(**kwargs)
    assert message in str(error.value)


def _fit_memorisable(text, *, epochs, sequence_length=16, **kwargs):
    vocab = Vocabulary.from_text(text)
    model = build_language_model(
        vocabulary_size=vocab.size, embedding_dim=8, hidden_size=32, num_layers=1, seed=0, **kwargs
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    data = text_window_dataset(
        vocab.encode(text), sequence_length=sequence_length, batch_size=16, shuffle=True, seed=0
    )
    history = model.fit(data, epochs=epochs, verbose=0, shuffle=False)
    return model, vocab, history.history["loss"]


def test_fit_memorises_a_pattern_that_needs_the_state():
    # After "a" the next character is "a" or "b" depending on the one before:
    # only the recurrent state can tell, so near-zero loss shows it is used.
    text = "aab" * 400
    model, vocab, losses = _fit_memorisable(text, epochs=12)
    assert losses[0] > 0.5
    # Only a window's first step is ambiguous (no context): >= ln(2)/16 ~ 0.043.
    assert losses[-1] < 0.12
    assert generate_text(model, vocab, "aab", length=12, temperature=0) == "aab" * 4
    assert generate_text(model, vocab, "ab", length=7, temperature=0) == "aabaaba"


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    text = "To be, or not to be, that is the question:\n" * 40
    # A deep output layer, so generation is checked through Dense layers too.
    model, vocab, _ = _fit_memorisable(text, epochs=3, output_hidden_size=16, dropout=0.1)
    assert [layer.name for layer in model.layers][-3:] == ["output_hidden", "output_hidden_dropout", "logits"]
    return model, vocab


def _reread_greedy(model, vocab, prompt, generated):
    """The characters the full model picks when it re-reads all the text so far.

    One teacher-forced pass over `prompt + generated` gives, at every
    position, the logits the model has after re-reading everything before it.
    """
    ids = np.array([vocab.encode(prompt + generated)], "int32")
    logits = keras.ops.convert_to_numpy(model(ids))[0, len(prompt) - 1 : -1]
    logits[:, : vocab.num_reserved] = -np.inf
    return vocab.decode(logits.argmax(axis=-1))


def test_state_carrying_generation_equals_rereading_the_prompt(trained):
    model, vocab = trained
    for prompt in ("T", "To be, or", "question:\n"):
        generated = generate_text(model, vocab, prompt, length=40, temperature=0)
        assert len(generated) == 40
        assert generated == _reread_greedy(model, vocab, prompt, generated)
    # The step model's logits are the full model's last-step logits, with padding masked.
    step = build_step_model(model)
    prompts = ["To be, or", "not"]
    ids = np.zeros((2, 9), "int32")
    ids[0] = vocab.encode(prompts[0])
    ids[1, :3] = vocab.encode(prompts[1])
    zeros = [np.zeros((2, 32), "float32")]
    logits, state = step([ids, *zeros])
    for row, prompt in enumerate(prompts):
        full = model(np.array([vocab.encode(prompt)], "int32"))[0, -1]
        np.testing.assert_allclose(logits[row], full, atol=1e-5)
    # Carrying the state: two halves equal the whole.
    tensor = keras.ops.convert_to_tensor
    first, state = step([tensor(ids[:1, :4]), *[tensor(z[:1]) for z in zeros]])
    second, _ = step([tensor(ids[:1, 4:]), state])
    np.testing.assert_allclose(second, logits[:1], atol=1e-5)


def test_generation_is_deterministic_and_batched(trained):
    model, vocab = trained
    greedy = generate_text(model, vocab, "To", length=30, temperature=0)
    assert greedy == generate_text(model, vocab, "To", length=30, temperature=0)
    sample = generate_text(model, vocab, "To", length=30, temperature=1.0, seed=5)
    assert sample == generate_text(model, vocab, "To", length=30, temperature=1.0, seed=5)
    assert len(sample) == 30 and not set(sample) - set(vocab.characters)
    hot = [generate_text(model, vocab, "To", length=30, temperature=5.0, seed=s) for s in range(3)]
    assert len(set(hot)) == 3  # a high temperature really samples
    # A batch of prompts of different lengths gives what each prompt gives alone.
    prompts = ["T", "To be, or not", "question"]
    batch = generate_text(model, vocab, prompts, length=20, temperature=0)
    assert batch == [generate_text(model, vocab, p, length=20, temperature=0) for p in prompts]
    assert generate_text(model, vocab, ["To"], length=0) == [""]


def test_generation_errors(trained):
    model, vocab = trained
    with pytest.raises(ValueError, match="characters \\['Z'\\] that are not in the vocabulary"):
        generate_text(model, vocab, "Zo", length=3)
    with pytest.raises(ValueError, match="argument `prompt`, expected one or more non-empty strings, got \\[''\\]"):
        generate_text(model, vocab, "", length=3)
    with pytest.raises(ValueError, match="argument `temperature`, expected a finite float >= 0 \\(0 means greedy\\), got -1"):
        generate_text(model, vocab, "To", length=3, temperature=-1)
    with pytest.raises(ValueError, match="argument `length`, expected a non-negative integer, got -2"):
        generate_text(model, vocab, "To", length=-2)
    with pytest.raises(TypeError, match="argument `vocabulary`, expected a Vocabulary, got dict"):
        generate_text(model, {}, "To", length=3)


def test_save_and_load_carry_the_vocabulary(trained, tmp_path):
    model, vocab = trained
    path = str(tmp_path / "run" / "model.keras")
    save_language_model(model, vocab, path)
    assert Vocabulary.load(str(tmp_path / "run" / "vocabulary.json")) == vocab
    loaded, loaded_vocab = load_language_model(path)
    assert loaded_vocab == vocab
    expected = generate_text(model, vocab, "To be", length=20, temperature=0.7, seed=2)
    assert generate_text(loaded, loaded_vocab, "To be", length=20, temperature=0.7, seed=2) == expected
    Vocabulary(["x", "y"]).save(str(tmp_path / "run" / "vocabulary.json"))
    with pytest.raises(ValueError, match=f"has 4 ids but the model .* embeds {vocab.size}; expected the vocabulary saved with this model"):
        load_language_model(path)
    with pytest.raises(FileNotFoundError, match="Model file .*missing.keras' does not exist"):
        load_language_model(str(tmp_path / "missing.keras"))
    with pytest.raises(ValueError, match="expected a file name ending in '.keras', got 'model.h5'"):
        save_language_model(model, vocab, "model.h5")


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("hidden_size", 0, "expected a positive integer, got 0"),
        ("sequence_length", -5, "expected a positive integer, got -5"),
        ("dropout", 1.0, "expected a float in [0, 1), got 1.0"),
        ("learning_rate", 0.0, "expected a positive float, got 0.0"),
        ("max_train_minutes", 0, "expected a positive number of minutes or None, got 0"),
        ("temperature", -0.5, "expected a float >= 0, got -0.5"),
        ("activation", "softmax", "expected 'tanh' or 'relu', got 'softmax'"),
        ("validation_fraction", 0.0, "expected a float in (0, 1), got 0.0"),
        ("output_hidden_size", -3, "expected a non-negative integer, got -3"),
        ("lr_schedule", "linear", "expected 'cosine', 'plateau' or 'constant', got 'linear'"),
        ("dtype_policy", "float16",
         "expected one of ('float32', 'mixed_bfloat16', 'mixed_float16'), got 'float16'"),
    ],
)
def test_config_errors_name_the_field(field, value, expected):
    with pytest.raises(ValueError) as error:
        Config(**{field: value})
    assert str(error.value) == (
        f"Received an invalid value for config field `{field}` "
        f"(--{field.replace('_', '-')}), {expected}."
    )


def test_config_fields_all_have_help_and_flags():
    for field in dataclasses.fields(Config):
        assert field.metadata.get("help"), field.name
    with pytest.raises(SystemExit) as error:
        train.parse_args(["--task", "language_model", "--hiden-size", "3"])
    assert error.value.code == 2
    module, config = train.parse_args(
        ["--task", "language_model", "--hidden-size", "7", "--max-train-minutes", "none"]
    )
    assert module.Config is Config
    assert (config.hidden_size, config.max_train_minutes, config.dataset) == (7, None, "tinyshakespeare")


def _parse_error(capsys, argv):
    """The message of the `prog: error: ...` line train.py's parser exits with."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as error:
        train.parse_command(["--task", "language_model", *argv])
    assert error.value.code == 2
    return capsys.readouterr().err.splitlines()[-1].split(": error: ", 1)[1]


def test_flag_values_that_would_be_misread_are_refused_or_read_as_meant(capsys, monkeypatch, tmp_path):
    # A value after an on/off flag names the flag (it was "unrecognized arguments: false").
    assert _parse_error(capsys, ["--overwrite", "false"]) == (
        "argument --overwrite/--no-overwrite: takes no value, got 'false': give --overwrite for true or "
        "--no-overwrite for false"
    )
    assert _parse_error(capsys, ["--hiden-size", "3"]) == "unrecognized arguments: --hiden-size 3"
    # An empty value (an unset shell variable) is not "none": it lifted the time budget.
    assert _parse_error(capsys, ["--max-train-minutes", ""]) == (
        "argument --max-train-minutes: expected a value or 'none', got an empty string"
    )
    assert train.parse_args(["--task", "language_model", "--max-train-minutes", "None"])[1].max_train_minutes is None
    # `--output-dir=~/x` reaches the program unexpanded: the run wrote into a folder named `~`.
    monkeypatch.setenv("HOME", str(tmp_path))
    assert train.parse_args(["--task", "language_model", "--output-dir=~/runs/x"])[1].output_dir == str(
        tmp_path / "runs" / "x"
    )


def test_an_output_dir_that_cannot_be_written_is_refused_before_the_data_is_read(tmp_path, capsys, monkeypatch):
    # The dataset does not exist: the error is the directory's, so it came before the data was looked at
    # (with the flags, before TensorFlow is imported).
    missing = str(tmp_path / "missing.txt")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a directory")
    argv = ["--task", "language_model", "--dataset", missing, "--output-dir"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        train.main([*argv, str(a_file / "runs" / "x")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"error: --output-dir {a_file / 'runs' / 'x'}: {a_file} is a file, not a directory; expected a "
        "directory for the run's files. Nothing was written: give another --output-dir.\n"
    )
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(locked) and real_access(path, mode))
    with pytest.raises(SystemExit) as stop:
        train.main([*argv, str(locked / "run")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"error: --output-dir {locked / 'run'}: directory {locked} is not writable; expected a directory "
        "for the run's files. Nothing was written: give another --output-dir.\n"
    )
    # The run checks it too (a config made in code reaches it without train.py's flags).
    with pytest.raises(ValueError, match=f"--output-dir {locked / 'run'}: directory {locked} is not writable"):
        run(Config(dataset=missing, output_dir=str(locked / "run")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked", "notes.txt"]
    assert not any(locked.iterdir())


TINY_TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 30  # 1860 chars


def _tiny_corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return str(path)


def test_train_py_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    dataset = _tiny_corpus(tmp_path)
    argv = [
        "--task", "language_model", "--dataset", dataset, "--epochs", "1",
        "--hidden-size", "16", "--embedding-dim", "8", "--num-layers", "1",
        "--sequence-length", "20", "--batch-size", "8", "--output-dir", str(out),
        "--sample-length", "30", "--sample-prompt", "First", "--verbose", "0",
    ]
    capsys.readouterr()
    assert train.main(argv) == 0
    # It ends with the commands that use what it wrote; the printed generate.py command works.
    output = capsys.readouterr().out
    assert "bits/char" in output and json.loads((out / "metrics.json").read_text())["sample"] in output
    printed = output.splitlines()
    version_base = out / "export" / "language_model"
    assert printed[-3:] == [
        "Next:",
        f"  python generate.py --model-dir {out} --prompt TEXT",
        f"  python -m serving --model_name=language_model --model_base_path={version_base} --rest_api_port=8501"
        "    # TF Serving's REST API",
    ]
    import generate

    assert generate.main(["--model-dir", str(out), "--prompt", "First", "--length", "7", "--temperature", "0"]) == 0
    assert len(capsys.readouterr().out) == len("First") + 7 + 1
    config = json.loads((out / "config.json").read_text())
    assert config == dataclasses.asdict(train.parse_args(argv)[1])
    assert (config["hidden_size"], config["dataset"], config["epochs"]) == (16, dataset, 1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["best_epoch"] == 1
    assert metrics["val_bpc"] == pytest.approx(metrics["val_loss_nats"] / math.log(2))
    assert metrics["val_loss_nats"] == pytest.approx(metrics["history"]["val_loss"][0], rel=1e-4)
    assert metrics["val_bpc_long_context"] == pytest.approx(metrics["val_loss_nats_long_context"] / math.log(2))
    assert 0 < metrics["val_loss_nats_long_context"] < math.log(metrics["vocabulary_size"]) + 0.5
    assert 0 < metrics["val_loss_nats"] < math.log(metrics["vocabulary_size"]) + 0.5
    assert metrics["train_seconds"] > 0
    assert (metrics["characters"], metrics["train_characters"]) == (1860, 1674)
    assert metrics["dataset"] == dataset
    assert metrics["sample"].startswith("First") and len(metrics["sample"]) == 35
    assert sorted(os.listdir(out)) == [
        "best.keras", "config.json", "export", "history.csv", "metrics.json", "model.keras", "vocabulary.json"
    ]
    # The SavedModel for TF Serving: version 1 of `language_model`, its metadata from this run.
    version = out / "export" / "language_model" / "1"
    assert metrics["export_dir"] == str(version)
    assert (version / "saved_model.pb").is_file()
    metadata = json.loads((version / "assets" / "metadata.json").read_text())
    assert metadata["task"] == "language_model"
    assert metadata["metrics"]["val_bpc"] == pytest.approx(metrics["val_bpc"])
    assert metadata["trained_on"]["location"] == metrics["dataset_location"]
    model, vocab = load_language_model(str(out / "model.keras"))
    assert vocab == Vocabulary.from_text((tmp_path / "tiny.txt").read_text())
    assert model.count_params() == metrics["parameters"]


class _KillAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.logs = dict(logs)
        raise KeyboardInterrupt("simulated kill")


class _Spoil(keras.callbacks.Callback):
    """Records the epochs run and spoils the weights at each one's start (a worse epoch)."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)
        rng = np.random.default_rng(epoch)
        self.model.set_weights([w + rng.normal(0, 3, w.shape).astype(w.dtype) for w in self.model.get_weights()])


def test_a_killed_run_resumes_and_keeps_its_best_checkpoint(tmp_path):
    out = tmp_path / "run"
    config = Config(dataset=_tiny_corpus(tmp_path), hidden_size=16, embedding_dim=8, sequence_length=20,
                    batch_size=8, epochs=2, sample_length=5, sample_prompt="First", verbose=0, output_dir=str(out))
    killed = _KillAfterFirstEpoch()
    with pytest.raises(KeyboardInterrupt):
        run(config, callbacks=[killed])
    assert (out / "backup" / "training_metadata.json").is_file() and (out / "best.keras").is_file()
    # Resumed with one more epoch: epochs 2 and 3 run, each worse than the first (spoilt weights),
    # so the first epoch's checkpoint stays the best (a fresh checkpoint callback would take epoch 2).
    spoil = _Spoil()
    metrics = run(dataclasses.replace(config, epochs=3), callbacks=[spoil])
    assert spoil.epochs == [1, 2]
    history = metrics["history"]["val_loss"]
    assert metrics["epochs"] == 3 and len(history) == 3
    assert history[0] == pytest.approx(killed.logs["val_loss"], rel=1e-6)
    assert min(history[1:]) > history[0]
    assert metrics["best_epoch"] == 1
    assert metrics["val_loss_nats"] == pytest.approx(history[0], rel=1e-4)
    assert not (out / "backup").exists()


def test_a_killed_run_whose_text_changed_is_not_resumed(tmp_path):
    import hashlib

    corpus = _tiny_corpus(tmp_path)
    out = tmp_path / "run"
    config = Config(dataset=corpus, hidden_size=16, embedding_dim=8, sequence_length=20, batch_size=8, epochs=2,
                    sample_length=5, sample_prompt="First", verbose=0, output_dir=str(out))
    with pytest.raises(KeyboardInterrupt):
        run(config, callbacks=[_KillAfterFirstEpoch()])
    kept = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # The same length, other characters (a regenerated file): another vocabulary and split under the backup's weights.
    changed = TINY_TEXT.replace("e", "E")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(changed)
    with pytest.raises(ValueError) as error:
        run(config)
    then, now = (hashlib.sha256(text.encode()).hexdigest()[:12] for text in (TINY_TEXT, changed))
    assert str(error.value) == (
        f"Text {corpus} has changed since the killed run in {out} was backed up (1860 characters then, 1860 now, "
        f"sha256 {then}... then, {now}... now): resuming would go on with a model of another vocabulary and 90/10 "
        f"split. Nothing was written: restore that text to resume, or remove {out / 'backup'} to train on this one "
        "from the start."
    )
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == kept


def test_a_run_killed_after_training_resumes_with_its_trained_weights(tmp_path, monkeypatch, capsys):
    # Killed in the final evaluation (or the sample, or the export): the same command evaluates and saves
    # what the run had trained, instead of training it again from scratch.
    import training.language_model

    corpus = _tiny_corpus(tmp_path)
    out = tmp_path / "run"
    config = Config(dataset=corpus, hidden_size=16, embedding_dim=8, sequence_length=20, batch_size=8, epochs=2,
                    sample_length=5, sample_prompt="First", verbose=0, output_dir=str(out))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill in the final evaluation")

    with monkeypatch.context() as patch:
        patch.setattr(training.language_model, "long_context_loss", killed)
        with pytest.raises(KeyboardInterrupt):
            run(config)
    trained = json.loads((out / "backup" / "trained.json").read_text())
    assert trained["epochs"] == 2 and trained["train_seconds"] > 0 and trained["stopped_by_time_budget"] is False
    assert not (out / "metrics.json").exists()
    best = keras.saving.load_model(out / "best.keras")
    # The trained weights are kept with the text they were trained on: another text is refused.
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(TINY_TEXT.replace("e", "E"))
    with pytest.raises(ValueError, match="has changed since the killed run"):
        run(config)
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(TINY_TEXT)

    capsys.readouterr()
    spoil = _Spoil()  # records the epochs trained
    metrics = run(config, callbacks=[spoil])
    assert spoil.epochs == []  # nothing trained again
    assert (f"The interrupted run backed up in {out / 'backup'} had finished training (2 epochs): "
            "evaluating and saving it") in capsys.readouterr().out
    assert metrics["epochs"] == 2 and metrics["train_seconds"] == trained["train_seconds"]
    saved, _ = load_language_model(str(out / "model.keras"))
    for restored, checkpointed in zip(saved.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(restored, checkpointed)
    assert metrics["val_loss_nats"] == pytest.approx(min(metrics["history"]["val_loss"]), rel=1e-4)
    assert not (out / "backup").exists()
    assert os.listdir(out / "export" / "language_model") == ["1"]


def test_a_run_killed_after_its_export_keeps_that_version(tmp_path, monkeypatch, capsys):
    # Killed in the sample, after the export: the same command does not export the same weights
    # again as the next version (a server would load it as new); another command does.
    import training.language_model

    out = tmp_path / "run"
    config = Config(dataset=_tiny_corpus(tmp_path), hidden_size=16, embedding_dim=8, sequence_length=20,
                    batch_size=8, epochs=1, sample_length=5, sample_prompt="First", verbose=0, output_dir=str(out))
    other = dataclasses.replace(config, sample_length=6)  # a decoding flag: the trained weights are reused

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill in the sample")

    def versions():
        return sorted(os.listdir(out / "export" / "language_model"))

    for command, expected in ((config, ["1"]), (other, ["1", "2"])):
        with monkeypatch.context() as patch:
            patch.setattr(training.language_model, "generate_text", killed)
            with pytest.raises(KeyboardInterrupt):
                run(command)
        assert versions() == expected and "had exported these weights" not in capsys.readouterr().out
    metrics = run(other)
    assert versions() == ["1", "2"] and metrics["export_dir"] == str(out / "export" / "language_model" / "2")
    assert f"had exported these weights to {metrics['export_dir']}: kept" in capsys.readouterr().out
    assert not (out / "backup").exists()


def _record_batches(monkeypatch, module):
    """`(labels, steps)`: filled with the bytes of the labels of every training batch that
    `module.run` feeds `fit`, in order, and the batches of an epoch."""
    import tensorflow as tf

    labels_seen, steps = [], []
    real = module.repeat_epochs

    def record(labels):
        labels_seen.append(labels.numpy().tobytes())
        return labels

    def recording(dataset):
        repeated, steps_per_epoch = real(dataset)
        steps.append(steps_per_epoch)
        return repeated.map(lambda x, y: (x, tf.ensure_shape(tf.py_function(record, [y], y.dtype), y.shape))), \
            steps_per_epoch

    monkeypatch.setattr(module, "repeat_epochs", recording)
    return labels_seen, steps


def test_a_resumed_run_does_not_replay_the_first_epochs_order(tmp_path, monkeypatch):
    import training.language_model

    seen, steps = _record_batches(monkeypatch, training.language_model)
    config = Config(dataset=_tiny_corpus(tmp_path), hidden_size=16, embedding_dim=8, sequence_length=20,
                    batch_size=8, epochs=2, sample_length=5, sample_prompt="First", verbose=0,
                    output_dir=str(tmp_path / "run"))
    with pytest.raises(KeyboardInterrupt):
        run(config, callbacks=[_KillAfterFirstEpoch()])
    first = seen[:steps[0]]
    # A run from the start deals the windows as it always did: shuffled with --seed itself.
    data = training.language_model.prepare_data(config)
    keras.utils.set_random_seed(config.seed)  # as the run does
    before = text_window_dataset(data.vocabulary.encode(data.train_text), sequence_length=20, batch_size=8,
                                 shuffle=True, seed=config.seed, drop_remainder=True)
    assert [y.numpy().tobytes() for _, y in before] == first
    # The resumed run's epoch 2 deals the windows in another order, not epoch 1's again.
    del seen[:]
    run(config)
    resumed = seen[:steps[1]]
    assert len(resumed) == len(first) and resumed != first


def test_run_rejects_bad_input_before_training(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("x" * 100, encoding="utf-8")
    with pytest.raises(ValueError, match=f"Text of '{short}' is too short: 100 characters"):
        run(Config(dataset=str(short), sequence_length=20, output_dir=str(tmp_path / "a")))
    with pytest.raises(ValueError, match=f"sequence_length=100 is longer than the text of '{short}'"):
        run(Config(dataset=str(short), output_dir=str(tmp_path / "b")))
    with pytest.raises(ValueError, match="config field `sample_prompt` .*got 'Q!' with \\['!', 'Q'\\]"):
        run(Config(dataset=_tiny_corpus(tmp_path), sample_prompt="Q!", output_dir=str(tmp_path / "c")))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(Config(dataset=str(tmp_path / "missing.txt"), output_dir=str(tmp_path / "d")))
    # Nothing is written before the data and options are checked.
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_a_run_leaves_an_earlier_run_in_its_directory_intact_unless_it_starts(tmp_path):
    """A run with other settings is refused; a failing run with the same settings writes nothing."""
    corpus = _tiny_corpus(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    earlier = Config(dataset=corpus, hidden_size=24, sample_prompt="Q!", output_dir=str(out))
    files = {"config.json": json.dumps(dataclasses.asdict(earlier)), "vocabulary.json": "the earlier run's",
             "model.keras": "the earlier run's"}
    for name, text in files.items():
        (out / name).write_text(text)
    with pytest.raises(ValueError) as error:
        run(dataclasses.replace(earlier, hidden_size=16))
    assert str(out / "config.json") in str(error.value)
    assert "'hidden_size': (24, 16)" in str(error.value) and "Its files are left as they are" in str(error.value)
    # The same settings (a bad sample prompt): the prompt fails before anything is replaced.
    with pytest.raises(ValueError, match="config field `sample_prompt`"):
        run(dataclasses.replace(earlier, sample_length=50))  # a sampling option may differ
    assert {p.name: p.read_text() for p in out.iterdir()} == files
    # A finished run (its metrics.json) with the same settings: refused without --overwrite, naming it.
    files["metrics.json"] = '{"epochs": 3, "val_bpc": 2.25}'
    (out / "metrics.json").write_text(files["metrics.json"])
    with pytest.raises(ValueError) as finished:
        run(earlier)
    assert str(finished.value) == (
        f"{out} holds a finished run with these settings ({out / 'metrics.json'}: 3 epochs, val_bpc 2.25); training "
        "it again would replace its model and files. Nothing was written: give --overwrite to train it again, or "
        "another --output-dir."
    )
    # With --overwrite, or with the backup/ of a killed rerun beside it, the run gets past that check (to the prompt).
    with pytest.raises(ValueError, match="config field `sample_prompt`"):
        run(dataclasses.replace(earlier, overwrite=True))
    (out / "backup").mkdir()  # a killed rerun's backup: the same command resumes it, --overwrite or not
    with pytest.raises(ValueError, match="config field `sample_prompt`"):
        run(earlier)
    (out / "backup").rmdir()
    assert {p.name: p.read_text() for p in out.iterdir()} == files
    (out / "config.json").write_text('{"foo": 1}')  # some other program's file: not read as a run's
    with pytest.raises(ValueError, match=r"config.json holds none of a run's settings \(keys \['foo'\]\): expected "
                                         r"the config.json of an earlier run"):
        run(earlier)
    (out / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json cannot be read as JSON .*expected the config.json of an earlier run"):
        run(earlier)
    with pytest.raises(ValueError, match=f"--output-dir {out / 'model.keras'} is a file: expected a directory"):
        run(dataclasses.replace(earlier, output_dir=str(out / "model.keras")))
    # A folder named backup/ that no run made: a run would delete it when it ends.
    other = tmp_path / "other"
    (other / "backup").mkdir(parents=True)
    (other / "backup" / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match=rf"--output-dir {other} holds backup/ but no config.json, so it is not a run "
                                         rf"of this project, and a run deletes its backup/ when it ends\. Nothing "
                                         rf"was written"):
        run(dataclasses.replace(earlier, output_dir=str(other)))
    assert sorted(p.relative_to(other).as_posix() for p in other.rglob("*")) == ["backup", "backup/notes.txt"]
    # A model.keras (or another file a run writes) without a run's config.json: someone else's, kept.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.keras").write_text("another project's model")
    with pytest.raises(ValueError) as not_ours:
        run(dataclasses.replace(earlier, output_dir=str(foreign)))
    assert str(not_ours.value) == (
        f"--output-dir {foreign} holds model.keras but no config.json, so it is not a run of this project, and a run "
        f"would replace its model.keras. Nothing was written: give another --output-dir, or move "
        f"{foreign / 'model.keras'} away."
    )
    assert [(p.name, p.read_text()) for p in foreign.iterdir()] == [("model.keras", "another project's model")]
    # A hyperparameter search's directory (train.py --tune): a run would export beside its best model.
    search = tmp_path / "search"
    (search / "tuning").mkdir(parents=True)
    with pytest.raises(ValueError) as searched:
        run(dataclasses.replace(earlier, output_dir=str(search)))
    assert str(searched.value) == (
        f"--output-dir {search} holds a hyperparameter search ({search / 'tuning'}), whose best model is exported "
        f"to {search / 'export'}; a run there would add its export beside it, and a server of that directory would "
        "serve the newer. Nothing was written: give another --output-dir."
    )
    assert [p.name for p in search.iterdir()] == ["tuning"]


def test_train_py_reports_bad_data_as_one_line_naming_the_file(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    argv = ["--task", "language_model", "--dataset", str(empty), "--output-dir", str(tmp_path / "run")]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"train.py: error: Text file {str(empty)!r} is empty (0 bytes); expected UTF-8 text.\n"
    # A file that is not there, or a folder, is refused with the flags, before the run starts.
    for path, problem in ((tmp_path / "missing.txt", "does not exist"), (tmp_path, "is a directory")):
        with pytest.raises(SystemExit) as stop:
            train.main(["--task", "language_model", "--dataset", str(path), "--output-dir", str(tmp_path / "run")])
        assert stop.value.code == 2
        assert f"error: Text file {str(path)!r} {problem}; expected a path to a UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_py_interrupted_or_terminated_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import signal
    import time

    import training.language_model

    def terminated(config):
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a scheduler sends it
        time.sleep(10)
        raise AssertionError("SIGTERM did not stop the run")

    before = signal.getsignal(signal.SIGTERM)
    argv = ["--task", "language_model", "--dataset", _tiny_corpus(tmp_path), "--output-dir", str(tmp_path / "run")]
    for stopped_run in (terminated, lambda config: (_ for _ in ()).throw(KeyboardInterrupt())):
        monkeypatch.setattr(training.language_model, "run", stopped_run)
        assert train.main(argv) == 130
        err = capsys.readouterr().err
        assert err == (f"train.py: interrupted. What {tmp_path / 'run'} holds is kept: run the same command again "
                       "to start again: no epoch had finished.\n")
        assert signal.getsignal(signal.SIGTERM) is before  # the handler is train.py's only while it runs
    # With a backup of a finished epoch (or the trained weights kept after training), what a rerun does.
    (tmp_path / "run" / "backup").mkdir(parents=True)
    for name, resume in (("trained.json", "evaluate and save the weights it trained."),
                         ("training_metadata.json", "resume from the last finished epoch (or trial).")):
        (tmp_path / "run" / "backup" / name).write_text("{}")
        assert train.main(argv) == 130
        assert capsys.readouterr().err == (
            f"train.py: interrupted. What {tmp_path / 'run'} holds is kept: run the same command again to {resume}\n")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_precision_run_trains_saves_generates_and_exports(tmp_path, capsys, policy):
    """`--dtype-policy mixed_*`: 16-bit compute on the fused path, float32
    weights and logits; the saved model and the export keep the policy, and
    both generate the same greedy text."""
    out = tmp_path / "run"
    argv = [
        "--task", "language_model", "--dataset", _tiny_corpus(tmp_path), "--epochs", "2",
        "--hidden-size", "16", "--embedding-dim", "8", "--sequence-length", "20",
        "--batch-size", "8", "--output-dir", str(out), "--sample-length", "10",
        "--verbose", "0", "--dtype-policy", policy, "--learning-rate", "0.01",
    ]
    assert train.main(argv) == 0
    assert json.loads((out / "config.json").read_text())["dtype_policy"] == policy
    metrics = json.loads((out / "metrics.json").read_text())
    losses = metrics["history"]["loss"]
    assert all(math.isfinite(v) for v in losses) and losses[1] < losses[0]
    assert 0 < metrics["val_loss_nats"] < math.log(metrics["vocabulary_size"])

    model, vocab = load_language_model(str(out / "model.keras"))
    assert model.get_layer("rnn_1").dtype_policy.name == policy
    assert model.get_layer("rnn_1").fused_reason is None
    assert model.get_layer("logits").dtype_policy.name == "float32"
    assert all(w.dtype == "float32" for w in model.weights)
    logits = model(np.array([vocab.encode("First Cit")], "int32"))
    assert logits.dtype == "float32"

    import generate

    capsys.readouterr()
    texts = []
    for source in (out, out / "export" / "language_model" / "1"):
        assert generate.main(["--model-dir", str(source), "--prompt", "First", "--length", "12",
                              "--temperature", "0"]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and len(texts[0]) == len("First") + 12 + 1


def test_a_float16_model_trains_with_loss_scaling():
    """Keras scales the loss of a mixed_float16 model (float16 gradients
    underflow); the other policies keep the plain optimizer."""
    for policy, expected in (("mixed_float16", "LossScaleOptimizer"), ("mixed_bfloat16", "Adam"), ("float32", "Adam")):
        _, config = train.parse_args(["--task", "language_model", "--dtype-policy", policy])
        model = build_language_model(vocabulary_size=10, hidden_size=8, embedding_dim=4, dtype_policy=policy)
        compile_model(model, config)
        assert type(model.optimizer).__name__ == expected, policy


def test_generation_traces_its_step_once_per_step_model(trained):
    # Each call of the step model runs as a traced function (eagerly it ran
    # op by op: 7.5 against 0.75 ms a character for the README's model), kept
    # on the step model, so a reused step model is not traced again; the
    # characters keep their static length of 1 (one fused loop).
    model, vocab = trained
    step = build_step_model(model)
    first = generate_text(model, vocab, "To", length=5, temperature=0, step_model=step)
    compiled = step._rnn_pipeline_step
    prompts, characters = compiled.functions
    assert prompts.experimental_get_tracing_count() == characters.experimental_get_tracing_count() == 1
    assert generate_text(model, vocab, ["To be", "or"], length=7, step_model=step, seed=1)
    assert generate_text(model, vocab, ["To be", "or", "not"], length=7, step_model=step, seed=1)
    assert generate_text(model, vocab, "To", length=5, temperature=0, step_model=step) == first
    assert step._rnn_pipeline_step is compiled
    # Shapes relaxed once: a prompt of another size or width, a batch of another size.
    assert prompts.experimental_get_tracing_count() == characters.experimental_get_tracing_count() == 2
    # The relaxed trace takes ids of any batch and of length 1, and no other length: asked for
    # that signature, the function has it already; asked for any length, it traces again.
    import tensorflow as tf

    states = [tf.TensorSpec([None, size], "float32") for size in (s.shape[-1] for s in step.inputs[1:])]
    characters.get_concrete_function(tf.TensorSpec([None, 1], step.inputs[0].dtype), states)
    assert characters.experimental_get_tracing_count() == 2
    characters.get_concrete_function(tf.TensorSpec([None, None], step.inputs[0].dtype), states)
    assert characters.experimental_get_tracing_count() == 3

"""The transcription run: overfitting, outputs, resume, time budget, config."""

import dataclasses
import json
import os
import shutil

import keras
import numpy as np
import pytest

import train
from models.transcription import build_transcription_model
from models.transcription_evaluation import evaluate_transcription
from pipelines.audio_features import FeatureConfig
from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary
from tests.fresh_process import exits_before_tensorflow
from tests.transcription_fixtures import NUM_FEATURES, make_speech_data
from training import language_model, language_model_config, transcription, transcription_config
from training.cli import config_differences
from training.error_rate_callback import ErrorRateCallback
from training.time_budget_callback import TimeBudgetCallback

VOCABULARY = Vocabulary(SPEECH_ALPHABET)
TINY = dict(
    hidden_size=24, num_layers=1, frame_stack=1, dropout=0.0, batch_size=8,
    learning_rate=1e-2, beam_width=2, num_examples=1, export=False,
)


def test_tiny_model_overfits_a_few_utterances():
    data = make_speech_data(train=24, validation=8)
    model = build_transcription_model(
        num_features=NUM_FEATURES, vocabulary_size=VOCABULARY.size, hidden_size=32,
        num_layers=1, frame_stack=1, dropout=0.0, learning_rate=1e-2,
    )
    model.fit(data.train, epochs=25, verbose=0)
    train_rates = evaluate_transcription(model, data.train, vocabulary=VOCABULARY)
    assert train_rates["utterances"] == 24
    assert train_rates["cer"] <= 0.05, list(zip(train_rates["references"], train_rates["hypotheses"]))
    beam = evaluate_transcription(
        model, data.validation, vocabulary=VOCABULARY, strategy="beam_search", beam_width=4
    )
    assert beam["cer"] <= 0.1


@pytest.fixture
def fake_data(monkeypatch):
    calls = []

    def fake_build_speech_datasets(**kwargs):
        calls.append(kwargs)
        return make_speech_data(train=16, validation=8, test=8)

    monkeypatch.setattr(transcription, "build_speech_datasets", fake_build_speech_datasets)
    monkeypatch.setattr(
        transcription.Config, "feature_config",
        lambda self: transcription.FeatureConfig(n_mels=NUM_FEATURES),
    )
    return calls


def test_run_writes_config_metrics_model_and_logs(tmp_path, fake_data, capsys):
    out = tmp_path / "run"
    config = transcription.Config(output_dir=str(out), epochs=2, **TINY)
    metrics = transcription.run(config)

    call = fake_data[0]
    assert call["dataset"] == "synthetic" and call["batch_size"] == 8
    assert call["vocabulary"] == VOCABULARY and call["strict"] is False
    assert call["feature_config"].n_mels == NUM_FEATURES

    assert json.loads((out / "config.json").read_text()) == json.loads(
        json.dumps(transcription.config_to_dict(config))
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    for key in ("val_cer", "val_wer", "test_cer", "test_wer", "val_cer_beam", "train_seconds"):
        assert isinstance(saved[key], float), key
    assert saved["epochs"] == 2
    assert saved["utterances"] == {"train": 16, "validation": 8, "test": 8}
    assert saved["skipped"] == 1 and saved["skipped_files"] == [["bad.wav", "silent"]]
    assert saved["val_utterances"] == 8 and saved["export_dir"] is None

    # The saved model, vocabulary and feature config reproduce the metric.
    model = keras.models.load_model(out / "model.keras")
    assert Vocabulary.load(out / "vocabulary.json") == VOCABULARY
    assert json.loads((out / "feature_config.json").read_text())["n_mels"] == NUM_FEATURES
    again = evaluate_transcription(model, make_speech_data(train=16, validation=8, test=8).validation,
                                   vocabulary=VOCABULARY)
    assert again["cer"] == pytest.approx(saved["val_cer"])

    assert os.listdir(out / "logs")  # TensorBoard
    assert (out / "checkpoints" / "best.weights.h5").exists()
    assert not (out / "backup").exists()  # removed once the run finished
    printed = capsys.readouterr().out
    assert "val_cer" in printed and "ref: " in printed and "hyp: " in printed


class _Interrupt(keras.callbacks.Callback):
    """Simulates a kill after `after` epochs (once the backup is written)."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after:
            self.weights = [w.copy() for w in self.model.get_weights()]
            raise KeyboardInterrupt("simulated kill")


class _EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []
        self.logs = []
        self.first_weights = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)
        if self.first_weights is None:
            self.first_weights = [w.copy() for w in self.model.get_weights()]

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))


def test_interrupted_run_resumes_at_the_next_epoch(tmp_path, fake_data):
    out = tmp_path / "run"
    config = transcription.Config(output_dir=str(out), epochs=2, **TINY)
    killed = _Interrupt(after=1)
    with pytest.raises(KeyboardInterrupt):
        transcription.run(config, callbacks=[killed])
    assert (out / "backup" / "training_metadata.json").exists()
    assert json.loads((out / "backup" / "best.json").read_text())["epoch"] == 1
    # The training time of epoch 1 is backed up with it (the budget and decay go on from it).
    killed_seconds = json.loads((out / "backup" / "training_clock.json").read_text())["seconds_by_epoch"]["1"]
    assert killed_seconds > 0

    # Other settings would resume a model that is not this one: refused before any data is read
    # or any file is touched, naming the field.
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    reads = len(fake_data)
    with pytest.raises(ValueError) as error:
        transcription.run(dataclasses.replace(config, hidden_size=16))
    assert str(out / "config.json") in str(error.value) and "'hidden_size': (24, 16)" in str(error.value)
    assert len(fake_data) == reads
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == files

    # More epochs than the killed run was given (and other decoding flags) resume it.
    recorder = _EpochRecorder()
    metrics = transcription.run(dataclasses.replace(config, epochs=3, beam_width=1), callbacks=[recorder])
    assert recorder.epochs == [1, 2]  # epochs 2 and 3 of 3 only
    # ... from the weights the killed run had at the end of its epoch 1.
    assert len(recorder.first_weights) == len(killed.weights)
    for resumed, backed_up in zip(recorder.first_weights, killed.weights):
        np.testing.assert_array_equal(resumed, backed_up)
    assert metrics["epochs"] == 3
    assert json.loads((out / "config.json").read_text())["epochs"] == 3
    assert "val_cer" in recorder.logs[0] and "val_wer" in recorder.logs[0]
    assert not (out / "backup").exists()


def test_a_run_killed_after_training_resumes_with_its_trained_weights(tmp_path, fake_data, monkeypatch, capsys):
    # Killed in the final evaluation (or the export): the same command evaluates and saves
    # what the run had trained, instead of training it again from scratch.
    out = tmp_path / "run"
    config = transcription.Config(output_dir=str(out), epochs=2, **TINY)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill in the final evaluation")

    with monkeypatch.context() as patch:
        patch.setattr(transcription, "evaluate_transcription", killed)
        with pytest.raises(KeyboardInterrupt):
            transcription.run(config)
    trained = json.loads((out / "backup" / "trained.json").read_text())
    assert trained["epochs"] == 2 and trained["train_seconds"] > 0
    assert not (out / "metrics.json").exists()
    best = transcription.build_model(config, num_features=NUM_FEATURES, vocabulary_size=VOCABULARY.size)
    best.load_weights(out / "checkpoints" / "best.weights.h5")

    capsys.readouterr()
    recorder = _EpochRecorder()
    metrics = transcription.run(config, callbacks=[recorder])
    assert recorder.epochs == []  # nothing trained again
    assert (f"The interrupted run backed up in {out / 'backup'} had finished training (2 epochs): "
            "evaluating and saving it") in capsys.readouterr().out
    assert metrics["epochs"] == 2 and metrics["train_seconds"] == round(trained["train_seconds"], 1)
    saved = keras.models.load_model(out / "model.keras", compile=False)
    for restored, checkpointed in zip(saved.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(restored, checkpointed)
    rates = evaluate_transcription(best, make_speech_data(train=16, validation=8, test=8).validation,
                                   vocabulary=VOCABULARY)
    assert metrics["val_cer"] == pytest.approx(rates["cer"])
    assert not (out / "backup").exists()


def test_a_run_killed_after_its_export_keeps_that_version(tmp_path, fake_data, monkeypatch, capsys):
    # Killed after the export, before metrics.json: the same command does not export the same
    # weights again as version 2 (a server would load it as new); another command does.
    out = tmp_path / "run"
    config = transcription.Config(output_dir=str(out), epochs=1, **{**TINY, "export": True})
    real_write_json = transcription.write_json

    def killed_at_the_metrics(path, value):
        if os.path.basename(path) == "metrics.json":
            raise KeyboardInterrupt("simulated kill before metrics.json")
        real_write_json(path, value)

    with monkeypatch.context() as patch:
        patch.setattr(transcription, "write_json", killed_at_the_metrics)
        with pytest.raises(KeyboardInterrupt):
            transcription.run(config)
    first = out / "export" / "transcriber" / "1"
    assert (first / "saved_model.pb").exists() and not (out / "metrics.json").exists()
    capsys.readouterr()
    metrics = transcription.run(config)
    assert metrics["export_dir"] == str(first) and os.listdir(out / "export" / "transcriber") == ["1"]
    assert f"had exported these weights to {first}: kept" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["export_dir"] == str(first)
    assert not (out / "backup").exists()


def test_a_resumed_run_does_not_replay_the_first_epochs_order(tmp_path, monkeypatch):
    import tensorflow as tf

    from pipelines.epochs import repeat_epochs
    from training.data_seed import data_seed

    # The made-up batches come in an order drawn from the seed the run gives, anew each epoch,
    # as the real training set's do (shuffle, SpecAugment masks).
    seeds = []

    def shuffled_data(**kwargs):
        seeds.append(kwargs["seed"])
        data = make_speech_data(train=16, validation=8, batch_size=2)
        train = data.train.shuffle(8, seed=kwargs["seed"], reshuffle_each_iteration=True)
        return dataclasses.replace(data, train=train.apply(tf.data.experimental.assert_cardinality(8)))

    monkeypatch.setattr(transcription, "build_speech_datasets", shuffled_data)
    monkeypatch.setattr(
        transcription.Config, "feature_config", lambda self: transcription.FeatureConfig(n_mels=NUM_FEATURES)
    )
    seen = []  # the labels of every training batch fit reads, in order

    def record(labels):
        seen.append(labels.numpy().tobytes())
        return labels

    def recording(dataset):
        repeated, steps = repeat_epochs(dataset)
        return repeated.map(lambda x, y: (x, tf.ensure_shape(tf.py_function(record, [y], y.dtype), y.shape))), steps

    monkeypatch.setattr(transcription, "repeat_epochs", recording)
    config = transcription.Config(output_dir=str(tmp_path / "run"), epochs=2, **TINY)
    with pytest.raises(KeyboardInterrupt):
        transcription.run(config, callbacks=[_Interrupt(after=1)])
    first = seen[:8]
    assert seeds == [config.seed]  # a run from the start: seeded as it always was
    del seen[:]
    transcription.run(config)
    # The resumed run's epoch 2: the same batches in another order, not epoch 1's again.
    assert seeds[1] == data_seed(config.seed, 1) != config.seed
    assert seen[:8] != first and sorted(seen[:8]) == sorted(first)
    # Its mix and time stretch are drawn from that seed too (a run from the start: --seed's).
    drawn = []
    monkeypatch.setattr(transcription, "mix_batches", lambda main, extra, fraction, seed: drawn.append(seed) or main)
    monkeypatch.setattr(transcription, "stretch_batches", lambda train, stretch, seed: drawn.append(seed) or train)
    mixed = dataclasses.replace(config, mix_dataset="mix", time_stretch=0.1)
    transcription.prepare_data(mixed)
    transcription.prepare_data(mixed, resumed_epoch=1)
    # (each prepare_data builds the data and the mix, then mixes and stretches)
    assert seeds[2:] == drawn == [config.seed, config.seed, seeds[1], seeds[1]]


def test_a_killed_run_resumed_with_fewer_epochs_counts_the_epochs_it_trained(tmp_path, fake_data):
    out = tmp_path / "run"
    config = transcription.Config(output_dir=str(out), epochs=3, **TINY)
    with pytest.raises(KeyboardInterrupt):
        transcription.run(config, callbacks=[_Interrupt(after=2)])
    recorder = _EpochRecorder()
    metrics = transcription.run(dataclasses.replace(config, epochs=1), callbacks=[recorder])
    assert recorder.epochs == []  # nothing left to train
    assert metrics["epochs"] == 2
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


class _ScriptedErrorRates(keras.callbacks.Callback):
    """Stands in for ErrorRateCallback: each epoch's val_cer from `CER`."""

    CER = [0.5, 0.4, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]

    def __init__(self, *args, **kwargs):
        super().__init__()

    def on_epoch_end(self, epoch, logs=None):
        logs["val_cer"], logs["val_wer"] = self.CER[epoch], 1.0


def test_a_resumed_run_keeps_its_early_stopping_patience(tmp_path, fake_data, monkeypatch):
    # Best at epoch 2, patience 2: the run stops after epoch 4, killed after epoch 3 or not.
    monkeypatch.setattr(transcription, "ErrorRateCallback", _ScriptedErrorRates)
    config = transcription.Config(output_dir=str(tmp_path / "whole"), epochs=8, early_stopping_patience=2, **TINY)
    assert transcription.run(config)["epochs"] == 4

    config = dataclasses.replace(config, output_dir=str(tmp_path / "killed"))
    with pytest.raises(KeyboardInterrupt):
        transcription.run(config, callbacks=[_Interrupt(after=3)])
    recorder = _EpochRecorder()
    metrics = transcription.run(config, callbacks=[recorder])
    assert recorder.epochs == [3]
    assert metrics["epochs"] == 4


class _WeightsAtStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = [np.array(w) for w in self.model.get_weights()]


@pytest.mark.long
def test_a_run_into_a_finished_runs_directory(tmp_path, fake_data, capsys, monkeypatch):
    out = tmp_path / "run"
    config = transcription.Config(output_dir=str(out), epochs=1, **TINY)
    transcription.run(config)
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    # Other settings, or a single run where an ensemble is (and the other way round): refused, untouched.
    with pytest.raises(ValueError, match=r"'dropout': \(0.0, 0.2\)"):
        transcription.run(dataclasses.replace(config, dropout=0.2))
    with pytest.raises(ValueError, match=r"holds a single run \(train.py without --ensemble\), not an ensemble"):
        transcription.run(dataclasses.replace(config, ensemble=2, export=True))
    # Bad data with the same settings and --overwrite stops the run before it writes anything.
    def unreadable(**kwargs):
        raise ValueError("bad.wav: unreadable")

    with monkeypatch.context() as patch:
        patch.setattr(transcription, "build_speech_datasets", unreadable)
        with pytest.raises(ValueError, match="bad.wav: unreadable"):
            transcription.run(dataclasses.replace(config, overwrite=True))
    # The same settings: refused too (the model would be replaced), naming what the run holds.
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1
    with pytest.raises(ValueError) as refused:
        transcription.run(config)
    assert str(refused.value) == (
        f"{out} holds a finished run with these settings ({out / 'metrics.json'}: 1 epoch, val_cer "
        f"{json.loads((out / 'metrics.json').read_text())['val_cer']:.4g}); training it again would replace its "
        "model and files. Nothing was written: give --overwrite to train it again, or another --output-dir."
    )
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == files
    # With --overwrite the same settings train it again.
    capsys.readouterr()
    transcription.run(dataclasses.replace(config, overwrite=True))
    assert f"{out} holds a run with these settings: training it again (--overwrite" in capsys.readouterr().out
    assert (out / "model.keras").stat().st_mtime_ns > files[out / "model.keras"]


def test_a_non_finite_loss_stops_the_run_before_it_saves_a_model(tmp_path, monkeypatch):
    def nan_features(**kwargs):
        data = make_speech_data(train=16, validation=8, test=8)
        spoilt = data.train.map(lambda x, y: ({**x, "features": x["features"] * float("nan")}, y))
        return dataclasses.replace(data, train=spoilt)

    monkeypatch.setattr(transcription, "build_speech_datasets", nan_features)
    monkeypatch.setattr(
        transcription.Config, "feature_config", lambda self: transcription.FeatureConfig(n_mels=NUM_FEATURES)
    )
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"The training loss became nan at epoch 1, batch 1; .*--cache-dir"):
        transcription.run(transcription.Config(output_dir=str(out), epochs=1, **TINY))
    assert not (out / "model.keras").exists()


def test_init_from_starts_a_run_from_a_finished_runs_weights(tmp_path, fake_data, capsys):
    first = tmp_path / "first"
    transcription.run(transcription.Config(output_dir=str(first), epochs=1, **TINY))
    saved = keras.models.load_model(first / "model.keras", compile=False).get_weights()

    start = _WeightsAtStart()
    config = transcription.Config(output_dir=str(tmp_path / "second"), epochs=1, init_from=str(first), **TINY)
    transcription.run(config, callbacks=[start])
    assert f"Initialised from {first / 'model.keras'}" in capsys.readouterr().out
    assert len(start.weights) == len(saved)
    for started, trained in zip(start.weights, saved):
        np.testing.assert_array_equal(started, trained)
    # Without --init-from the same seed starts elsewhere.
    fresh = _WeightsAtStart()
    transcription.run(dataclasses.replace(config, init_from=None, output_dir=str(tmp_path / "third")), callbacks=[fresh])
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.weights, saved))
    # A refused --init-from writes nothing, so the corrected command is not refused for its config.json.
    fourth = tmp_path / "fourth"
    with pytest.raises(FileNotFoundError):
        transcription.run(dataclasses.replace(config, init_from=str(tmp_path / "missing"), output_dir=str(fourth)))
    assert not fourth.exists()
    transcription.run(dataclasses.replace(config, output_dir=str(fourth)))


def test_warm_start_names_what_differs(tmp_path, fake_data):
    first = tmp_path / "first"
    transcription.run(transcription.Config(output_dir=str(first), epochs=1, **TINY))
    features = transcription.FeatureConfig(n_mels=NUM_FEATURES)

    def model(**changes):
        kwargs = {**transcription.builder_kwargs(transcription.Config(**TINY)), **changes}
        return build_transcription_model(num_features=NUM_FEATURES, vocabulary_size=VOCABULARY.size, **kwargs)

    with pytest.raises(ValueError, match=r"model\.keras: weight .* has shape .*--hidden-size"):
        transcription.warm_start(model(hidden_size=16), str(first), feature_config=features, vocabulary=VOCABULARY)
    with pytest.raises(ValueError, match=r"model\.keras holds \d+ weights where this run's model has \d+"):
        transcription.warm_start(model(num_layers=2), str(first), feature_config=features, vocabulary=VOCABULARY)
    with pytest.raises(ValueError, match=r"feature_config\.json: features differ .*'top_db': \(None, 30\.0\)"):
        transcription.warm_start(
            model(), str(first), feature_config=dataclasses.replace(features, top_db=30.0), vocabulary=VOCABULARY
        )
    with pytest.raises(ValueError, match=r"vocabulary\.json: vocabulary .* differs"):
        transcription.warm_start(
            model(), str(first), feature_config=features, vocabulary=Vocabulary("abc ")
        )
    with pytest.raises(FileNotFoundError, match=r"--init-from: Model directory .*nowhere lacks .*nowhere/model\.keras"):
        transcription.warm_start(model(), str(tmp_path / "nowhere"), feature_config=features, vocabulary=VOCABULARY)
    # An ensemble run's and a tuning run's directories hold their models deeper: the error names them
    # (as --init-from, and not their exports, which cannot start a run).
    shutil.copytree(first, tmp_path / "ensemble" / "members" / "seed_1234")
    shutil.copytree(first, tmp_path / "tuned" / "tuning" / "best")
    for directory, hint in (
        ("ensemble", r"It is an ensemble run .* e\.g\. --init-from \S*ensemble/members/seed_1234\.$"),
        ("tuned", r"It is a tuning run: use --init-from \S*tuned/tuning/best \(its best model\)\.$"),
    ):
        os.makedirs(tmp_path / directory / "export" / "transcriber" / "1")
        with pytest.raises(FileNotFoundError, match=r"--init-from: Model directory .*lacks .*" + hint):
            transcription.warm_start(model(), str(tmp_path / directory), feature_config=features,
                                     vocabulary=VOCABULARY)


def test_pad_time_to_multiple_pads_only_features():
    data = make_speech_data(train=8, validation=8)
    for (inputs, labels), (padded, same_labels) in zip(
        data.train, transcription.pad_time_to_multiple(data.train.map(
            lambda x, y: ({**x, "features": x["features"][:, :29]}, y)), 12)
    ):
        assert padded["features"].shape[1] == 36
        np.testing.assert_array_equal(padded["features"][:, :29], inputs["features"][:, :29])
        np.testing.assert_array_equal(padded["features"][:, 29:], 0.0)
        np.testing.assert_array_equal(padded["feature_length"], inputs["feature_length"])
        np.testing.assert_array_equal(same_labels, labels)


def test_mix_batches_draws_from_both_and_ends_with_the_main_data():
    import tensorflow as tf

    from pipelines.epochs import repeat_epochs

    main = tf.data.Dataset.from_tensor_slices(np.arange(40).reshape(40, 1))
    extra = tf.data.Dataset.from_tensor_slices(-np.arange(1, 6).reshape(5, 1))
    mixed = transcription.mix_batches(main, extra, 0.3, seed=0)
    assert int(mixed.cardinality()) == 40 + 17  # round(40 * 0.3 / 0.7) extra batches an epoch
    repeated, steps = repeat_epochs(mixed)
    epochs = np.concatenate(list(repeated.take(2 * steps).as_numpy_iterator())).reshape(2, steps)
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch[epoch >= 0]), np.arange(40))  # every main batch once
        assert (epoch < 0).sum() == 17  # extra batches, extra repeated
    assert not np.array_equal(epochs[0] < 0, epochs[1] < 0)  # placed anew each epoch
    np.testing.assert_array_equal(  # the same seed, the same mix
        epochs, np.concatenate(list(repeat_epochs(transcription.mix_batches(main, extra, 0.3, seed=0))[0]
                                    .take(2 * steps).as_numpy_iterator())).reshape(2, steps)
    )
    unknown = main.filter(lambda x: True)  # length not known: drawn at random until main ends
    drawn = np.concatenate(list(transcription.mix_batches(unknown, extra, 0.5, seed=0).as_numpy_iterator()))
    np.testing.assert_array_equal(np.sort(drawn[drawn >= 0]), np.arange(40))
    assert 20 <= (drawn < 0).sum() <= 60


def test_run_mixes_a_second_dataset_into_training(tmp_path, fake_data):
    config = transcription.Config(
        output_dir=str(tmp_path / "run"), epochs=1, mix_dataset="synthetic:num_train=10", **TINY
    )
    metrics = transcription.run(config)
    assert [call["dataset"] for call in fake_data] == ["synthetic", "synthetic:num_train=10"]
    assert metrics["mix_dataset"] == "synthetic:num_train=10"
    assert metrics["mix_utterances"]["train"] == 16
    assert metrics["skipped"] == 2  # one skipped file in each dataset


def test_the_mix_datasets_skipped_files_are_printed_as_counted(tmp_path, monkeypatch, capsys):
    def build(**kwargs):
        data = make_speech_data(train=16, validation=8, test=8)
        if kwargs["dataset"] == "synthetic":
            return data
        return dataclasses.replace(data, skipped=[("mix/a.wav", "truncated"), ("mix/b.wav", "out_of_vocabulary")])

    monkeypatch.setattr(transcription, "build_speech_datasets", build)
    monkeypatch.setattr(
        transcription.Config, "feature_config", lambda self: transcription.FeatureConfig(n_mels=NUM_FEATURES)
    )
    config = transcription.Config(output_dir=str(tmp_path / "run"), epochs=1, mix_dataset="mix", **TINY)
    metrics = transcription.data_metrics(config, transcription.prepare_data(config))
    assert metrics["skipped"] == 3
    assert metrics["skipped_files"] == [["bad.wav", "silent"], ["mix/a.wav", "truncated"],
                                        ["mix/b.wav", "out_of_vocabulary"]]

    class Printed(Exception):  # the run stops once it has printed its data: no model is needed
        pass

    def stop(*args, **kwargs):
        raise Printed

    monkeypatch.setattr(transcription, "build_distributed", stop)
    with pytest.raises(Printed):
        transcription.run(config)
    printed = capsys.readouterr().out
    assert "Utterances of --mix-dataset: {'train': 16, 'validation': 8, 'test': 8}; skipped: 2\n" in printed
    assert ("  skipped bad.wav: silent\n  skipped mix/a.wav: truncated\n"
            "  skipped mix/b.wav: out_of_vocabulary\n") in printed


def test_a_bad_mix_dataset_is_named_as_such(tmp_path, monkeypatch):
    from data.speech_sources import resolve_speech_source

    def build(**kwargs):
        if kwargs["dataset"] == "synthetic":
            return make_speech_data(train=16, validation=8, test=8)
        resolve_speech_source(kwargs["dataset"], cache_dir=str(tmp_path))  # the real spec check

    monkeypatch.setattr(transcription, "build_speech_datasets", build)
    config = transcription.Config(mix_dataset=str(tmp_path / "nope"), **TINY)
    with pytest.raises(ValueError, match=r"invalid value for argument `mix_dataset` \(--mix-dataset\), .*nope"):
        transcription.prepare_data(config)


def test_prepare_data_stretches_training_batches_only(fake_data):
    from pipelines.time_stretch import stretch_factors

    config = transcription.Config(time_stretch=1.0, **TINY)
    plain = transcription.prepare_data(dataclasses.replace(config, time_stretch=0.0)).data
    stretched = transcription.prepare_data(config).data
    quantum = transcription.TIME_QUANTUM_STEPS * config.frame_stack
    # The fake training data comes in a fixed order: batch i of both is the same utterances.
    drawn = set()
    for (a, a_labels), (b, b_labels) in zip(plain.train, stretched.train, strict=True):
        np.testing.assert_array_equal(a_labels, b_labels)
        old, new = a["feature_length"].numpy(), b["feature_length"].numpy()
        matches = [f for f in stretch_factors(1.0) if np.array_equal(new, np.floor((old - 0.5) * f - 0.5 + 1e-4) + 1)]
        assert matches, (old, new)  # the lengths of one of the factors
        drawn.add(matches[-1])
        assert b["features"].shape[1] % quantum == 0
    assert max(drawn) > 1  # this seed slows batches down (the draws are tested in test_time_stretch)
    # The feature size stays static: the model's first layers need it.
    assert stretched.train.element_spec[0]["features"].shape[-1] == NUM_FEATURES
    for split in ("validation", "test"):
        for (a, _), (b, _) in zip(getattr(plain, split), getattr(stretched, split), strict=True):
            np.testing.assert_array_equal(a["features"], b["features"])


def test_run_trains_on_stretched_batches_with_frequency_warp_and_random_eq(tmp_path, fake_data):
    config = transcription.Config(
        output_dir=str(tmp_path / "run"), epochs=1, time_stretch=0.5, frequency_warp=0.1, random_eq=0.3,
        normalisation="utterance_scalar", **TINY
    )
    metrics = transcription.run(config)
    assert metrics["epochs"] == 1 and np.isfinite(metrics["val_cer"])
    saved = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    assert saved.get_layer("random_eq").max_gain == 0.3
    assert saved.get_layer("frequency_warp").max_warp == 0.1
    # Cepstral coefficients have no band axis to shape: MFCC runs leave both out.
    mfcc = transcription.builder_kwargs(dataclasses.replace(config, feature_kind="mfcc", n_mfcc=13))
    assert (mfcc["random_eq"], mfcc["frequency_warp"]) == (0.0, 0.0)


def test_run_trains_with_input_noise(tmp_path, fake_data):
    config = transcription.Config(output_dir=str(tmp_path / "run"), epochs=1, input_noise=0.2, **TINY)
    metrics = transcription.run(config)
    assert metrics["epochs"] == 1 and np.isfinite(metrics["val_cer"])
    saved = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    assert saved.get_layer("input_noise").stddev == 0.2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["input_noise"] == 0.2


def test_run_trains_with_weight_noise(tmp_path, fake_data):
    config = transcription.Config(output_dir=str(tmp_path / "run"), epochs=1, weight_noise=0.05, **TINY)
    metrics = transcription.run(config)
    assert metrics["epochs"] == 1 and np.isfinite(metrics["val_cer"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["weight_noise"] == 0.05
    built = transcription.build_model(config, num_features=NUM_FEATURES, vocabulary_size=VOCABULARY.size)
    assert built.weight_noise == 0.05


def test_error_rate_callback_puts_rates_in_logs():
    data = make_speech_data(train=8, validation=8)
    model = build_transcription_model(
        num_features=NUM_FEATURES, vocabulary_size=VOCABULARY.size, hidden_size=8,
        num_layers=1, frame_stack=1,
    )
    recorder = _EpochRecorder()
    history = model.fit(
        data.train, epochs=1, verbose=0,
        callbacks=[ErrorRateCallback(data.validation, vocabulary=VOCABULARY, verbose=False), recorder],
    )
    expected = evaluate_transcription(model, data.validation, vocabulary=VOCABULARY)
    assert recorder.logs[0]["val_cer"] == pytest.approx(expected["cer"])
    assert history.history["val_wer"] == [pytest.approx(expected["wer"])]


def test_time_budget_stops_training():
    data = make_speech_data(train=8, validation=8)
    model = build_transcription_model(
        num_features=NUM_FEATURES, vocabulary_size=VOCABULARY.size, hidden_size=8,
        num_layers=1, frame_stack=1,
    )
    budget = TimeBudgetCallback(max_seconds=1e-6)
    history = model.fit(data.train, epochs=50, verbose=0, callbacks=[budget])
    assert budget.stopped_early
    assert len(history.epoch) == 1


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("hidden_size", 0, "a positive integer"),
        ("epochs", -1, "a positive integer"),
        ("frame_stack", 2.5, "a positive integer"),
        ("dropout", 1.0, r"a float in \[0, 1\)"),
        ("learning_rate", 0.0, "a finite positive float"),
        ("learning_rate", float("inf"), "a finite positive float"),
        ("max_train_minutes", 0, "a finite positive number of minutes or None"),
        ("max_train_minutes", float("inf"), "a finite positive number of minutes or None"),
        ("max_duration_s", -2.0, "a positive number of seconds"),
        ("feature_kind", "spectrogram", r"one of \(.log_mel., .mfcc.\)"),
        ("dataset", "", "a non-empty string"),
        ("bidirectional", "yes", "a bool"),
        ("num_examples", -1, "a non-negative integer"),
        ("num_dense_layers", -2, "a non-negative integer"),
        ("mix_fraction", 1.0, r"a float in \(0, 1\)"),
        ("frequency_warp", 0.7, r"a float in \[0, 0.5\)"),
        ("random_eq", -0.3, "a finite float >= 0"),
        ("input_noise", -0.2, "a finite float >= 0"),
        ("input_noise", float("nan"), "a finite float >= 0"),
        ("weight_noise", -0.05, "a finite float >= 0"),
        ("weight_noise", True, "a finite float >= 0"),
        ("lr_schedule", "linear", "'cosine' or 'constant'"),
        ("mix_dataset", "", "a path or None"),
        ("top_db", -10.0, "a finite positive number of decibels or None"),
        ("trim_db", 0.0, "a finite positive number of decibels or None"),
        ("trim_db", float("inf"), "a finite positive number of decibels or None"),
        ("time_stretch", 1.5, r"a float in \[0, 1\]"),
        ("spec_augment_max_frequency", 0.0, r"a fraction of the features in \(0, 1\]"),
        ("fmax", 9000.0, r"None or a frequency in \(20.0, 8000.0\] Hz"),
        ("fmin", 8000.0, r"a frequency in \[0, 8000.0\) Hz"),
        ("normalisation", "global", r"one of \('utterance', 'utterance_scalar', 'none'\)"),
        ("ema_momentum", 1.0, r"None or a float in \(0, 1\)"),
        ("dtype_policy", "bfloat16", r"one of \('float32', 'mixed_bfloat16', 'mixed_float16'\)"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value, expected):
    flag = "--" + field.replace("_", "-")
    with pytest.raises(ValueError, match=rf"`{field}` \({flag}\), expected {expected}, got {value!r}"):
        transcription.Config(**{field: value})


def test_config_refuses_weight_noise_with_a_moving_average_or_replicas():
    with pytest.raises(ValueError, match=r"`ema_momentum` \(--ema-momentum\), expected None with --weight-noise"):
        transcription.Config(weight_noise=0.1, ema_momentum=0.99)
    with pytest.raises(ValueError, match=r"`weight_noise` \(--weight-noise\), expected 0 with --distribute mirrored"):
        transcription.Config(weight_noise=0.1, distribute="mirrored")


def test_config_rejects_a_spec_augment_fraction_below_one_band():
    with pytest.raises(ValueError, match=r"`spec_augment_max_frequency` \(--spec-augment-max-frequency\), "
                                         r"expected at least 1/80 \(one of the 80 features\), got 0.01"):
        transcription.Config(spec_augment_max_frequency=0.01, spec_augment=True)
    transcription.Config(spec_augment_max_frequency=0.0125, spec_augment=True)  # one band of 80
    transcription.Config(spec_augment_max_frequency=0.01, spec_augment=False)  # no masks asked for


def test_spec_augment_defaults_to_off_only_for_the_synthetic_corpus(tmp_path):
    resolved = lambda **kw: transcription.Config(**kw).spec_augment  # noqa: E731
    assert resolved() is False  # the default dataset is the synthetic corpus
    assert resolved(dataset="synthetic:sample_rate=8000+synthetic:text=digits") is False
    assert resolved(dataset="../shared/data/fsdd:held_out_speakers=lucas") is True
    assert resolved(dataset="../shared/data/fsdd+synthetic:text=digits") is True
    assert resolved(dataset="synthetic_recordings/") is True  # a folder, not the corpus
    assert resolved(spec_augment=True) is True and resolved(dataset="librispeech", spec_augment=False) is False
    # The flags: absent -> the default for the dataset; given -> as given; config.json holds the bool.
    from training.cli import add_config_flags, config_from_namespace
    import argparse

    parser = argparse.ArgumentParser()
    add_config_flags(parser, transcription.Config)
    parse = lambda *argv: config_from_namespace(transcription.Config, parser.parse_args(list(argv)))  # noqa: E731
    assert parse().spec_augment is False and parse("--dataset", "librispeech").spec_augment is True
    assert parse("--spec-augment").spec_augment is True
    assert parse("--dataset", "librispeech", "--no-spec-augment").spec_augment is False


def test_feature_fields_reach_the_feature_config():
    config = transcription.Config(
        fmin=150.0, fmax=3800.0, top_db=30.0, trim_db=25.0, normalisation="utterance_scalar"
    ).feature_config()
    assert (config.fmin, config.fmax, config.top_db, config.trim_db, config.sample_rate, config.normalisation) == (
        150.0, 3800.0, 30.0, 25.0, 16000, "utterance_scalar"
    )


def test_fmax_must_lie_above_fmin():
    with pytest.raises(ValueError, match=r"`fmax` \(--fmax\), expected None or a frequency in \(400.0, 8000.0\] Hz"):
        transcription.Config(fmin=400.0, fmax=300.0)


def test_default_fmin_keeps_the_feature_cache_key():
    # fmin was always a FeatureConfig field (20 Hz); the training flag must not change the key.
    assert transcription.Config().feature_config().cache_key() == FeatureConfig().cache_key()


def test_config_rejects_more_mfcc_than_mel_bands():
    with pytest.raises(ValueError, match="`n_mfcc`.*at most n_mels=40"):
        transcription.Config(feature_kind="mfcc", n_mels=40, n_mfcc=41)


def test_help_and_bad_flags_answer_before_tensorflow_is_imported():
    # The flags come from each task's configuration module, which imports no
    # TensorFlow (about 5 s): --help, a flag of the wrong type, an unknown flag
    # and a value the configuration refuses are answered before it.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    codes, stderr, imported = exits_before_tensorflow("train", [
        ["--help"], ["--task", "language_model", "--help"], ["--hidden-size", "x"], ["--bogus", "1"],
        ["--dropout", "2"], ["--task", "language_model", "--num-layers", "0"],
        ["--feature-kind", "mfcc", "--frequency-warp", "0.1"],
        # Where the run would write, and the data it would read: no such folder, file or option.
        ["--output-dir", "train.py/run"], ["--tune", "--output-dir", "README.md"],
        ["--dataset", "no/such/fsdd:held_out_speakers=lucas"], ["--mix-dataset", "synthetic:voices=3"],
        ["--task", "language_model", "--dataset", "no/such/text.txt"],
        # The closed vocabulary's file and warps.
        ["--candidates", "no/such/words.txt"], ["--candidates", "README.md", "--candidate-warps", "0.9,2"],
    ], root)
    assert (codes, imported) == ([0, 0] + [2] * 12, []), stderr
    for message in ("argument --hidden-size: invalid int value: 'x'", "unrecognized arguments: --bogus 1",
                    "`dropout` (--dropout), expected a float in [0, 1), got 2.0",
                    "`num_layers` (--num-layers), expected a positive integer, got 0",
                    "--frequency-warp 0.1 with --feature-kind mfcc",
                    f"--output-dir train.py/run: {os.path.join(root, 'train.py')} is a file, not a directory; expected "
                    "a directory for the run's files. Nothing was written",
                    "--output-dir README.md is a file: expected a directory for the search's files.",
                    "got 'no/such/fsdd:held_out_speakers=lucas' (no such folder)",
                    "argument `mix_dataset` (--mix-dataset): 'synthetic:voices=3'; expected 'synthetic' or",
                    "Text file 'no/such/text.txt' does not exist",
                    "Candidates file 'no/such/words.txt' cannot be read as UTF-8 text",
                    "`candidate_warps` (--candidate-warps), expected comma-separated distinct factors in [0.5, 1.5]"):
        assert message in stderr, stderr
    # The task's module is the run's, with TensorFlow, once the flags are read.
    assert train.parse_args(["--task", "language_model"])[0] is language_model
    assert transcription.Config is transcription_config.Config
    assert language_model.Config is language_model_config.Config


def test_cli_flags_map_onto_the_config(capsys, tmp_path):
    fsdd = str(tmp_path / "fsdd")
    os.makedirs(fsdd)
    module, config = train.parse_args(
        ["--task", "transcription", "--hidden-size", "64", "--epochs", "3",
         "--dataset", fsdd, "--no-bidirectional", "--strict",
         "--max-train-minutes", "none", "--output-dir", "x"]
    )
    assert module is transcription
    assert (config.hidden_size, config.epochs, config.dataset) == (64, 3, fsdd)
    assert config.bidirectional is False and config.strict is True
    assert config.max_train_minutes is None and config.output_dir == "x"
    assert config.feature_config().n_mels == 80
    with pytest.raises(SystemExit):
        train.parse_args(["--task", "transcription", "--hidden-size", "0"])
    assert "`hidden_size` (--hidden-size), expected a positive integer, got 0" in capsys.readouterr().err
    pre = str(tmp_path / "pre")
    os.makedirs(pre)
    assert train.parse_args(["--task", "transcription", "--init-from", pre])[1].init_from == pre
    # A missing path or a file is refused before any data is prepared.
    (tmp_path / "a_file").write_text("")
    for path, problem in ((tmp_path / "missing", "does not exist"), (tmp_path / "a_file", "is a file, not a directory")):
        with pytest.raises(SystemExit):
            train.parse_args(["--task", "transcription", "--init-from", str(path)])
        assert (f"--init-from {path} {problem}; expected the --output-dir of an earlier train.py run of this task."
                in capsys.readouterr().err)
    assert train.parse_args(["--task", "transcription", "--dtype-policy", "mixed_bfloat16"])[1].dtype_policy == "mixed_bfloat16"
    with pytest.raises(SystemExit):
        train.parse_args(["--task", "transcription", "--dtype-policy", "bfloat16"])
    assert "invalid choice: 'bfloat16'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--task", "transcription", "--init-from", pre, "--tune"])
    assert "--init-from starts one run from another's weights; --tune" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--task", "transcription", "--hiden-size", "3"])


def _usage_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_command([str(a) for a in argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message, where_it_acts",
    [
        (["--mix-fraction", "0.5"], "--mix-fraction is the share of training batches taken from --mix-dataset, and "
                                    "no --mix-dataset is given: the value would be ignored",
         [["--mix-dataset", "synthetic", "--mix-fraction", "0.5"]]),
        (["--feature-kind", "mfcc", "--frequency-warp", "0.15"],
         "--frequency-warp 0.15 with --feature-kind mfcc: it stretches the mel axis of log_mel features",
         # Its default (0.15) is left out for MFCCs; a 0 given says the same.
         [["--feature-kind", "mfcc"], ["--feature-kind", "mfcc", "--frequency-warp", "0"]]),
        (["--feature-kind", "mfcc", "--random-eq", "0.3"],
         "--random-eq 0.3 with --feature-kind mfcc: it adds a gain curve over the mel axis of log_mel features",
         # With per-band normalisation too: added after it, by the model, the curve reaches the layers.
         [["--random-eq", "0.3"], ["--feature-kind", "mfcc", "--random-eq", "0"]]),
        (["--n-mfcc", "13"], "--n-mfcc is the number of coefficients kept with --feature-kind mfcc; with "
                             "--feature-kind log_mel the value would be ignored",
         [["--feature-kind", "mfcc", "--n-mfcc", "13"]]),
        (["--dataset", "librispeech", "--no-spec-augment", "--spec-augment-max-frequency", "0.25"],
         "--spec-augment-max-frequency is the widest SpecAugment frequency mask, and SpecAugment is off "
         "(--no-spec-augment)",
         [["--dataset", "librispeech", "--spec-augment-max-frequency", "0.25"]]),
        (["--dataset", "synthetic", "--spec-augment-max-frequency", "0.25"],
         "SpecAugment is off (off by default when --dataset is only synthetic)",
         [["--spec-augment", "--spec-augment-max-frequency", "0.25"]]),
        (["--data-dir", "/srv/tfds"], "--data-dir is the TFDS data directory of the catalog datasets",
         [["--mix-dataset", "spoken_digit", "--data-dir", "/srv/tfds"]]),
        # --lr-schedule acts in a search too: each trial follows it.
        (["--tune", "--lr-schedule", "constant", "--early-stopping-patience", "3"],
         "with --tune, --early-stopping-patience has no effect: the trials and the best model train up to "
         "--max-epochs epochs, without early stopping. Drop it.",
         [["--lr-schedule", "constant", "--early-stopping-patience", "3"], ["--tune", "--lr-schedule", "constant"]]),
        (["--tune", "--tuner", "random", "--hyperband-factor", "4"],
         "--hyperband-factor is Hyperband's reduction factor; --tuner random does not use it",
         [["--tune", "--tuner", "hyperband", "--hyperband-factor", "4"]]),
        (["--task", "language_model", "--tfds-data-dir", "/srv/tfds"],
         "--tfds-data-dir is the TFDS data directory of 'tfds:NAME' datasets, and --dataset tinyshakespeare is not one",
         [["--task", "language_model", "--dataset", "tfds:tiny_shakespeare", "--tfds-data-dir", "/srv/tfds"]]),
        (["--task", "language_model", "--sample-length", "0", "--temperature", "0.5"],
         "--sample-length 0 prints no sample, so --temperature would be ignored",
         [["--task", "language_model", "--sample-length", "0"], ["--task", "language_model", "--temperature", "0.5"]]),
        (["--task", "language_model", "--tune", "--temperature", "0.5"],
         "with --tune, --temperature has no effect: a search prints no sample",
         [["--task", "language_model", "--temperature", "0.5"]]),
    ],
)
def test_train_py_refuses_a_flag_that_would_have_no_effect(argv, message, where_it_acts, capsys):
    assert message in _usage_error(capsys, argv)
    for acting in where_it_acts:
        train.parse_command(acting)


def test_train_py_refuses_an_output_dir_that_holds_the_dataset(tmp_path, capsys):
    data = tmp_path / "shared" / "data"
    fsdd = data / "fsdd"
    fsdd.mkdir(parents=True)
    (fsdd / "manifest.tsv").write_text("path\ttext\n")
    for argv, shown in (
        (["--dataset", fsdd, "--output-dir", fsdd], f"--output-dir {fsdd} is the folder of --dataset {fsdd}: "),
        (["--dataset", fsdd, "--output-dir", data], f"--output-dir {data} holds --dataset {fsdd}: "),
        (["--dataset", f"{fsdd}:held_out_speakers=lucas+synthetic", "--output-dir", fsdd / "." ],
         f"is the folder of --dataset {fsdd}: "),
        (["--mix-dataset", fsdd, "--output-dir", tmp_path], f"--output-dir {tmp_path} holds --mix-dataset {fsdd}: "),
        (["--task", "language_model", "--dataset", fsdd / "manifest.tsv", "--output-dir", fsdd],
         f"--output-dir {fsdd} holds --dataset {fsdd / 'manifest.tsv'}: "),
    ):
        message = _usage_error(capsys, argv)
        assert shown in message and "removing an --output-dir to start again would delete the data" in message
    assert sorted(os.listdir(fsdd)) == ["manifest.tsv"]
    # Beside the data, or in a folder of its own inside it, no file of the data is at stake.
    for out in (data / "runs" / "fsdd", fsdd / "runs" / "first"):
        assert train.parse_args(["--dataset", str(fsdd), "--output-dir", str(out)])[1].output_dir == str(out)


def test_train_py_names_a_cache_dir_it_cannot_make(tmp_path, capsys):
    file = tmp_path / "a_file"
    file.write_text("")
    for cache, problem in ((file, "is a file, not a directory"), (file / "cache", f"{file} is a file, not a directory")):
        message = _usage_error(capsys, ["--cache-dir", cache])
        assert f"--cache-dir {cache}: {problem}; expected a directory where corpora are generated" in message
    if os.path.isdir("/proc"):  # root may write any directory but not make one there
        assert "--cache-dir /proc/x: no directory can be made in /proc" in _usage_error(capsys, ["--cache-dir", "/proc/x"])
    # One that can be made is left to the run to make; an existing one may hold every feature already.
    for cache in (tmp_path / "new" / "cache", tmp_path):
        assert train.parse_args(["--cache-dir", str(cache)])[1].cache_dir == str(cache)
    assert sorted(os.listdir(tmp_path)) == ["a_file"]
    # An existing cache that cannot be written fails in the run, named as the flag that chose it.
    config = transcription.Config(cache_dir=str(tmp_path))
    denied = PermissionError(13, "Permission denied", str(tmp_path / "features" / "x.lock"))
    assert f" (in --cache-dir {tmp_path}: expected a directory" in train._cache_note(config, denied)
    assert train._cache_note(config, PermissionError(13, "Permission denied", "/elsewhere")) == ""


def test_train_py_takes_candidate_warps_that_start_with_a_dash(tmp_path, capsys):
    words = tmp_path / "words.txt"
    words.write_text("one\ntwo\n", encoding="utf-8")
    message = _usage_error(capsys, ["--candidates", words, "--candidate-warps", "-1,1"])
    assert "(--candidate-warps), expected comma-separated distinct factors in [0.5, 1.5]" in message
    assert "got '-1,1'" in message


def test_plain_baseline_trains_keras_simple_rnn_through_the_same_run(tmp_path, fake_data):
    from benchmarks.plain_baseline import build_plain_model

    out = tmp_path / "baseline"
    config = transcription.Config(
        output_dir=str(out), epochs=1, num_dense_layers=0, frequency_warp=0.0, **TINY
    )
    metrics = transcription.run(config, model_builder=build_plain_model)
    assert isinstance(metrics["val_cer"], float) and metrics["epochs"] == 1
    model = keras.models.load_model(out / "model.keras")
    recurrent = [layer.forward_layer for layer in model.layers if isinstance(layer, keras.layers.Bidirectional)]
    assert [type(layer) for layer in recurrent] == [keras.layers.SimpleRNN]
    assert recurrent[0].units == TINY["hidden_size"]
    assert not any(isinstance(layer, keras.layers.Dense) and layer.name.startswith("dense_") for layer in model.layers)
    # train.py's own model is not trained into the baseline's directory, nor the other way round.
    files = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(ValueError, match=r"this run's model was built by benchmarks.plain_baseline.build_plain_model, "
                                         r"this one's by train.py's own model \(models.transcription.build_model\)"):
        transcription.run(config)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == files
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config)))  # as train.py writes it
    with pytest.raises(ValueError, match=r"this run's model was built by train.py's own model \(models.transcription"
                                         r".build_model\), this one's by benchmarks.plain_baseline.build_plain_model"):
        transcription.run(config, model_builder=build_plain_model)


def test_the_files_a_run_writes_are_the_ones_a_directory_without_config_is_checked_for():
    from training.cli import RUN_FILES

    written = {transcription.METRICS_FILE, transcription.MODEL_FILE, transcription.VOCABULARY_FILE,
               transcription.FEATURE_CONFIG_FILE, transcription.BEST_WEIGHTS_FILE}
    assert written <= set(RUN_FILES)


def test_config_differences_compare_only_what_changes_training():
    config = transcription.Config(output_dir="runs/a", hidden_size=24)
    saved = json.loads(json.dumps(dataclasses.asdict(config)))
    assert config_differences(saved, config) == {}
    # Where the files are, where it runs, how it is decoded: the same training.
    elsewhere = {**saved, "output_dir": "runs/b", "cache_dir": "/tmp/c", "distribute": "mirrored",
                 "beam_width": 8, "candidates": "digits.txt", "candidate_warps": "0.9,1", "export": False}
    assert config_differences(elsewhere, config) == {}
    # A config.json written before a field existed holds that field's default.
    older = {k: v for k, v in saved.items() if k != "time_stretch"}
    assert config_differences(older, config) == {}
    assert config_differences(older, dataclasses.replace(config, time_stretch=0.3)) == {"time_stretch": (0.0, 0.3)}
    assert config_differences({**saved, "hidden_size": 16, "seed": 1}, config) == {
        "hidden_size": (16, 24), "seed": (1, 1234)}


def test_plain_baseline_rejects_flags_its_model_lacks():
    from benchmarks.plain_baseline import main

    with pytest.raises(SystemExit, match=r"no dropout, num_dense_layers; pass --dropout 0 --num-dense-layers 0"):
        main(["--dropout", "0.1", "--frequency-warp", "0"])
    with pytest.raises(SystemExit, match=r"no ema_momentum; pass no --ema-momentum"):
        main(["--dropout", "0", "--frequency-warp", "0", "--num-dense-layers", "0", "--ema-momentum", "0.9"])
    with pytest.raises(SystemExit, match=r"no dtype_policy; pass --dtype-policy float32"):
        main(["--dropout", "0", "--frequency-warp", "0", "--num-dense-layers", "0", "--dtype-policy", "mixed_bfloat16"])


class _WeightsEachStep(keras.callbacks.Callback):
    """The trainable weights after every step, and as the callbacks see them at each epoch's end."""

    def on_train_begin(self, logs=None):
        self.steps, self.epoch_ends = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([np.array(v) for v in self.model.trainable_weights])

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append((len(self.steps), [np.array(v) for v in self.model.trainable_weights], logs["val_cer"]))


def test_ema_weights_are_the_ones_validated_checkpointed_and_saved(tmp_path, fake_data):
    out = tmp_path / "run"
    config = transcription.Config(
        output_dir=str(out), epochs=3, ema_momentum=0.5, early_stopping_patience=100, **TINY
    )
    recorder = _WeightsEachStep()
    transcription.run(config, callbacks=[recorder])
    # The average by its definition, from the raw weights after each step.
    averages = []
    for weights in recorder.steps:
        averages.append(weights if not averages else [0.5 * a + 0.5 * w for a, w in zip(averages[-1], weights)])
    for steps, weights, _ in recorder.epoch_ends:
        for mine, expected in zip(weights, averages[steps - 1], strict=True):
            np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-6)
        assert max(np.abs(a - r).max() for a, r in zip(averages[steps - 1], recorder.steps[steps - 1])) > 1e-3
    # The checkpoint of the best epoch (the first with the lowest val_cer) is the model saved.
    rates = [rate for _, _, rate in recorder.epoch_ends]
    _, best, _ = recorder.epoch_ends[rates.index(min(rates))]
    saved = keras.models.load_model(out / "model.keras", compile=False)
    for mine, expected in zip(saved.trainable_weights, best, strict=True):
        np.testing.assert_allclose(np.array(mine), expected, rtol=1e-6)
    # It is placed before every callback that reads the weights.
    callbacks = transcription._callbacks(config, make_speech_data(train=16, validation=8), VOCABULARY, False)
    kinds = [type(c) for c in callbacks]
    swap = kinds.index(keras.callbacks.SwapEMAWeights)
    assert swap < kinds.index(ErrorRateCallback) < kinds.index(keras.callbacks.ModelCheckpoint)
    assert keras.callbacks.SwapEMAWeights not in map(type, transcription._callbacks(
        dataclasses.replace(config, ema_momentum=None), make_speech_data(train=16, validation=8), VOCABULARY, False
    ))


@pytest.mark.long
def test_a_tuning_runs_best_model_is_a_run_directory(tmp_path, fake_data):
    import glob

    from tuning.config import TuningConfig
    from tuning.run_search import run_search
    from tuning.tasks import tuning_task

    out = tmp_path / "tuned"
    tuning = TuningConfig(tuner="random", max_trials=1, max_epochs=2, min_hidden_size=24, max_hidden_size=24,
                          min_num_layers=1, max_num_layers=1)
    best = run_search(tuning_task("transcription"), transcription.Config(output_dir=str(out), **TINY), tuning)["best"]
    best_dir = out / "tuning" / "best"
    assert best["model"]["path"] == str(best_dir)
    assert sorted(os.listdir(best_dir)) == [
        "config.json", "feature_config.json", "metrics.json", "model.keras", "vocabulary.json"
    ]
    assert json.loads((best_dir / "metrics.json").read_text()) == best["metrics"]
    # What transcribe.py and serving.export_run load: the best trial's checkpoint, its config and features.
    model, vocabulary, feature_config = transcription.load_transcriber(str(best_dir))
    assert vocabulary == VOCABULARY and feature_config == FeatureConfig(n_mels=NUM_FEATURES)
    config = transcription.Config(**json.loads((best_dir / "config.json").read_text()))
    assert config.hidden_size == best["hyperparameters"]["hidden_size"] == 24
    assert config.learning_rate == best["hyperparameters"]["learning_rate"]
    checkpoint = transcription.build_model(config, num_features=NUM_FEATURES, vocabulary_size=VOCABULARY.size)
    [weights] = glob.glob(str(out / "tuning" / "search" / f"trial_{best['trial_id']}" / "checkpoint.weights.h5"))
    checkpoint.load_weights(weights)
    for saved, trial in zip(model.get_weights(), checkpoint.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, trial)
    # --init-from takes it as a finished run.
    transcription.warm_start(checkpoint, str(best_dir), feature_config=feature_config, vocabulary=VOCABULARY)


# An ensemble of runs: `train.py --task transcription --ensemble N`.
ENSEMBLE = {**TINY, "export": True, "epochs": 1}


@pytest.mark.long
def test_an_ensemble_run_trains_its_members_scores_them_together_and_exports_them_packed(
    tmp_path, fake_data, capsys
):
    import tensorflow as tf

    from models.ctc_decoding import ctc_decode_text
    from models.error_rates import error_rates
    from serving.export import read_metadata

    out = tmp_path / "ensemble"
    config = transcription.Config(output_dir=str(out), ensemble=2, **ENSEMBLE)
    metrics = transcription.run(config)

    members = [out / "members" / "seed_1234", out / "members" / "seed_1235"]
    weights = []
    for seed, member in zip((1234, 1235), members):
        saved = json.loads((member / "config.json").read_text())
        assert saved["seed"] == seed and saved["ensemble"] == 1 and saved["export"] is False
        assert not (member / "export").exists()
        weights.append(keras.models.load_model(member / "model.keras", compile=False).get_weights())
    assert not all(np.array_equal(a, b) for a, b in zip(*weights))  # two seeds, two models

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert json.loads((out / "config.json").read_text())["ensemble"] == 2
    assert saved["ensemble"] == 2 and saved["epochs"] == 2
    assert [m["seed"] for m in saved["members"]] == [1234, 1235]
    for entry, member in zip(saved["members"], members):
        assert entry["val_cer"] == json.loads((member / "metrics.json").read_text())["val_cer"]
    assert saved["utterances"] == {"train": 16, "validation": 8, "test": 8} and saved["skipped"] == 1
    assert Vocabulary.load(out / "vocabulary.json") == VOCABULARY

    # The export packs both members, and the ensemble's figures are the export's decoding.
    export = saved["export_dir"]
    assert export == str(out / "export" / "transcriber" / "1")
    metadata = read_metadata(export, task="transcription")
    assert metadata["ensemble_members"] == 2 and metadata["metrics"]["val_cer"] == saved["val_cer"]
    assert metadata["trained_on"]["ensemble"] == [
        {"dataset": saved["dataset"], "run_dir": str(member)} for member in members]
    from_features = tf.saved_model.load(export).signatures["from_features"]
    data = make_speech_data(train=16, validation=8, test=8)
    models = [keras.models.load_model(member / "model.keras", compile=False) for member in members]
    references, served = [], []
    for inputs, labels in data.validation:
        texts = from_features(features=inputs["features"], feature_length=inputs["feature_length"])["text"]
        served.extend(t.decode() for t in texts.numpy())
        references.extend(VOCABULARY.decode(row) for row in labels.numpy())
        # Each served text is one member's greedy hypothesis.
        singles = []
        for model in models:
            outputs = model(inputs, training=False)
            singles.append(ctc_decode_text(outputs["log_probs"], outputs["frame_length"], vocabulary=VOCABULARY))
        for row, text in enumerate(texts.numpy()):
            assert text.decode() in {single[row] for single in singles}

    assert saved["val_cer"] == pytest.approx(error_rates(references, served)["cer"])
    assert saved["val_utterances"] == 8 and isinstance(saved["test_cer"], float)
    assert "val_cer_beam" not in saved  # beam_width 2: the members' own figures have it, the ensemble's not
    assert all("val_cer_beam" in json.loads((m / "metrics.json").read_text()) for m in members)

    # serving.export_run takes the ensemble's directory for its members: the next version, the same texts.
    from serving import export_run

    assert export_run.main([str(out)]) == 0
    again = tf.saved_model.load(str(out / "export" / "transcriber" / "2")).signatures["from_features"]
    assert read_metadata(str(out / "export" / "transcriber" / "2"), task="transcription")["ensemble_members"] == 2
    inputs, _ = next(iter(data.validation))
    np.testing.assert_array_equal(again(**inputs)["text"].numpy(), from_features(**inputs)["text"].numpy())
    # transcribe.py given the directory names a member and the export.
    import transcribe

    with pytest.raises(SystemExit):
        transcribe.main(["--model-dir", str(out), "x.wav"])
    err = capsys.readouterr().err
    assert f"one member is a run directory, e.g. --model-dir {members[0]}" in err
    assert f"It has an export: use --model-dir {out / 'export' / 'transcriber' / '2'}" in err


class _InterruptSecondMember(keras.callbacks.Callback):
    """Simulates a kill in the second fit it is given to, after its first epoch."""

    def __init__(self):
        super().__init__()
        self.fits = 0

    def on_train_begin(self, logs=None):
        self.fits += 1

    def on_epoch_end(self, epoch, logs=None):
        if self.fits == 2:
            raise KeyboardInterrupt("simulated kill")


def test_an_ensemble_reuses_only_members_its_own_builder_made(tmp_path, fake_data):
    from benchmarks.plain_baseline import build_plain_model
    from training.transcription_ensemble import member_configs

    config = transcription.Config(output_dir=str(tmp_path / "ensemble"), ensemble=2, num_dense_layers=0,
                                  frequency_warp=0.0, **{**ENSEMBLE, "export": True})
    first, second = member_configs(config)
    # As benchmarks.plain_baseline --ensemble leaves its first member (finished), and a second of other settings.
    os.makedirs(first.output_dir)
    with open(os.path.join(first.output_dir, "config.json"), "w") as f:
        json.dump({**dataclasses.asdict(first), "model_builder": "benchmarks.plain_baseline.build_plain_model"}, f)
    os.makedirs(second.output_dir)
    with open(os.path.join(second.output_dir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(dataclasses.replace(second, hidden_size=8)), f)
    # train.py's own model does not reuse the baseline's member ...
    with pytest.raises(ValueError, match=r"seed_1234/config.json: this ensemble member's model was built by "
                                         r"benchmarks.plain_baseline.build_plain_model, this one's by train.py's own"):
        transcription.run(config)
    # ... the baseline's does (checked before anything is trained: the second member's settings stop it).
    with pytest.raises(ValueError, match=r"seed_1235/config.json: this ensemble member was made with other settings "
                                         r".*'hidden_size': \(8, "):
        transcription.run(config, model_builder=build_plain_model)


@pytest.mark.long
def test_a_killed_ensemble_run_resumes_reusing_its_finished_members(tmp_path, fake_data, capsys):
    out = tmp_path / "ensemble"
    texts, path = _closed_texts(tmp_path)
    config = transcription.Config(output_dir=str(out), ensemble=2, candidates=str(path), **{**ENSEMBLE, "epochs": 2})
    with pytest.raises(KeyboardInterrupt):
        transcription.run(config, callbacks=[_InterruptSecondMember()])
    first, second = out / "members" / "seed_1234", out / "members" / "seed_1235"
    assert (first / "metrics.json").exists() and (second / "backup" / "training_metadata.json").exists()
    trained = (first / "model.keras").stat().st_mtime_ns

    capsys.readouterr()
    recorder = _EpochRecorder()
    metrics = transcription.run(config, callbacks=[recorder])
    printed = capsys.readouterr().out
    assert f"Ensemble member 1/2 (seed 1234) in {first}: already trained, reused" in printed
    assert (first / "model.keras").stat().st_mtime_ns == trained  # not trained again
    assert recorder.epochs == [1]  # the second member's epoch 2 of 2 only
    assert [m["epochs"] for m in metrics["members"]] == [2, 2]
    assert not (second / "backup").exists() and metrics["export_dir"] is not None

    # --candidates: closed-vocabulary decoding of the members' mean probability, scored and served.
    import tensorflow as tf

    from models.ctc_decoding import ctc_choose_text
    from models.error_rates import error_rates

    assert all("val_wer_closed" in member for member in metrics["members"])
    models = [keras.models.load_model(d / "model.keras", compile=False) for d in (first, second)]
    serve = tf.saved_model.load(metrics["export_dir"]).signatures["from_features"]
    references, chosen, served = [], [], []
    for inputs, labels in make_speech_data(train=16, validation=8, test=8).validation:
        outputs = [model.predict_on_batch(inputs) for model in models]
        mean = np.logaddexp(outputs[0]["log_probs"], outputs[1]["log_probs"]) - np.log(2.0)
        chosen.extend(ctc_choose_text(mean, outputs[0]["frame_length"], texts, vocabulary=VOCABULARY)[0])
        served.extend(t.decode() for t in serve(**inputs)["text"].numpy())
        references.extend(VOCABULARY.decode(row) for row in labels.numpy())
    assert metrics["val_wer_closed"] == pytest.approx(error_rates(references, chosen)["wer"])
    assert served == chosen

    # The same command with test-time warps: the members are reused (decoding flags do not make
    # them other runs), and the ensemble's choice averages the members' mean probability over warps.
    capsys.readouterr()
    warped = transcription.run(dataclasses.replace(config, candidate_warps="0.8,1.25"))
    printed = capsys.readouterr().out
    assert printed.count("already trained, reused") == 2
    assert (first / "model.keras").stat().st_mtime_ns == trained
    serve = tf.saved_model.load(warped["export_dir"]).signatures["from_features"]
    references, chosen, served = [], [], []
    for inputs, labels in make_speech_data(train=16, validation=8, test=8).validation:
        chosen.extend(_warped_choices(models, inputs, texts, (0.8, 1.25)))
        served.extend(t.decode() for t in serve(**inputs)["text"].numpy())
        references.extend(VOCABULARY.decode(row) for row in labels.numpy())
    assert warped["val_wer_closed"] == pytest.approx(error_rates(references, chosen)["wer"])
    assert served == chosen

    # The same command once more would export the same members unchanged: refused, nothing written
    # (a finished single run is refused too); another cache directory or beam width is the same command.
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    for same in (dataclasses.replace(config, candidate_warps="0.8,1.25"),
                 dataclasses.replace(config, candidate_warps="0.8,1.25", cache_dir=str(tmp_path / "cache"),
                                     beam_width=4)):
        with pytest.raises(ValueError) as error:
            transcription.run(same)
        assert str(error.value).startswith(f"{out} holds a finished ensemble of this command "
                                           f"({out / 'metrics.json'}: 4 epochs, val_cer ")
        assert f"`python -m serving.export_run {out}` to export them again" in str(error.value)
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    assert sorted(os.listdir(out / "export" / "transcriber")) == ["1", "2"]
    # The same --candidates file edited since is another command: it goes on (checked, not run here).
    from training.transcription_ensemble import _check_not_finished, member_configs

    same = dataclasses.replace(config, candidate_warps="0.8,1.25")
    earlier = json.loads((out / "config.json").read_text())
    members = member_configs(same)
    with pytest.raises(ValueError, match="holds a finished ensemble"):
        _check_not_finished(str(out), earlier, same, members, transcription.read_candidates(same))
    path.write_text("\n".join(texts[:-1]) + "\n", encoding="utf-8")
    assert _check_not_finished(str(out), earlier, same, members, transcription.read_candidates(same)) is None


def test_an_ensemble_member_made_with_other_flags_stops_the_run_and_is_kept(tmp_path, fake_data):
    out = tmp_path / "ensemble"
    other = transcription.Config(output_dir=str(out / "members" / "seed_1235"), **{**TINY, "hidden_size": 16})
    transcription.run(dataclasses.replace(other, epochs=1))
    before = {p.name: p.stat().st_mtime_ns for p in (out / "members" / "seed_1235").iterdir()}
    config = transcription.Config(output_dir=str(out), ensemble=2, **ENSEMBLE)
    with pytest.raises(ValueError) as error:
        transcription.run(config)
    message = str(error.value)
    assert str(out / "members" / "seed_1235" / "config.json") in message
    assert "'hidden_size': (16, 24)" in message and "'epochs': (1, 1)" not in message
    assert not (out / "members" / "seed_1234").exists()  # checked before anything was trained
    assert {p.name: p.stat().st_mtime_ns for p in (out / "members" / "seed_1235").iterdir()} == before


def test_ensemble_settings_are_checked(capsys):
    with pytest.raises(ValueError, match=r"`ensemble` \(--ensemble\), expected a positive integer, got 0"):
        transcription.Config(ensemble=0)
    with pytest.raises(ValueError, match=r"expected 1 with --no-export .* got 2"):
        transcription.Config(ensemble=2, export=False)
    with pytest.raises(ValueError, match=r"expected 1 with --overwrite \(an ensemble reuses its finished members: "
                                         r"remove a member's directory, OUTPUT_DIR/members/seed_S, to train it again\), got 2"):
        transcription.Config(ensemble=2, overwrite=True)
    assert train.parse_args(["--ensemble", "3"])[1].ensemble == 3
    with pytest.raises(SystemExit):
        train.parse_args(["--ensemble", "2", "--tune"])
    assert "--ensemble" in capsys.readouterr().err


def _closed_texts(tmp_path):
    from tests.transcription_fixtures import WORDS

    texts = [*WORDS, *(f"{a} {b}" for a in WORDS for b in WORDS)]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return texts, path


def test_candidates_score_closed_vocabulary_decoding_and_the_export_serves_it(tmp_path, fake_data, capsys):
    import tensorflow as tf

    from models.ctc_decoding import ctc_choose_text
    from models.error_rates import error_rates
    from serving.export import read_metadata

    texts, path = _closed_texts(tmp_path)
    out = tmp_path / "run"
    config = transcription.Config(output_dir=str(out), epochs=3, candidates=str(path), **{**TINY, "export": True})
    metrics = transcription.run(config)
    assert f"closed vocabulary ({len(texts)} texts): CER" in capsys.readouterr().out

    model = keras.models.load_model(out / "model.keras", compile=False)
    serve = tf.saved_model.load(metrics["export_dir"]).signatures["from_features"]
    data = make_speech_data(train=16, validation=8, test=8)
    for prefix, dataset in (("val", data.validation), ("test", data.test)):
        references, chosen, served = [], [], []
        for inputs, labels in dataset:
            outputs = model.predict_on_batch(inputs)
            chosen.extend(ctc_choose_text(outputs["log_probs"], outputs["frame_length"], texts,
                                          vocabulary=VOCABULARY)[0])
            served.extend(t.decode() for t in serve(**inputs)["text"].numpy())
            references.extend(VOCABULARY.decode(row) for row in labels.numpy())
        rates = error_rates(references, chosen)
        assert metrics[f"{prefix}_cer_closed"] == pytest.approx(rates["cer"])
        assert metrics[f"{prefix}_wer_closed"] == pytest.approx(rates["wer"])
        assert set(chosen) <= set(texts) | {""}
        assert served == chosen  # the export's text is the same choice
    assert read_metadata(metrics["export_dir"], task="transcription")["candidates"] == texts


def _warped_choices(models, inputs, texts, warps):
    """The closed-vocabulary choice by the mean likelihood over warps, computed here: for each
    factor the features are warped, the models' mean probability scored, and the candidates'
    likelihoods averaged over the factors in NumPy."""
    from models.ctc_decoding import ctc_choose_text
    from models.frequency_warp import warp_bands

    features = np.asarray(inputs["features"])
    likelihoods = []
    for alpha in warps:
        warped = {**inputs, "features": np.asarray(warp_bands(features, np.full((len(features), 1), alpha, "float32")))}
        outputs = [model.predict_on_batch(warped) for model in models]
        log_probs = np.logaddexp.reduce([o["log_probs"] for o in outputs], axis=0) - np.log(len(models))
        nll = ctc_choose_text(log_probs, outputs[0]["frame_length"], texts, vocabulary=VOCABULARY)[1]
        likelihoods.append(np.exp(-np.asarray(nll, np.float64)))
    mean = np.mean(likelihoods, axis=0)
    return [texts[int(np.argmax(row))] if row.max() > 0 else "" for row in mean]


def test_candidate_warps_score_and_serve_the_mean_likelihood_over_warps(tmp_path, fake_data, capsys):
    import tensorflow as tf

    from models.ctc_decoding import ctc_choose_text
    from models.error_rates import error_rates
    from serving.export import read_metadata

    texts, path = _closed_texts(tmp_path)
    out = tmp_path / "run"
    warps = (0.8, 1.0, 1.25)
    config = transcription.Config(output_dir=str(out), epochs=3, candidates=str(path), candidate_warps="0.8,1,1.25",
                                  **{**TINY, "export": True})
    metrics = transcription.run(config)
    assert f"closed vocabulary ({len(texts)} texts, mean over warps [0.8, 1.0, 1.25]): CER" in capsys.readouterr().out

    model = keras.models.load_model(out / "model.keras", compile=False)
    serve = tf.saved_model.load(metrics["export_dir"]).signatures["from_features"]
    data = make_speech_data(train=16, validation=8, test=8)
    unwarped_differs = False
    for prefix, dataset in (("val", data.validation), ("test", data.test)):
        references, chosen, served = [], [], []
        for inputs, labels in dataset:
            batch = _warped_choices([model], inputs, texts, warps)
            outputs = model.predict_on_batch(inputs)
            plain = ctc_choose_text(outputs["log_probs"], outputs["frame_length"], texts, vocabulary=VOCABULARY)[0]
            unwarped_differs |= batch != plain
            chosen.extend(batch)
            served.extend(t.decode() for t in serve(**inputs)["text"].numpy())
            references.extend(VOCABULARY.decode(row) for row in labels.numpy())
        rates = error_rates(references, chosen)
        assert metrics[f"{prefix}_cer_closed"] == pytest.approx(rates["cer"])
        assert metrics[f"{prefix}_wer_closed"] == pytest.approx(rates["wer"])
        assert served == chosen  # the export averages over the same warps
    assert unwarped_differs  # so the figures above could not come from the unwarped choice
    metadata = read_metadata(metrics["export_dir"], task="transcription")
    assert metadata["candidate_warps"] == list(warps) and metadata["config"]["candidate_warps"] == "0.8,1,1.25"


@pytest.mark.parametrize("changes, message", [
    (dict(candidate_warps="0.9,1.1"), r"`candidate_warps` \(--candidate-warps\), expected None without --candidates"),
    (dict(candidates="t.txt", candidate_warps="0.9,0.9"), "expected comma-separated distinct factors in"),
    (dict(candidates="t.txt", candidate_warps="0.9,x"), "expected comma-separated distinct factors in"),
    (dict(candidates="t.txt", candidate_warps="2"), "expected comma-separated distinct factors in"),
    (dict(candidates="t.txt", candidate_warps="0.9,1", feature_kind="mfcc"), "None with --feature-kind mfcc"),
])
def test_candidate_warps_are_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        transcription.Config(**changes)


def test_a_bad_candidates_file_stops_the_run_before_it_starts(tmp_path, fake_data):
    bad = tmp_path / "bad.txt"
    bad.write_text("ab\nzwei 2\n", encoding="utf-8")
    for ensemble in (1, 2):
        out = tmp_path / f"run{ensemble}"
        config = transcription.Config(output_dir=str(out), ensemble=ensemble, candidates=str(bad),
                                      **{**TINY, "export": True})
        with pytest.raises(ValueError, match=rf"--candidates {bad}: .*every candidate must be .*'zwei 2'"):
            transcription.run(config)
        assert not out.exists() and not fake_data  # before any file or data
    missing = tmp_path / "missing.txt"
    config = transcription.Config(output_dir=str(tmp_path / "run"), candidates=str(missing), **TINY)
    with pytest.raises(ValueError, match=f"Candidates file '{missing}' cannot be read"):
        transcription.run(config)



def test_a_bad_candidates_file_is_a_usage_error_on_the_command_line(tmp_path, capsys):
    missing = tmp_path / "missing.txt"
    for tune in ([], ["--tune"]):
        with pytest.raises(SystemExit) as exit_info:
            train.parse_args(["--candidates", str(missing), *tune])
        assert exit_info.value.code == 2
        assert f"Candidates file '{missing}' cannot be read" in capsys.readouterr().err


def test_train_py_ends_with_the_commands_that_use_the_run(tmp_path):
    single = transcription.Config(output_dir="runs/my run")
    export = "runs/my run/export/transcriber/1"
    serve = ("  python -m serving --model_name=transcriber --model_base_path='runs/my run/export/transcriber' "
             "--rest_api_port=8501    # TF Serving's REST API")
    # A WAV file to try the model on, made offline (`data.say`, the corpus's voices).
    say = '  python -m data.say "what say you to this" FILE.wav    # speech to try it on (or your own wav/flac)'
    assert train.next_steps("transcription", single, {"export_dir": export}).splitlines() == [
        "Next:", say, "  python transcribe.py --model-dir 'runs/my run' FILE.wav", serve]
    # Without an export only the run directory; an ensemble exists only as its export.
    assert train.next_steps("transcription", single, {"export_dir": None}).splitlines() == [
        "Next:", say, "  python transcribe.py --model-dir 'runs/my run' FILE.wav"]
    ensemble = dataclasses.replace(single, ensemble=2)
    assert train.next_steps("transcription", ensemble, {"export_dir": export}).splitlines() == [
        "Next:", say, f"  python transcribe.py --model-dir '{export}' FILE.wav", serve]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_precision_run_trains_saves_and_exports(tmp_path, fake_data, policy):
    """`--dtype-policy mixed_*`: the dense and recurrent layers compute in 16
    bits on the fused path with float32 weights; the front end, the logits
    and the CTC loss stay float32; the saved model keeps the policy and the
    export serves what the saved model decodes."""
    import tensorflow as tf

    from models.ctc_decoding import ctc_decode_text

    out = tmp_path / "run"
    config = transcription.Config(output_dir=str(out), epochs=3, dtype_policy=policy, **{**TINY, "export": True})
    recorder = _EpochRecorder()
    metrics = transcription.run(config, callbacks=[recorder])
    assert json.loads((out / "config.json").read_text())["dtype_policy"] == policy
    losses = [logs["loss"] for logs in recorder.logs]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses

    model = keras.models.load_model(out / "model.keras", compile=False)
    assert model.get_layer("dense_0").dtype_policy.name == policy
    rnn = model.get_layer("rnn_0")
    assert rnn.dtype_policy.name == policy and rnn.forward_layer.fused_reason is None
    for name in ("frequency_warp", "frame_stacking", "logits", "log_probs"):
        assert model.get_layer(name).dtype_policy.name == "float32", name
    assert all(w.dtype == "float32" for w in model.weights)

    serve = tf.saved_model.load(metrics["export_dir"]).signatures["from_features"]
    data = make_speech_data(train=16, validation=8, test=8)
    for inputs, _ in data.validation:
        outputs = model.predict_on_batch(inputs)
        assert outputs["log_probs"].dtype == np.float32
        served = serve(**inputs)
        assert served["log_probs"].dtype == tf.float32
        np.testing.assert_array_equal(served["frame_length"], outputs["frame_length"])
        # The two graphs round the same model apart by float32 ulps, which a
        # 16-bit cast can turn into one 16-bit ulp of a layer's output
        # (measured: 0.16 of the 16-bit epsilon, relative, in both policies).
        epsilon = {"mixed_bfloat16": 2.0**-7, "mixed_float16": 2.0**-10}[policy]
        difference = np.abs(served["log_probs"].numpy() - outputs["log_probs"]).max()
        assert difference <= epsilon * np.abs(outputs["log_probs"]).max(), difference
        texts = ctc_decode_text(served["log_probs"], served["frame_length"], vocabulary=VOCABULARY)
        assert [t.decode() for t in served["text"].numpy()] == texts


def test_a_float16_transcription_model_trains_with_loss_scaling():
    """Keras scales the CTC loss of a mixed_float16 model (float16 gradients
    underflow); the other policies keep the plain optimizer."""
    for policy, expected in (("mixed_float16", "LossScaleOptimizer"), ("mixed_bfloat16", "Adam"), ("float32", "Adam")):
        model = transcription.build_model(transcription.Config(dtype_policy=policy, **TINY),
                                          num_features=NUM_FEATURES, vocabulary_size=VOCABULARY.size)
        assert type(model.optimizer).__name__ == expected, policy
        assert model.dtype_policy.name == policy


def _hand_made_member(member, metrics):
    """A finished ensemble member in `member.output_dir` without training: an untrained model of
    `member`'s settings, its config.json and the given metrics.json."""
    from training.cli import write_json

    keras.utils.set_random_seed(member.seed)
    model = transcription.build_model(member, num_features=NUM_FEATURES, vocabulary_size=VOCABULARY.size)
    transcription.save_transcriber(member.output_dir, model, VOCABULARY, FeatureConfig(n_mels=NUM_FEATURES))
    write_json(os.path.join(member.output_dir, "config.json"), transcription.config_to_dict(member))
    write_json(os.path.join(member.output_dir, "metrics.json"), {"epochs": 1, "train_seconds": 1.0, **metrics})
    keras.backend.clear_session()


@pytest.mark.long
def test_an_ensembles_member_figures_are_of_its_own_closed_vocabulary(tmp_path, fake_data):
    from models.transcription_evaluation import evaluate_closed_vocabulary, outputs_function
    from training.transcription_ensemble import member_configs

    from tests.transcription_fixtures import WORDS

    texts, path, other = list(WORDS), tmp_path / "texts.txt", tmp_path / "other.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    other.write_text("ab\nba\n", encoding="utf-8")
    config = transcription.Config(output_dir=str(tmp_path / "ensemble"), ensemble=2, candidates=str(path), **ENSEMBLE)
    members = member_configs(config)
    # Finished by the same command with --candidates other.txt (a decoding flag: they are reused).
    marked = {f"{split}_{rate}_closed": 0.125 for split in ("val", "test") for rate in ("cer", "wer")}
    for member in members:
        _hand_made_member(dataclasses.replace(member, candidates=str(other)),
                          {"val_cer": 0.5, "val_wer": 0.5, "test_cer": 0.5, "test_wer": 0.5, **marked})
    metrics = transcription.run(config)
    data = make_speech_data(train=16, validation=8, test=8)
    for entry, member in zip(metrics["members"], members):
        model = keras.models.load_model(os.path.join(member.output_dir, "model.keras"), compile=False)
        for split, dataset in (("val", data.validation), ("test", data.test)):
            closed = evaluate_closed_vocabulary(outputs_function(model), dataset, texts, vocabulary=VOCABULARY)
            assert entry[f"{split}_wer_closed"] == pytest.approx(closed["wer"]), (split, entry)
            assert entry[f"{split}_cer_closed"] == pytest.approx(closed["cer"]), (split, entry)
        assert entry["val_cer"] == 0.5  # the greedy figures are the member's own


def test_an_ensemble_member_without_its_model_stops_the_run_before_anything_is_trained(tmp_path, fake_data):
    from training.transcription_ensemble import member_configs

    config = transcription.Config(output_dir=str(tmp_path / "ensemble"), ensemble=2, **ENSEMBLE)
    first, second = member_configs(config)
    _hand_made_member(second, {"val_cer": 0.5, "val_wer": 0.5})
    os.remove(os.path.join(second.output_dir, "model.keras"))
    with pytest.raises(ValueError) as error:
        transcription.run(config)
    message = str(error.value)
    assert message.startswith(f"{second.output_dir} holds metrics.json but no model.keras")
    assert f"remove {second.output_dir} to train this member again" in message
    assert "--overwrite" not in message.replace("(--overwrite does not combine with --ensemble)", "")
    assert not os.path.exists(first.output_dir)  # checked before anything was trained

"""An ensemble of transcription runs packed into one SavedModel (`serving.export_run RUN RUN ...`)."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.ctc_decoding import ctc_choose_text
from models.ctc_loss import ctc_loss
from models.transcription import build_transcription_model
from pipelines.audio_features import FeatureConfig, compute_features
from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary
from serving.export import read_metadata
from serving.export_run import export_run, main
from serving.warmup import replay_warmup_requests
from tests.test_log_mel import synthetic_utterance

CONFIG = FeatureConfig(n_mels=40)


def _write_run(run_dir, seed, vocabulary, feature_config=CONFIG, frame_stack=3):
    """A finished run's files, as train.py leaves them, with an untrained model."""
    os.makedirs(run_dir)
    keras.utils.set_random_seed(seed)
    model = build_transcription_model(
        num_features=feature_config.n_features, vocabulary_size=vocabulary.size,
        hidden_size=16, num_layers=1, frame_stack=frame_stack)
    model.save(os.path.join(run_dir, "model.keras"))
    vocabulary.save(os.path.join(run_dir, "vocabulary.json"))
    for name, values in (("feature_config.json", feature_config.to_dict()),
                         ("config.json", {"dataset": f"synthetic:seed={seed}", "frame_stack": frame_stack}),
                         ("metrics.json", {"val_cer": 0.5 + seed / 100, "history": {"loss": [1.0]}})):
        with open(os.path.join(run_dir, name), "w", encoding="utf-8") as f:
            json.dump(values, f)
    return run_dir


@pytest.fixture(scope="module")
def vocabulary():
    return Vocabulary(SPEECH_ALPHABET)


@pytest.fixture(scope="module")
def runs(vocabulary, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return [_write_run(str(base / f"seed{seed}"), seed, vocabulary) for seed in (1, 2)]


@pytest.fixture(scope="module")
def packed(runs, tmp_path_factory):
    return export_run(runs, str(tmp_path_factory.mktemp("ensemble")))


@pytest.fixture(scope="module")
def features():
    """24 utterances' librosa features, padded, and their lengths."""
    rng = np.random.default_rng(7)
    feats = [compute_features(synthetic_utterance(200 + i, CONFIG.sample_rate, rng.uniform(0.4, 2.0)), CONFIG)
             for i in range(24)]
    batch = np.zeros((len(feats), max(len(f) for f in feats), CONFIG.n_features), np.float32)
    for row, f in enumerate(feats):
        batch[row, : len(f)] = f
    return batch, np.array([len(f) for f in feats], np.int32)


def _greedy_ids(log_probs, blank_id):
    """Best path, repeats merged, blanks dropped (NumPy, independent of the export's decoder)."""
    path = log_probs.argmax(-1)
    return [int(c) for i, c in enumerate(path) if c != blank_id and (i == 0 or c != path[i - 1])]


def test_packed_ensemble_averages_probabilities_and_picks_the_best_scored_hypothesis(
        runs, packed, features, vocabulary):
    batch, lengths = features
    members = [keras.saving.load_model(os.path.join(run, "model.keras")) for run in runs]
    outputs = [member({"features": batch, "feature_length": lengths}, training=False) for member in members]
    log_probs = [np.asarray(out["log_probs"]) for out in outputs]
    frame_length = np.asarray(outputs[0]["frame_length"])

    served = tf.saved_model.load(packed).signatures["from_features"](
        features=tf.constant(batch), feature_length=tf.constant(lengths))
    np.testing.assert_array_equal(served["frame_length"].numpy(), frame_length)
    mean = np.log((np.exp(log_probs[0]) + np.exp(log_probs[1])) / 2)
    for row, n in enumerate(frame_length):
        np.testing.assert_allclose(served["log_probs"].numpy()[row, :n], mean[row, :n], atol=1e-5)

    picked_from = []
    for row, n in enumerate(frame_length):
        hypotheses = [_greedy_ids(lp[row, :n], vocabulary.blank_id) for lp in log_probs]
        costs = []
        for ids in hypotheses:
            labels = np.full((1, max(1, len(ids))), vocabulary.pad_id, np.int32)
            labels[0, : len(ids)] = ids
            costs.append(sum(float(ctc_loss(labels, lp[row : row + 1, :n], np.array([n]), vocabulary=vocabulary)[0])
                             for lp in log_probs))
        best = int(np.argmin(costs))
        expected = " ".join(vocabulary.decode(hypotheses[best]).split())
        assert served["text"].numpy()[row].decode() == expected, (row, costs)
        if hypotheses[0] != hypotheses[1]:
            picked_from.append(best)
    # The members disagree, and each wins somewhere: the choice is made per utterance.
    assert set(picked_from) == {0, 1}, picked_from


def test_closed_vocabulary_decoding_reads_the_mean_probability(packed, features, vocabulary):
    batch, lengths = features
    served = tf.saved_model.load(packed).signatures["from_features"](
        features=tf.constant(batch[:4]), feature_length=tf.constant(lengths[:4]))
    texts, scores = ctc_choose_text(served["log_probs"], served["frame_length"], ["ab", "cab"], vocabulary=vocabulary)
    assert scores.shape == (4, 2) and np.isfinite(scores).all()
    assert texts == [["ab", "cab"][i] for i in scores.argmin(1)]


def test_waveform_signature_serves_the_ensemble(packed):
    waveform = synthetic_utterance(300, CONFIG.sample_rate, 1.0)[None].astype(np.float32)
    loaded = tf.saved_model.load(packed)
    out = loaded.signatures["serving_default"](
        waveform=tf.constant(waveform), waveform_length=tf.constant([waveform.shape[1]], tf.int32))
    assert out["text"].shape == (1,)
    np.testing.assert_allclose(np.exp(out["log_probs"].numpy()).sum(-1), 1.0, atol=1e-5)
    # TF Serving runs the export's warmup requests at load: they must pass.
    assert replay_warmup_requests(packed, loaded.signatures) == 2


def test_metadata_names_the_members(runs, packed):
    metadata = read_metadata(packed)
    assert metadata["ensemble_members"] == 2
    assert "ensemble of 2 models" in metadata["decoding"]
    assert [m["run_dir"] for m in metadata["trained_on"]["ensemble"]] == [os.path.abspath(r) for r in runs]
    assert [m["dataset"] for m in metadata["trained_on"]["ensemble"]] == ["synthetic:seed=1", "synthetic:seed=2"]
    assert [m["val_cer"] for m in metadata["metrics"]["members"]] == [0.51, 0.52]
    assert "history" not in metadata["metrics"]["members"][0]


def test_members_must_agree(runs, vocabulary, tmp_path):
    other = _write_run(str(tmp_path / "mfcc"), 3, vocabulary, feature_config=FeatureConfig(n_mels=32))
    (tmp_path / "mfcc" / "model.keras").write_bytes(b"not a model")  # the checks come before any loading
    with pytest.raises(SystemExit, match=r"mfcc: feature_config.json field 'n_mels' is 32, but 40"):
        export_run([runs[0], other], str(tmp_path / "out"))
    letters = _write_run(str(tmp_path / "letters"), 5, Vocabulary("abc "))
    with pytest.raises(SystemExit, match=r"letters: its vocabulary.json differs from .*seed1's \(characters "
                                         r"\"'defghijklmnopqrstuvwxyz\" only in the first's\); an ensemble's members need one vocabulary"):
        export_run([runs[0], letters], str(tmp_path / "out"))
    reordered = _write_run(str(tmp_path / "reordered"), 6, Vocabulary("".join(reversed(vocabulary.characters))))
    with pytest.raises(SystemExit, match=r"reordered: .* \(the same characters in another order"):
        export_run([runs[0], reordered], str(tmp_path / "out"))
    stacked = _write_run(str(tmp_path / "stack2"), 4, vocabulary, frame_stack=2)
    with pytest.raises(SystemExit, match=r"stack2: config.json field 'frame_stack' is 2, but 3"):
        export_run([runs[0], stacked], str(tmp_path / "out"))
    untyped = tmp_path / "no_features"
    shutil.copytree(runs[1], untyped)
    os.remove(untyped / "feature_config.json")
    with pytest.raises(SystemExit, match="no_features has no feature_config.json: only transcription runs"):
        export_run([runs[0], str(untyped)], str(tmp_path / "out"))
    with pytest.raises(SystemExit, match="needs --export_base"):
        main(runs)  # the command line: several runs, no --export_base
    assert not os.path.exists(tmp_path / "out")

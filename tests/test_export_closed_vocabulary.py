"""Closed-vocabulary decoding inside the transcriber export (`serving.export_run ... --candidates FILE`)."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from models.ctc_decoding import candidate_labels, candidate_nll, ctc_choose_text, ctc_decode_text
from pipelines.vocabulary import Vocabulary
from serving.export import read_metadata
from serving.export_run import export_run, main
from tests.test_export_ensemble import CONFIG, _write_run, features, runs, vocabulary  # noqa: F401 (fixtures)
from tests.test_log_mel import synthetic_utterance

# Short and long texts: "abcabcabcabcabc" needs more frames than the shorter utterances have.
CANDIDATES = ["a", "ab", "cab", "bead", "abcabcabcabcabc"]


@pytest.fixture(scope="module")
def closed(runs, tmp_path_factory):
    return export_run(runs[0], str(tmp_path_factory.mktemp("closed")), CANDIDATES)


@pytest.fixture(scope="module")
def closed_ensemble(runs, tmp_path_factory):
    return export_run(runs, str(tmp_path_factory.mktemp("closed_ensemble")), CANDIDATES)


def _serve(export, batch, lengths):
    return tf.saved_model.load(export).signatures["from_features"](
        features=tf.constant(batch), feature_length=tf.constant(lengths))


@pytest.mark.parametrize("export", ["closed", "closed_ensemble"])
def test_served_text_is_the_closed_vocabulary_choice(export, request, features, vocabulary):
    batch, lengths = features
    lengths = lengths.copy()
    lengths[0] = 3  # one stacked frame: too short for every candidate but "a"
    lengths[1] = 0  # no frame at all: no candidate fits
    served = _serve(request.getfixturevalue(export), batch, lengths)
    log_probs, frame_length = served["log_probs"].numpy(), served["frame_length"].numpy()
    texts = [t.decode() for t in served["text"].numpy()]
    expected, scores = ctc_choose_text(log_probs, frame_length, CANDIDATES, vocabulary=vocabulary)
    assert texts == expected
    assert texts[0] == "a" and texts[1] == ""
    assert np.isinf(scores[1]).all() and np.isfinite(scores[0]).sum() == 1
    assert set(texts[2:]) <= set(CANDIDATES) and len(set(texts[2:])) >= 2  # a choice per utterance
    # Greedy decoding of the same outputs spells freely (an untrained model): the export did not.
    greedy = ctc_decode_text(log_probs, frame_length, vocabulary=vocabulary)
    assert any(g not in CANDIDATES for g in greedy)


def test_candidate_nll_in_a_graph_equals_eager(features, vocabulary):
    rng = np.random.default_rng(3)
    log_probs = tf.nn.log_softmax(rng.normal(size=(5, 12, vocabulary.size)).astype(np.float32)).numpy()
    frame_length = np.array([12, 9, 4, 1, 0], np.int32)
    labels = candidate_labels(CANDIDATES, vocabulary=vocabulary)
    eager = np.asarray(candidate_nll(log_probs, frame_length, labels, vocabulary=vocabulary))
    traced = tf.function(lambda lp, n: candidate_nll(lp, n, tf.constant(labels), vocabulary=vocabulary),
                         input_signature=[tf.TensorSpec((None, None, vocabulary.size)), tf.TensorSpec((None,), tf.int32)])
    np.testing.assert_allclose(traced(log_probs, frame_length).numpy(), eager, rtol=1e-6)
    # "bead" (4 characters) fits 4 frames, "abcabc..." (15) fits none of them; nothing fits 0 frames.
    assert np.isfinite(eager[2, 3]) and np.isinf(eager[:, 4]).all() and np.isinf(eager[4]).all()
    # A one-character candidate over one frame: minus the log-probability of that character there.
    np.testing.assert_allclose(eager[3, 0], -log_probs[3, 0, vocabulary.encode("a")[0]], rtol=1e-5)


def test_waveform_signature_decodes_with_the_closed_vocabulary(closed):
    waveform = synthetic_utterance(301, CONFIG.sample_rate, 1.0)[None].astype(np.float32)
    out = tf.saved_model.load(closed).signatures["serving_default"](
        waveform=tf.constant(waveform), waveform_length=tf.constant([waveform.shape[1]], tf.int32))
    assert out["text"].numpy()[0].decode() in CANDIDATES


def test_metadata_lists_the_candidates(closed, closed_ensemble, runs, tmp_path):
    single, packed = read_metadata(closed), read_metadata(closed_ensemble)
    assert single["candidates"] == CANDIDATES and packed["candidates"] == CANDIDATES
    assert single["decoding"].startswith("closed vocabulary: text is the one of the 5 texts")
    assert "mean probability" in packed["decoding"] and packed["ensemble_members"] == 2
    plain = read_metadata(export_run(runs[0], str(tmp_path / "plain")))
    assert plain["candidates"] is None and plain["decoding"].startswith("greedy CTC")


def test_command_line_reads_and_checks_the_candidates_file(runs, tmp_path, capsys):
    good = tmp_path / "words.txt"
    good.write_text("Bead\n\ncab\nbead\n", encoding="utf-8")  # normalised, blank and repeated lines dropped
    assert main([runs[0], "--export_base", str(tmp_path / "out"), "--candidates", str(good)]) == 0
    version = capsys.readouterr().out.strip()
    assert version == str(tmp_path / "out" / "transcriber" / "1")
    assert read_metadata(version)["candidates"] == ["bead", "cab"]

    bad = tmp_path / "digits.txt"
    bad.write_text("zero\none\n", encoding="utf-8")
    letters = _write_run(str(tmp_path / "letters"), 5, Vocabulary("abc "))
    with pytest.raises(SystemExit) as exit_info:
        main([letters, "--candidates", str(bad)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert f"--candidates {bad}" in message and "vocabulary's characters 'abc '" in message and "'zero'" in message
    with pytest.raises(SystemExit):
        main([runs[0], "--candidates", str(tmp_path / "missing.txt")])
    assert "cannot be read" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(letters, "export"))


def test_language_model_runs_refuse_candidates(runs, tmp_path):
    untyped = tmp_path / "lm_like"
    shutil.copytree(runs[1], untyped)
    os.remove(untyped / "feature_config.json")
    with pytest.raises(SystemExit, match="lm_like is a language-model run .* for transcription runs"):
        export_run(str(untyped), candidates=["ab"])
    words = tmp_path / "words.txt"
    words.write_text("ab\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="lm_like is a language-model run"):
        main([str(untyped), "--candidates", str(words)])
    assert not os.path.exists(untyped / "export")

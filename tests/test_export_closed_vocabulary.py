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
from serving.warmup import replay_warmup_requests
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


# ---- test-time warps (--candidate_warps) ---------------------------------------------------------

WARPS = [0.9, 1.0, 1.1]


@pytest.fixture(scope="module")
def warped(runs, tmp_path_factory):
    return export_run(runs[0], str(tmp_path_factory.mktemp("warped")), CANDIDATES, WARPS)


def _expected_warped_choice(plain_export, batch, lengths, warps, vocabulary):
    """The mean-likelihood choice computed outside the export: the plain export's
    log_probs on each warped copy of the features, scored and combined in NumPy."""
    from models.frequency_warp import warp_bands

    labels = candidate_labels(CANDIDATES, vocabulary=vocabulary)
    scores = []
    for alpha in warps:
        warped_batch = np.asarray(warp_bands(batch, np.full((len(batch), 1), alpha, np.float32)))
        served = _serve(plain_export, warped_batch, lengths)
        scores.append(np.asarray(candidate_nll(served["log_probs"].numpy(), served["frame_length"].numpy(),
                                               labels, vocabulary=vocabulary)))
    scores = np.stack(scores)  # (warps, batch, candidates)
    with np.errstate(divide="ignore"):
        mean_nll = -np.log(np.mean(np.exp(-scores.astype(np.float64)), axis=0))
    best = np.argmin(mean_nll, axis=1)
    return [CANDIDATES[i] if np.isfinite(mean_nll[row, i]) else "" for row, i in enumerate(best)], scores


@pytest.mark.parametrize("packed", [False, True], ids=["single", "ensemble"])
def test_warped_choice_is_the_mean_likelihood_over_the_warps(packed, runs, features, vocabulary, tmp_path, request):
    batch, lengths = features
    lengths = lengths.copy()
    lengths[1] = 0  # nothing fits: ""
    if packed:
        export = export_run(runs, str(tmp_path / "warped_ensemble"), CANDIDATES, WARPS)
        plain = request.getfixturevalue("closed_ensemble")
    else:
        export = request.getfixturevalue("warped")
        plain = request.getfixturevalue("closed")
    served = _serve(export, batch, lengths)
    expected, scores = _expected_warped_choice(plain, batch, lengths, WARPS, vocabulary)
    assert [t.decode() for t in served["text"].numpy()] == expected
    assert expected[1] == ""
    # The warps change the scores (so the test would notice them ignored) ...
    finite = np.isfinite(scores[0]) & np.isfinite(scores[1])
    assert np.abs(scores[0] - scores[1])[finite].max() > 1e-3
    # ... and the served log_probs are the unwarped features' (the 1.0 warp's pass).
    unwarped = _serve(plain, batch, lengths)
    np.testing.assert_allclose(served["log_probs"].numpy(), unwarped["log_probs"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(served["frame_length"].numpy(), unwarped["frame_length"].numpy())


def test_warps_without_the_identity_and_the_identity_alone(runs, closed, features, vocabulary, tmp_path):
    batch, lengths = features
    apart = export_run(runs[0], str(tmp_path / "apart"), CANDIDATES, [0.95, 1.05])
    served = _serve(apart, batch, lengths)
    expected, _ = _expected_warped_choice(closed, batch, lengths, [0.95, 1.05], vocabulary)
    assert [t.decode() for t in served["text"].numpy()] == expected
    unwarped = _serve(closed, batch, lengths)
    np.testing.assert_allclose(served["log_probs"].numpy(), unwarped["log_probs"].numpy(), atol=1e-5)
    # One warp of 1.0 is the plain closed-vocabulary choice.
    identity = _serve(export_run(runs[0], str(tmp_path / "identity"), CANDIDATES, [1.0]), batch, lengths)
    assert identity["text"].numpy().tolist() == unwarped["text"].numpy().tolist()


def test_warped_metadata_and_waveform_signature(warped):
    metadata = read_metadata(warped)
    assert metadata["candidate_warps"] == WARPS
    assert "stretched by each of [0.9, 1.0, 1.1]" in metadata["decoding"]
    waveform = synthetic_utterance(302, CONFIG.sample_rate, 1.0)[None].astype(np.float32)
    loaded = tf.saved_model.load(warped)
    out = loaded.signatures["serving_default"](
        waveform=tf.constant(waveform), waveform_length=tf.constant([waveform.shape[1]], tf.int32))
    assert out["text"].numpy()[0].decode() in CANDIDATES
    # TF Serving runs the export's warmup requests at load: they must pass.
    assert replay_warmup_requests(warped, loaded.signatures) == 2


@pytest.mark.parametrize(
    "warps, candidates, needle",
    [
        ([1.0], None, "without `candidates`"),
        ([], CANDIDATES, "non-empty list of distinct factors in [0.5, 1.5]"),
        ([0.2, 1.0], CANDIDATES, "got [0.2, 1.0]"),
        ([1.0, 1.0], CANDIDATES, "distinct"),
        ([True], CANDIDATES, "got [True]"),
        ("0.9,1.1", CANDIDATES, "got '0.9,1.1'"),
    ],
)
def test_bad_warps_are_refused(warps, candidates, needle):
    from models.candidates import check_candidate_warps

    with pytest.raises(ValueError) as error:
        check_candidate_warps(warps, candidates)
    assert needle in str(error.value)


def test_warps_are_refused_for_cepstra():
    """The export itself refuses warps its features cannot take (transcribe.py and export_run ask it)."""
    from models.candidates import check_candidate_warps

    assert check_candidate_warps([0.9, 1.0], CANDIDATES, feature_kind="log_mel") == (0.9, 1.0)
    with pytest.raises(ValueError, match="for mfcc features: cepstra have no mel axis to warp"):
        check_candidate_warps([0.9, 1.0], CANDIDATES, feature_kind="mfcc")


def test_command_line_candidate_warps(runs, tmp_path, capsys):
    words = tmp_path / "words.txt"
    words.write_text("bead\ncab\n", encoding="utf-8")
    assert main([runs[0], "--export_base", str(tmp_path / "out"), "--candidates", str(words),
                 "--candidate_warps", "0.95,1,1.05"]) == 0
    assert read_metadata(capsys.readouterr().out.strip())["candidate_warps"] == [0.95, 1.0, 1.05]
    for argv, needle in (
        (["--candidate_warps", "1"], "give --candidates too"),
        (["--candidates", str(words), "--candidate_warps", "1,x"], "expected comma-separated numbers"),
        (["--candidates", str(words), "--candidate_warps", "1,3"], "--candidate_warps 1,3: Received an invalid value"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([runs[0], "--export_base", str(tmp_path / "bad"), *argv])
        assert exit_info.value.code == 2
        assert needle in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad")

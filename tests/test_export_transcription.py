"""Transcriber export: in-graph features and decoding against librosa + Keras."""

import json
import os
import re
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.ctc_decoding import ctc_choose_text, ctc_decode_text
from models.transcription import build_transcription_model
from pipelines.audio_features import FeatureConfig, compute_features
from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary
from serving.export import pinned_devices, read_metadata, xla_compiled_functions
from serving.transcription_export import SILENT_LOG_PROB, export_transcriber
from tests.fresh_process import PROJECT_PACKAGES, run_side_by_side
from tests.test_log_mel import padded_batch, synthetic_utterance

CONFIG = FeatureConfig(n_mels=40)


@pytest.fixture(scope="module")
def vocabulary():
    return Vocabulary(SPEECH_ALPHABET)


@pytest.fixture(scope="module")
def model(vocabulary):
    keras.utils.set_random_seed(3)
    return build_transcription_model(
        num_features=CONFIG.n_features, vocabulary_size=vocabulary.size,
        hidden_size=32, num_layers=2, frame_stack=3, dropout=0.1)


@pytest.fixture(scope="module")
def export_path(model, vocabulary, tmp_path_factory):
    return export_transcriber(
        model, vocabulary, CONFIG, tmp_path_factory.mktemp("export"),
        trained_on={"dataset": "synthetic", "utterances": {"train": 3}},
        metrics={"val_cer": 0.5}, config={"hidden_size": 32})


@pytest.fixture(scope="module")
def loaded(export_path):
    return tf.saved_model.load(export_path)


@pytest.fixture(scope="module")
def utterances():
    """24 synthetic utterances of 0.4 to 2.5 s at 16 kHz."""
    rng = np.random.default_rng(5)
    return [synthetic_utterance(100 + i, CONFIG.sample_rate, rng.uniform(0.4, 2.5)) for i in range(24)]


def _keras_reference(model, vocabulary, waveforms):
    """librosa features -> Keras model -> greedy text, as training evaluates."""
    features = [compute_features(w, CONFIG) for w in waveforms]
    width = max(len(f) for f in features)
    batch = np.zeros((len(features), width, CONFIG.n_features), np.float32)
    for row, f in enumerate(features):
        batch[row, : len(f)] = f
    lengths = np.array([len(f) for f in features], np.int32)
    outputs = model({"features": batch, "feature_length": lengths}, training=False)
    log_probs = np.asarray(outputs["log_probs"])
    frame_length = np.asarray(outputs["frame_length"])
    text = ctc_decode_text(log_probs, frame_length, vocabulary=vocabulary)
    return batch, lengths, log_probs, frame_length, text


def _serve(loaded, waveforms):
    batch, lengths = padded_batch(waveforms)
    out = loaded.signatures["serving_default"](
        waveform=tf.constant(batch), waveform_length=tf.constant(lengths))
    return {k: v.numpy() for k, v in out.items()}


def test_layout_and_metadata(export_path, vocabulary):
    assert os.path.basename(export_path) == "1"
    assert os.path.basename(os.path.dirname(export_path)) == "transcriber"
    metadata = read_metadata(export_path)
    assert metadata["task"] == "transcription"
    assert metadata["sample_rate"] == 16000
    assert FeatureConfig.from_dict(metadata["feature_config"]) == CONFIG
    assert Vocabulary.from_config(metadata["vocabulary"]) == vocabulary
    assert metadata["trained_on"]["dataset"] == "synthetic"
    assert metadata["metrics"] == {"val_cer": 0.5}
    assert xla_compiled_functions(export_path) == []
    assert pinned_devices(export_path) == []


def test_waveform_signature_matches_librosa_and_keras(loaded, model, vocabulary, utterances):
    _, _, log_probs, frame_length, text = _keras_reference(model, vocabulary, utterances)
    served = _serve(loaded, utterances)
    np.testing.assert_array_equal(served["frame_length"], frame_length)
    for row, n in enumerate(frame_length):
        np.testing.assert_allclose(served["log_probs"][row, :n], log_probs[row, :n], atol=2e-3)
    same = [s.decode() == t for s, t in zip(served["text"], text)]
    assert sum(same) / len(same) >= 0.99, list(zip(served["text"], text))
    assert any(len(t) > 3 for t in text)  # the comparison is not between empty strings


def test_waveform_beyond_full_scale_is_read_as_training_reads_it(loaded, model, vocabulary, utterances):
    # Float audio past [-1, 1] (PCM values stored as float): the loader scales it to a peak of 1.
    from pipelines.audio_loading import prepare_waveform

    loud = utterances[0] * np.float32(3000.0)
    prepared = prepare_waveform(loud, CONFIG.sample_rate, CONFIG.sample_rate)
    np.testing.assert_allclose(np.max(np.abs(prepared)), 1.0, rtol=1e-6)
    _, _, log_probs, frame_length, text = _keras_reference(model, vocabulary, [prepared])
    served = _serve(loaded, [loud])
    n = frame_length[0]
    np.testing.assert_allclose(served["log_probs"][0, :n], log_probs[0, :n], atol=2e-3)
    assert served["text"][0].decode() == text[0] and len(text[0]) > 3


def test_from_features_matches_keras(loaded, model, vocabulary, utterances):
    batch, lengths, log_probs, frame_length, text = _keras_reference(model, vocabulary, utterances[:5])
    out = loaded.signatures["from_features"](
        features=tf.constant(batch), feature_length=tf.constant(lengths))
    np.testing.assert_allclose(out["log_probs"].numpy(), log_probs, atol=1e-5)
    np.testing.assert_array_equal(out["frame_length"].numpy(), frame_length)
    assert [t.decode() for t in out["text"].numpy()] == text


def test_batch_padding_does_not_change_results(loaded, utterances):
    alone = _serve(loaded, utterances[:1])
    padded = _serve(loaded, [utterances[0], np.zeros(len(utterances[0]) + 8000, np.float32) + 0.1])
    assert padded["text"][0] == alone["text"][0]
    n = alone["frame_length"][0]
    np.testing.assert_allclose(padded["log_probs"][0, :n], alone["log_probs"][0, :n], atol=1e-5)


def test_silent_utterances_have_no_text(loaded, utterances, vocabulary):
    speech = utterances[0]
    alone = _serve(loaded, [speech])["text"][0]
    assert alone  # the speech has a text to keep
    quiet = np.zeros(8000, np.float32)
    quiet[::50] = 5e-5  # under the loader's silence threshold of 1e-4
    # The third row is silent only within its length: loud padding must not count.
    batch = np.zeros((3, len(speech)), np.float32)
    batch[0], batch[1, :8000], batch[2, 8000:] = speech, quiet, 0.5
    out = loaded.signatures["serving_default"](
        waveform=tf.constant(batch), waveform_length=tf.constant([len(speech), 8000, 8000]))
    assert [t.decode() for t in out["text"].numpy()] == [alone.decode(), "", ""]
    # The silent rows' log_probs say blank at every frame; the speech row's are the model's own.
    log_probs = out["log_probs"].numpy()
    np.testing.assert_allclose(log_probs[0], _serve(loaded, [speech])["log_probs"][0], atol=1e-5)
    blank = vocabulary.blank_id
    np.testing.assert_array_equal(log_probs[1:, :, blank], 0.0)
    np.testing.assert_array_equal(np.delete(log_probs[1:], blank, axis=2), SILENT_LOG_PROB)


def test_bad_lengths_are_invalid_argument(loaded):
    waveform = tf.zeros((2, 1000))
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least n_fft=400"):
        loaded.signatures["serving_default"](waveform=waveform, waveform_length=tf.constant([1000, 399]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="padded length"):
        loaded.signatures["serving_default"](waveform=waveform, waveform_length=tf.constant([1000, 1001]))
    features = tf.zeros((2, 5, CONFIG.n_features))
    for lengths, message in (([5, -1], ">= 0"), ([5, 6], "padded length")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            loaded.signatures["from_features"](features=features, feature_length=tf.constant(lengths))


def test_features_without_frames_read_empty_text(loaded, vocabulary):
    # As a row of length 0 in a longer batch does; not "Tried to stack elements of an empty list" from the
    # model's loop over no frame.
    out = loaded.signatures["from_features"](features=tf.zeros((2, 0, CONFIG.n_features)),
                                             feature_length=tf.constant([0, 0]))
    assert [t.decode() for t in out["text"].numpy()] == ["", ""]
    assert out["frame_length"].numpy().tolist() == [0, 0]
    assert out["log_probs"].shape[0] == 2 and out["log_probs"].shape[2] == vocabulary.size


@pytest.mark.parametrize("signature, inputs", [
    ("serving_default", {"waveform": (0, 0)}),
    ("serving_default", {"waveform": (0, 1000)}),
    ("from_features", {"features": (0, 0, CONFIG.n_features)}),
    ("from_features", {"features": (0, 5, CONFIG.n_features)}),
])
def test_an_empty_batch_reads_no_rows(loaded, vocabulary, signature, inputs):
    # Not "inputs must not be empty" from the CTC decoder, nor the model's loop over no frame.
    lengths = "waveform_length" if signature == "serving_default" else "feature_length"
    out = loaded.signatures[signature](**{name: tf.zeros(shape) for name, shape in inputs.items()},
                                       **{lengths: tf.zeros((0,), tf.int32)})
    assert out["text"].shape == (0,) and out["text"].dtype == tf.string
    assert out["frame_length"].shape == (0,) and out["frame_length"].dtype == tf.int32
    assert out["log_probs"].shape[0] == 0 and out["log_probs"].shape[2] == vocabulary.size


def test_non_finite_inputs_are_invalid_argument_naming_the_row(loaded):
    # Training refuses such audio; the export must not answer NaN log_probs and "".
    waveform = np.full((3, 1000), 0.1, np.float32)
    waveform[1, 500] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"every `waveform` sample must be finite \(no NaN or infinity\); row 1 is not"):
        loaded.signatures["serving_default"](waveform=tf.constant(waveform),
                                             waveform_length=tf.constant([1000, 1000, 1000]))
    features = np.zeros((2, 5, CONFIG.n_features), np.float32)
    features[0, 2, 3] = -np.inf
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"every `features` value must be finite \(no NaN or infinity\); row 0 is not"):
        loaded.signatures["from_features"](features=tf.constant(features), feature_length=tf.constant([5, 5]))


BATCH_MISMATCHES = [
    # (signature, inputs, message): never broadcast, never TensorFlow's shape errors.
    ("serving_default", {"waveform": (1, 1000), "waveform_length": [1000, 1000, 1000]},
     "`waveform_length` has 3 rows but `waveform` has 1: expected one length per waveform row"),
    ("serving_default", {"waveform": (2, 1000), "waveform_length": [1000]},
     "`waveform_length` has 1 row but `waveform` has 2: expected one length per waveform row"),
    ("from_features", {"features": (1, 5, CONFIG.n_features), "feature_length": [5, 5, 5]},
     "`feature_length` has 3 rows but `features` has 1: expected one length per features row"),
    ("from_features", {"features": (3, 5, CONFIG.n_features), "feature_length": [5]},
     "`feature_length` has 1 row but `features` has 3: expected one length per features row"),
]


def _call_mismatched(loaded, signature, inputs):
    arrays = {name: tf.zeros(value) if isinstance(value, tuple) else tf.constant(value, tf.int32)
              for name, value in inputs.items()}
    return loaded.signatures[signature](**arrays)


@pytest.mark.parametrize("signature, inputs, message", BATCH_MISMATCHES)
def test_lengths_must_have_one_row_per_input_row(loaded, signature, inputs, message):
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        _call_mismatched(loaded, signature, inputs)
    assert f"assertion failed: [{message}]" in error.value.message


def test_ensemble_and_closed_vocabulary_exports_check_the_rows_too(model, vocabulary, tmp_path):
    path = export_transcriber([model, model], vocabulary, CONFIG, tmp_path, trained_on="t", metrics={},
                              candidates=["yes", "no"])
    loaded = tf.saved_model.load(path)
    for signature, inputs, message in BATCH_MISMATCHES:
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
            _call_mismatched(loaded, signature, inputs)


def test_feature_width_must_match_the_config(model, vocabulary, tmp_path):
    with pytest.raises(ValueError, match="takes 40 features .* gives 80"):
        export_transcriber(model, vocabulary, FeatureConfig(), tmp_path, trained_on="x", metrics={})


def _fresh_process_script(export_path):
    return textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        inputs = np.load("inputs.npz")
        loaded = tf.saved_model.load({export_path!r})
        out = loaded.signatures["serving_default"](
            waveform=tf.constant(inputs["waveform"]),
            waveform_length=tf.constant(inputs["waveform_length"]))
        project = sorted(m for m in sys.modules if m.split(".")[0] in {PROJECT_PACKAGES!r})
        np.save("log_probs.npy", out["log_probs"].numpy())
        print(json.dumps({{"text": [t.decode() for t in out["text"].numpy()],
                          "frame_length": out["frame_length"].numpy().tolist(),
                          "project": project}}))
    """)


@pytest.fixture(scope="module")
def processes(export_path, utterances, tmp_path_factory):
    """A fresh Python loading the export, and `saved_model_cli show --all`,
    run side by side (each spends most of its time importing TensorFlow)."""
    workdir = tmp_path_factory.mktemp("fresh")
    batch, lengths = padded_batch(utterances[:4])
    np.savez(workdir / "inputs.npz", waveform=batch, waveform_length=lengths)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    commands = {
        "fresh": [sys.executable, "-c", _fresh_process_script(export_path)],
        "show": [cli, "show", "--dir", export_path, "--all"],
    }
    results = run_side_by_side(commands, workdir)
    return workdir, results


def test_fresh_process_without_project_code(processes, model, vocabulary, utterances):
    workdir, results = processes
    result = results["fresh"]
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["project"] == []
    _, _, log_probs, frame_length, text = _keras_reference(model, vocabulary, utterances[:4])
    assert out["text"] == text
    assert out["frame_length"] == frame_length.tolist()
    served = np.load(workdir / "log_probs.npy")
    for row, n in enumerate(frame_length):
        np.testing.assert_allclose(served[row, :n], log_probs[row, :n], atol=2e-3)


def test_saved_model_cli_lists_both_signatures(processes):
    show = processes[1]["show"]
    assert show.returncode == 0, show.stderr[-3000:]
    for expected in ("signature_def['serving_default']", "signature_def['from_features']",
                     "inputs['waveform']", "inputs['waveform_length']", "inputs['features']",
                     "inputs['feature_length']", "outputs['text']", "outputs['log_probs']",
                     "outputs['frame_length']"):
        assert expected in show.stdout
    default = show.stdout.split("signature_def['serving_default']")[1]
    assert "shape: (-1, -1)\n        name: serving_default_waveform:0" in default


def test_evaluate_export_scores_a_held_out_speaker_through_the_savedmodel(
        export_path, model, vocabulary, utterances, tmp_path, capsys):
    import soundfile as sf

    from models.error_rates import error_rates
    from pipelines.audio_loading import load_audio
    from serving.evaluate_export import evaluate_export, main

    folder = tmp_path / "corpus"
    folder.mkdir()
    texts = ["yes", "no", "hello there", "one two", "maybe", "it's fine"]
    rows = ["path\tspeaker\tsplit\ttext"]
    for i, text in enumerate(texts):
        sf.write(folder / f"u{i}.wav", utterances[i], CONFIG.sample_rate)
        rows.append(f"u{i}.wav\t{'ann' if i < 4 else 'bob'}\t{'test' if i == 3 else 'train'}\t{text}")
    rows.append("u9.wav\tbob\ttrain\t")  # no transcript: skipped and counted
    (folder / "manifest.tsv").write_text("\n".join(rows) + "\n")

    report = evaluate_export(str(export_path), f"{folder}:held_out_speakers=bob", split="test",
                             batch_size=1, cache_dir=str(tmp_path / "cache"))
    # bob's two recordings, decoded as the Keras model decodes librosa features of the same audio.
    waveforms = [load_audio(folder / f"u{i}.wav", CONFIG.sample_rate) for i in (4, 5)]
    expected = _keras_reference(model, vocabulary, waveforms)[-1]
    assert (report["utterances"], report["skipped"]) == (2, 1)
    assert report["cer"] == pytest.approx(error_rates(["maybe", "it's fine"], expected)["cer"])
    assert report["wer"] == pytest.approx(error_rates(["maybe", "it's fine"], expected)["wer"])
    assert report["by_speaker"] == {"bob": {"utterances": 2, "cer": report["cer"], "wer": report["wer"]}}
    wrong = [(r, h) for r, h in zip(["maybe", "it's fine"], expected) if r != h]
    assert [(e["reference"], e["hypothesis"]) for e in report["examples"]] == wrong
    first = evaluate_export(str(export_path), f"{folder}:held_out_speakers=bob", split="test",
                            cache_dir=str(tmp_path / "cache"), examples=1)["examples"]
    assert first == report["examples"][:1]

    # Closed vocabulary: the greedy figures stay, the chosen texts are the model's most likely candidates.
    candidates = ["maybe", "it's fine", "hello there"]
    closed = evaluate_export(str(export_path), f"{folder}:held_out_speakers=bob", split="test",
                             cache_dir=str(tmp_path / "cache"), candidates=candidates)
    assert (closed["cer"], closed["wer"]) == (report["cer"], report["wer"])
    _, _, log_probs, frame_length, _ = _keras_reference(model, vocabulary, waveforms)
    chosen, _ = ctc_choose_text(log_probs, frame_length, candidates, vocabulary=vocabulary)
    section = closed["closed_vocabulary"]
    assert section["candidates"] == 3 and section["references_not_among_candidates"] == 0
    assert section["wer"] == pytest.approx(error_rates(["maybe", "it's fine"], chosen)["wer"])
    assert section["sentence_accuracy"] == sum(c == r for c, r in zip(chosen, ["maybe", "it's fine"])) / 2
    listed = tmp_path / "candidates.txt"
    listed.write_text("Maybe\n\nit's fine\nhello, there\nmaybe\n")  # normalised, blank and repeated lines dropped
    written = tmp_path / "report.json"
    assert main(["--export", str(export_path), "--dataset", f"{folder}:held_out_speakers=bob", "--split", "test",
                 "--cache-dir", str(tmp_path / "cache"), "--candidates", str(listed), "--output", str(written)]) == 0
    capsys.readouterr()
    printed = json.loads(written.read_text())
    assert printed["closed_vocabulary"]["candidates"] == 3
    assert printed["closed_vocabulary"]["wer"] == section["wer"]
    with pytest.raises(ValueError, match=r"vocabulary's characters .*got 'press 1'"):
        evaluate_export(str(export_path), str(folder), cache_dir=str(tmp_path / "cache"), candidates=["press 1"])

    assert main(["--export", str(export_path), "--dataset", str(folder), "--split", "nope",
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "invalid value for argument `split`" in capsys.readouterr().err


def test_evaluate_export_skips_and_counts_transcripts_outside_the_vocabulary(
        export_path, model, vocabulary, utterances, tmp_path, capsys):
    import soundfile as sf

    from models.error_rates import error_rates
    from pipelines.audio_loading import load_audio
    from serving.evaluate_export import main

    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = ["path\tspeaker\tsplit\ttext"]
    for i, (split, text) in enumerate([("train", "yes"), ("train", "Press 1"), ("train", ""), ("train", "no"),
                                       ("test", "maybe")]):
        sf.write(folder / f"u{i}.wav", utterances[i], CONFIG.sample_rate)
        rows.append(f"u{i}.wav\tann\t{split}\t{text}")
    (folder / "manifest.tsv").write_text("\n".join(rows) + "\n")
    written = tmp_path / "report.json"
    assert main(["--export", str(export_path), "--dataset", str(folder), "--split", "train",
                 "--cache-dir", str(tmp_path / "cache"), "--examples", "0", "--output", str(written)]) == 0
    err = capsys.readouterr().err
    assert (f"evaluate_export: skipping {folder / 'u1.wav'}: out_of_vocabulary: transcript 'press 1' has "
            "characters '1' outside the vocabulary") in err
    report = json.loads(written.read_text())
    assert (report["utterances"], report["skipped"]) == (2, 2)
    assert report["skipped_by_reason"] == {"empty_transcript": 1, "out_of_vocabulary": 1}
    # The figures are those of the two usable utterances alone.
    waveforms = [load_audio(folder / f"u{i}.wav", CONFIG.sample_rate) for i in (0, 3)]
    expected = _keras_reference(model, vocabulary, waveforms)[-1]
    assert report["cer"] == pytest.approx(error_rates(["yes", "no"], expected)["cer"])
    assert all(e["reference"] != "press 1" for e in report["examples"])


def test_evaluate_export_refuses_a_bad_output_or_limit_before_evaluating(export_path, tmp_path, capsys,
                                                                         monkeypatch):
    import serving.evaluate_export as evaluate_module

    def refuse(*args, **kwargs):
        raise AssertionError("the evaluation ran")

    monkeypatch.setattr(evaluate_module, "evaluate_export", refuse)
    (tmp_path / "a_file").write_text("")
    for flags, message in (
        (["--output", str(tmp_path)], f"--output {tmp_path} is a directory; expected the path of a JSON file"),
        (["--output", str(tmp_path / "a_file" / "r.json")],
         f"{tmp_path / 'a_file'} is a file, not a directory; expected a path whose parent is a directory"),
        (["--limit", "-1"], "--limit must be 0 (all) or a positive integer, got -1"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            evaluate_module.main(["--export", str(export_path), "--dataset", str(tmp_path), *flags])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_evaluate_export_given_a_run_or_a_base_directory_names_the_version(export_path, tmp_path, capsys):
    import serving.evaluate_export as evaluate_export

    run = tmp_path / "run"
    (run / "export" / "transcriber").mkdir(parents=True)
    os.symlink(export_path, run / "export" / "transcriber" / "3")  # a run's newest export
    base = os.path.dirname(str(export_path))
    for given, version in ((run, run / "export" / "transcriber" / "3"), (base, export_path)):
        with pytest.raises(SystemExit) as exit_info:
            evaluate_export.main(["--export", str(given), "--dataset", str(tmp_path)])
        assert exit_info.value.code == 2
        assert (f"--export {str(given)!r} is not a SavedModel version directory (no saved_model.pb); "
                f"use --export {version}.") in capsys.readouterr().err


def test_evaluate_export_decodes_with_a_language_model_grid(export_path, model, vocabulary, utterances, tmp_path,
                                                            capsys):
    import soundfile as sf

    from models.ctc_lm_decoding import CharacterLanguageModelScorer, ctc_beam_search_with_lm
    from models.error_rates import error_rates
    from models.language_model import build_language_model
    from models.language_model_io import save_language_model
    from pipelines.audio_loading import load_audio
    from serving.evaluate_export import evaluate_export, main

    folder = tmp_path / "corpus"
    folder.mkdir()
    texts = ["yes", "no", "maybe"]
    rows = ["path\tspeaker\tsplit\ttext"]
    for i, text in enumerate(texts):
        sf.write(folder / f"u{i}.wav", utterances[i], CONFIG.sample_rate)
        rows.append(f"u{i}.wav\t\t{'test' if i else 'train'}\t{text}")
    (folder / "manifest.tsv").write_text("\n".join(rows) + "\n")
    lm_vocabulary = Vocabulary(["\n", *vocabulary.characters])
    lm = build_language_model(vocabulary_size=lm_vocabulary.size, embedding_dim=4, hidden_size=8, seed=0)
    lm.set_weights([np.random.default_rng(5).normal(0, 1.0, w.shape).astype(np.float32) for w in lm.get_weights()])
    save_language_model(lm, lm_vocabulary, str(tmp_path / "lm" / "model.keras"))

    report = evaluate_export(str(export_path), str(folder), split="validation", cache_dir=str(tmp_path / "cache"),
                             lm_run=str(tmp_path / "lm"), lm_weights=(0.0, 2.0), lm_bonuses=(0.0, 1.5),
                             lm_beam_width=4)
    section = report["language_model"]
    assert section["beam_width"] == 4
    assert [(s["lm_weight"], s["char_bonus"]) for s in section["settings"]] == [
        (0.0, 0.0), (0.0, 1.5), (2.0, 0.0), (2.0, 1.5)]
    # Each setting is the fused search on the export's log_probs (same as the Keras model's).
    waveforms = [load_audio(folder / f"u{i}.wav", CONFIG.sample_rate) for i in (1, 2)]
    _, _, log_probs, frame_length, _ = _keras_reference(model, vocabulary, waveforms)
    scorer = CharacterLanguageModelScorer(lm, lm_vocabulary, vocabulary)
    for setting in section["settings"]:
        decoded = ctc_beam_search_with_lm(np.asarray(log_probs), frame_length, vocabulary=vocabulary, scorer=scorer,
                                          beam_width=4, lm_weight=setting["lm_weight"],
                                          char_bonus=setting["char_bonus"])
        assert setting["cer"] == pytest.approx(error_rates(["no", "maybe"], decoded)["cer"], abs=1e-6)
    assert main(["--export", str(export_path), "--dataset", str(folder), "--split", "validation",
                 "--cache-dir", str(tmp_path / "cache"), "--lm", str(tmp_path / "nothing")]) == 2
    assert "has neither best.keras nor model.keras" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--export", str(export_path), "--dataset", str(folder), "--lm", str(tmp_path / "lm"),
              "--lm-weight", "0.5,x"])
    assert "comma-separated numbers, got '0.5,x'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--export", str(export_path), "--dataset", str(folder), "--lm", str(tmp_path / "lm"),
              "--lm-bonus", "0,inf"])
    assert "--lm-bonus must be finite numbers, got 0.0,inf" in capsys.readouterr().err

    # A lexicon, without a language model: plain beam search over its words (weight 0 only).
    from models.ctc_lm_decoding import Lexicon

    lexicon_file = tmp_path / "words.txt"
    lexicon_file.write_text("Yes no\nmaybe, nope\n", encoding="utf-8")
    report = evaluate_export(str(export_path), str(folder), split="validation", cache_dir=str(tmp_path / "cache"),
                             lm_weights=(0.5, 1.0), lm_bonuses=(0.0, 1.5), lm_beam_width=4,
                             lexicon_file=str(lexicon_file))
    section = report["language_model"]
    assert section["run"] is None and section["lexicon"] == {"file": str(lexicon_file), "words": 4}
    assert [(s["lm_weight"], s["char_bonus"]) for s in section["settings"]] == [(0.0, 0.0), (0.0, 1.5)]
    lexicon = Lexicon.from_file(str(lexicon_file), vocabulary)
    for setting in section["settings"]:
        decoded = ctc_beam_search_with_lm(np.asarray(log_probs), frame_length, vocabulary=vocabulary,
                                          beam_width=4, char_bonus=setting["char_bonus"], lexicon=lexicon)
        assert all(word in {"yes", "no", "maybe", "nope"} for text in decoded for word in text.split())
        assert setting["cer"] == pytest.approx(error_rates(["no", "maybe"], decoded)["cer"], abs=1e-6)
    lexicon_file.write_text("yes\nno 2\n", encoding="utf-8")
    assert main(["--export", str(export_path), "--dataset", str(folder), "--split", "validation",
                 "--cache-dir", str(tmp_path / "cache"), "--lexicon", str(lexicon_file)]) == 2
    assert f"Lexicon file {str(lexicon_file)!r} line 2: word '2' has characters '2' outside" in capsys.readouterr().err


def test_evaluate_export_names_the_line_of_a_candidate_outside_the_vocabulary(export_path, tmp_path, capsys):
    from serving.evaluate_export import main

    listed = tmp_path / "candidates.txt"
    listed.write_text("one\n\ntwo 2\n")
    with pytest.raises(SystemExit) as exit_info:  # before the dataset is even looked for
        main(["--export", str(export_path), "--dataset", str(tmp_path / "missing"), "--candidates", str(listed)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert f"Candidates file {str(listed)!r}, line 3" in message and "got 'two 2'" in message


def test_evaluate_export_skips_utterances_longer_than_training_did(model, vocabulary, tmp_path, capsys):
    # train.py skips utterances longer than --max-duration-s (12 s by default) in every split; the
    # export's figures are those of its metrics.json only when evaluate_export skips them too.
    import soundfile as sf

    from models.error_rates import error_rates
    from pipelines.audio_loading import load_audio
    from serving.evaluate_export import evaluate_export, training_max_duration

    path = export_transcriber(model, vocabulary, CONFIG, tmp_path / "export", trained_on="t", metrics={},
                              config={"max_duration_s": 2.0})
    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = ["path\tspeaker\tsplit\ttext"]
    for i, (split, text, seconds) in enumerate([("train", "yes", 1.0), ("train", "hello there", 2.5),
                                                 ("train", "no", 1.5), ("test", "maybe", 1.0)]):
        sf.write(folder / f"u{i}.wav", synthetic_utterance(400 + i, CONFIG.sample_rate, seconds), CONFIG.sample_rate)
        rows.append(f"u{i}.wav\tann\t{split}\t{text}")
    (folder / "manifest.tsv").write_text("\n".join(rows) + "\n")
    report = evaluate_export(str(path), str(folder), split="train", cache_dir=str(tmp_path / "cache"))
    assert (report["utterances"], report["skipped"], report["max_duration_s"]) == (2, 1, 2.0)
    assert report["skipped_by_reason"] == {"too_long": 1}
    assert report["skipped_files"] == [
        [str(folder / "u1.wav"), f"{folder / 'u1.wav'}: too_long: 2.5 s is longer than max_duration_s=2"]]
    waveforms = [load_audio(folder / f"u{i}.wav", CONFIG.sample_rate) for i in (0, 2)]
    expected = _keras_reference(model, vocabulary, waveforms)[-1]
    assert report["cer"] == pytest.approx(error_rates(["yes", "no"], expected)["cer"])
    # An ensemble packed by export_run records its members' configurations; no limit recorded, none applied.
    assert training_max_duration({"config": {"members": [{"max_duration_s": 12.0}, {"max_duration_s": 12.0}]}}) == 12.0
    assert training_max_duration({"config": {"hidden_size": 32}}) is None
    assert training_max_duration({"config": None}) is None

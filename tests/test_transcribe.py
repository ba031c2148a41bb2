"""`python transcribe.py`: audio files in any format and rate to text."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import transcribe
from models.ctc_decoding import ctc_decode_text
from models.transcription import build_transcription_model
from pipelines.audio_features import FeatureConfig
from pipelines.speech_dataset import load_features
from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary
from tests.fresh_process import exits_before_tensorflow
from training.cli import write_json
from training.transcription import load_transcriber

FEATURES = FeatureConfig(n_mels=16)


@pytest.fixture
def model_dir(tmp_path):
    vocabulary = Vocabulary(SPEECH_ALPHABET)
    # Bias the output layer so every frame says "a": a known transcript.
    model = build_transcription_model(
        num_features=FEATURES.n_features, vocabulary_size=vocabulary.size,
        hidden_size=4, num_layers=1, dropout=0.0,
    )
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    bias[vocabulary.encode("a")[0]] = 50.0
    logits.set_weights([np.zeros_like(kernel), bias])
    directory = tmp_path / "model"
    directory.mkdir()
    model.save(directory / "model.keras")
    vocabulary.save(directory / "vocabulary.json")
    write_json(str(directory / "feature_config.json"), FEATURES.to_dict())
    return directory


def _tone(seconds, rate, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) * np.hanning(len(t))
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def test_transcribes_wav_and_flac_at_any_rate(tmp_path, model_dir, capsys):
    files = []
    for name, rate, channels in (("a.wav", 8000, 1), ("b.flac", 22050, 2), ("c.wav", 16000, 1)):
        path = tmp_path / name
        sf.write(path, _tone(0.5, rate, channels), rate)
        files.append(str(path))
    assert transcribe.main(["--model-dir", str(model_dir), *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == files
    assert all(line.split("\t")[1] == "a" for line in lines)


def test_batched_transcription_equals_one_by_one(tmp_path, model_dir):
    model, vocabulary, config = load_transcriber(str(model_dir))
    assert config == FEATURES
    features = []
    for seconds in (0.3, 0.9, 0.5):
        path = tmp_path / f"{seconds}.wav"
        sf.write(path, np.random.default_rng(0).normal(scale=0.1, size=int(seconds * 16000)), 16000)
        features.append(load_features(str(path), config))
    batched = transcribe.transcribe_features(model, vocabulary, features, batch_size=3)
    for f, text in zip(features, batched):
        out = model.predict_on_batch({"features": f[None], "feature_length": np.array([len(f)], "int32")})
        assert ctc_decode_text(out["log_probs"], out["frame_length"], vocabulary=vocabulary) == [text]


def test_candidates_choose_the_most_likely_text(tmp_path, model_dir, capsys):
    audio = tmp_path / "a.wav"
    sf.write(audio, _tone(0.5, 16000), 16000)
    listed = tmp_path / "words.txt"
    listed.write_text("B\naa\n\nA\n")  # every frame says "a": "a" beats "aa" (needs a blank) and "b"
    assert transcribe.main(["--model-dir", str(model_dir), "--candidates", str(listed), str(audio)]) == 0
    assert capsys.readouterr().out == f"{audio}\ta\n"

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(SystemExit) as exit_info:
        transcribe.main(["--model-dir", str(model_dir), "--candidates", str(empty), str(audio)])
    assert exit_info.value.code == 2
    assert f"Candidates file {str(empty)!r} has no text" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        transcribe.main(["--model-dir", str(model_dir), "--candidates", str(listed), "--beam-width", "4", str(audio)])
    assert "give one of them" in capsys.readouterr().err
    digits = tmp_path / "digits.txt"
    digits.write_text("press 1\n")
    with pytest.raises(SystemExit):
        transcribe.main(["--model-dir", str(model_dir), "--candidates", str(digits), str(audio)])
    assert "got 'press 1'" in capsys.readouterr().err


def test_bad_files_are_named_and_fail_the_exit_status(tmp_path, model_dir, capsys):
    good = tmp_path / "good.wav"
    sf.write(good, _tone(0.5, 16000), 16000)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000), 16000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    status = transcribe.main(["--model-dir", str(model_dir), str(good), str(silent), str(junk)])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out.strip() == f"{good}\ta"
    assert f"{silent}: silent" in captured.err
    assert f"{junk}: unreadable" in captured.err


def test_missing_model_dir_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    for name, problem in (("nothing", "does not exist"), ("a_file", "is a file, not a directory")):
        with pytest.raises(SystemExit) as exit_info:
            transcribe.main(["--model-dir", str(tmp_path / name), "x.wav"])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().endswith(
            f"error: Model directory {str(tmp_path / name)!r} {problem}; expected the --output-dir of "
            "`train.py --task transcription` or an export version such as DIR/export/transcriber/1.")


def test_a_tuning_run_directory_points_at_its_export(tmp_path, capsys):
    # train.py --tune leaves DIR/tuning/ and DIR/export/transcriber/N, no model.keras in DIR.
    for version in ("1", "3", "12"):
        (tmp_path / "export" / "transcriber" / version).mkdir(parents=True)
        (tmp_path / "export" / "transcriber" / version / "saved_model.pb").write_bytes(b"")
    (tmp_path / "export" / "transcriber" / "20").mkdir()  # incomplete: no saved_model.pb
    with pytest.raises(SystemExit):
        transcribe.main(["--model-dir", str(tmp_path), "x.wav"])
    err = capsys.readouterr().err.strip()
    assert "lacks" in err and err.endswith(f"It has an export: use --model-dir {tmp_path / 'export' / 'transcriber' / '12'}")


def test_command_line_in_a_fresh_process(tmp_path, model_dir):
    # A new interpreter has registered nothing: loading must import it all.
    audio = tmp_path / "tone.flac"
    sf.write(audio, _tone(0.5, 44100), 44100)
    # A file name that is not UTF-8 (latin1 "caf\xe9"): read, and printed as given (was "unreadable").
    latin1 = os.fsencode(tmp_path) + b"/caf\xe9.flac"
    sf.write(str(tmp_path / "other.flac"), _tone(0.5, 44100), 44100)
    os.rename(tmp_path / "other.flac", latin1)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, os.path.join(root, "transcribe.py"), "--model-dir", str(model_dir), str(audio), latin1],
        capture_output=True, cwd=root, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == os.fsencode(audio) + b"\ta\n" + latin1 + b"\ta\n"


def test_help_and_bad_arguments_answer_before_tensorflow_is_imported(tmp_path):
    # TensorFlow (about 5 s) is imported where a model is loaded or decoded with.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    missing = str(tmp_path / "missing")
    codes, stderr, imported = exits_before_tensorflow("transcribe", [
        ["--help"], ["x.wav", "--beam-width", "0"], ["x.wav", "--lm-weight", "1"], ["x.wav", "--max-duration-s", "nan"],
        ["--model-dir", missing, "x.wav"],
    ], root)
    assert (codes, imported) == ([0, 2, 2, 2, 2], []), stderr
    for message in ("argument --beam-width: expected a positive integer, got 0",
                    "--lm-weight weighs the language model of --lm; give --lm too",
                    "argument --max-duration-s: expected a finite number of seconds > 0, got nan",
                    f"Model directory {missing!r} does not exist; expected the --output-dir of `train.py --task "
                    "transcription`"):
        assert message in stderr, stderr


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path, model_dir):
    # `transcribe.py ... | head -1`: the reader is gone before the lines are printed (closed here
    # at once, seconds before the process has imported TensorFlow), so every write fails (EPIPE).
    audio = tmp_path / "tone.wav"
    sf.write(audio, _tone(0.5, 16000), 16000)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(
        [sys.executable, os.path.join(root, "transcribe.py"), "--model-dir", str(model_dir), str(audio), str(audio)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
    )
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=120) == 0, err[-2000:]
    assert "Traceback" not in err and "BrokenPipeError" not in err


def _language_model_run(directory, characters):
    from models.language_model import build_language_model
    from models.language_model_io import save_language_model

    vocabulary = Vocabulary(characters)
    model = build_language_model(vocabulary_size=vocabulary.size, embedding_dim=4, hidden_size=8, seed=0)
    save_language_model(model, vocabulary, str(directory / "model.keras"))
    return directory


def test_language_model_fused_decoding_and_its_usage_errors(tmp_path, model_dir, capsys):
    audio = tmp_path / "a.wav"
    sf.write(audio, _tone(0.5, 16000), 16000)
    lm_run = _language_model_run(tmp_path / "lm", ["\n", *SPEECH_ALPHABET])
    # Every frame says "a" with logit 50: no language model weight of 0.5 overrules that.
    assert transcribe.main(["--model-dir", str(model_dir), "--lm", str(lm_run), str(audio)]) == 0
    assert capsys.readouterr().out == f"{audio}\ta\n"

    narrow = _language_model_run(tmp_path / "narrow", ["\n", "a", "b"])
    with pytest.raises(SystemExit) as exit_info:
        transcribe.main(["--model-dir", str(model_dir), "--lm", str(narrow), str(audio)])
    assert exit_info.value.code == 2
    assert f"{str(narrow / 'model.keras')!r} cannot score transcriptions: its vocabulary lacks [' ', \"'\", 'c'" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        transcribe.main(["--model-dir", str(model_dir), "--lm", str(tmp_path / "none"), str(audio)])
    assert "has neither best.keras nor model.keras" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        transcribe.main(["--model-dir", str(model_dir), "--lm", str(lm_run), "--candidates", "x.txt", str(audio)])
    assert "--candidates and --lm" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        transcribe.main(["--model-dir", str(model_dir), "--lm", str(lm_run), "--lm-bonus", "nan", str(audio)])
    assert "argument --lm-bonus: expected a finite number, got nan" in capsys.readouterr().err


def test_language_model_flags_without_the_search_they_tune_are_refused(tmp_path, model_dir, capsys):
    # They were ignored: --lm-weight 0.3 without --lm decoded greedily as if it were not given.
    audio = tmp_path / "a.wav"
    sf.write(audio, _tone(0.5, 16000), 16000)
    assert _usage_error(capsys, "--model-dir", model_dir, "--lm-weight", "0.3", audio).endswith(
        "error: --lm-weight weighs the language model of --lm; give --lm too"
    )
    for extra in ((), ("--beam-width", "4")):
        assert _usage_error(capsys, "--model-dir", model_dir, "--lm-bonus", "1", *extra, audio).endswith(
            "error: --lm-bonus is a bonus of the beam search with --lm or --lexicon; give one of them too"
        )
    words = tmp_path / "words.txt"
    words.write_text("a\n", encoding="utf-8")
    assert transcribe.main(["--model-dir", str(model_dir), "--lexicon", str(words), "--lm-bonus", "1", str(audio)]) == 0
    assert capsys.readouterr().out == f"{audio}\ta\n"
    assert _usage_error(capsys, "--model-dir", model_dir, "--lexicon", words, "--lm-weight", "1", audio).endswith(
        "error: --lm-weight weighs the language model of --lm; give --lm too"
    )


def test_lexicon_decoding_spells_only_its_words(tmp_path, model_dir, capsys):
    audio = tmp_path / "a.wav"
    sf.write(audio, _tone(0.5, 16000), 16000)
    words = tmp_path / "words.txt"
    # Every frame says "a"; "a" is no word here, "aa" (a, blank, a: far less likely) is.
    words.write_text("aa\n", encoding="utf-8")
    assert transcribe.main(["--model-dir", str(model_dir), "--lexicon", str(words), str(audio)]) == 0
    assert capsys.readouterr().out == f"{audio}\taa\n"
    words.write_text("b a\n", encoding="utf-8")
    assert transcribe.main(["--model-dir", str(model_dir), "--lexicon", str(words), str(audio)]) == 0
    assert capsys.readouterr().out == f"{audio}\ta\n"
    with pytest.raises(SystemExit):
        transcribe.main(["--model-dir", str(model_dir), "--lexicon", str(words), "--candidates", "x.txt", str(audio)])
    assert "--candidates and --lexicon" in capsys.readouterr().err
    words.write_text("fine\n\nw0rd\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        transcribe.main(["--model-dir", str(model_dir), "--lexicon", str(words), str(audio)])
    assert f"Lexicon file {str(words)!r} line 3: word 'w0rd' has characters '0' outside" in capsys.readouterr().err


def _random_run(directory, seed):
    """A run directory with an untrained (random) model, whose texts vary from file to file."""
    import keras

    vocabulary = Vocabulary(SPEECH_ALPHABET)
    keras.utils.set_random_seed(seed)
    model = build_transcription_model(
        num_features=FEATURES.n_features, vocabulary_size=vocabulary.size, hidden_size=8, num_layers=1,
        dropout=0.0,
    )
    directory.mkdir()
    model.save(directory / "model.keras")
    vocabulary.save(directory / "vocabulary.json")
    write_json(str(directory / "feature_config.json"), FEATURES.to_dict())
    return str(directory)


def test_an_export_directory_transcribes_with_its_own_text_output(tmp_path, capsys):
    from serving.export_run import export_run

    runs = [_random_run(tmp_path / f"run{seed}", seed) for seed in (1, 2)]
    files = []
    for i in range(8):
        path = tmp_path / f"noise{i}.wav"
        sf.write(path, np.random.default_rng(i).normal(scale=0.1, size=int((0.4 + 0.1 * i) * 16000)), 16000)
        files.append(str(path))

    def printed(model_dir, *flags):
        assert transcribe.main(["--model-dir", model_dir, *flags, *files]) == 0
        return capsys.readouterr().out

    # One model: its export prints what its run directory prints, greedily and with candidates.
    single = export_run(runs[0])
    assert printed(single) == printed(runs[0])
    assert len(set(printed(runs[0]).splitlines())) == len(files)  # the texts are not all alike
    words = tmp_path / "words.txt"
    words.write_text("ab\nba\nabc\n")
    assert printed(single, "--candidates", str(words)) == printed(runs[0], "--candidates", str(words))
    # Test-time warps: the run directory's choice (transcribe.py) is the export's (serving graph).
    warped = export_run(runs[0], str(tmp_path / "warped"), ["ab", "ba", "abc"], [0.8, 1.0, 1.2])
    from_run = printed(runs[0], "--candidates", str(words), "--candidate-warps", "0.8,1,1.2")
    assert printed(warped) == from_run
    assert len(set(line.split("\t")[1] for line in from_run.splitlines())) >= 2
    for flags, needle in (
        (["--candidate-warps", "1"], "give --candidates too"),
        (["--candidates", str(words), "--candidate-warps", "1,1"], "distinct factors"),
        (["--candidates", str(words), "--candidate-warps", "one"], "expected comma-separated"),
    ):
        with pytest.raises(SystemExit):
            transcribe.main(["--model-dir", runs[0], *flags, *files])
        assert needle in capsys.readouterr().err

    # An ensemble: the export's own text (its members' best-scored hypothesis) is printed, which is
    # not the greedy decoding of the mean probability it serves as log_probs.
    packed = export_run(runs, str(tmp_path / "ensemble"))
    exported = transcribe.ExportedTranscriber(packed)
    features = [load_features(f, FEATURES) for f in files]
    outputs = [exported.predict_on_batch({"features": f[None], "feature_length": np.array([len(f)], "int32")})
               for f in features]
    assert printed(packed) == "".join(f"{f}\t{out['text'][0]}\n" for f, out in zip(files, outputs))
    of_the_mean = [ctc_decode_text(out["log_probs"], out["frame_length"], vocabulary=exported.vocabulary)[0]
                   for out in outputs]
    assert of_the_mean != [out["text"][0] for out in outputs]


def test_an_export_of_another_task_is_a_usage_error(tmp_path, capsys):
    version = tmp_path / "language_model" / "1"
    (version / "assets").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    write_json(str(version / "assets" / "metadata.json"), {"task": "language_model"})
    with pytest.raises(SystemExit) as exit_info:
        transcribe.main(["--model-dir", str(version), "x.wav"])
    assert exit_info.value.code == 2
    assert "is not a transcriber export: its assets/metadata.json has task 'language_model'" in capsys.readouterr().err


def _usage_error(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        transcribe.main([str(a) for a in argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip()


def test_a_language_model_run_points_at_generate(tmp_path, capsys):
    lm_run = _language_model_run(tmp_path / "lm", ["\n", *SPEECH_ALPHABET])
    assert _usage_error(capsys, "--model-dir", lm_run, "x.wav").endswith(
        f"error: Model directory {lm_run} is a character language model run (train.py --task language_model), "
        f"not a speech transcription run: use generate.py --model-dir {lm_run}, or decode with it as "
        f"transcribe.py --lm {lm_run}."
    )


def test_lm_that_is_a_transcription_run_names_the_argument(tmp_path, model_dir, capsys):
    assert _usage_error(capsys, "--model-dir", model_dir, "--lm", model_dir, "x.wav").endswith(
        f"error: argument --lm {model_dir}: it is a speech transcription run; expected a character language "
        "model run (the --output-dir of train.py --task language_model)"
    )
    # Other --lm problems name the argument too.
    assert f"error: argument --lm {tmp_path / 'none'}: Language model run" in _usage_error(
        capsys, "--model-dir", model_dir, "--lm", tmp_path / "none", "x.wav"
    )


def test_unreadable_run_files_are_named(tmp_path, model_dir, capsys):
    model = model_dir / "model.keras"
    whole = model.read_bytes()
    model.write_bytes(whole[: len(whole) // 2])  # truncated
    err = _usage_error(capsys, "--model-dir", model_dir, "x.wav")
    assert (f"error: Model file {str(model)!r} exists but cannot be read as a Keras model "
            "(corrupt or truncated?) [") in err
    assert err.endswith("]")
    model.write_bytes(whole)

    feature_config = model_dir / "feature_config.json"
    feature_config.write_text("{n_mels: 16}")
    assert _usage_error(capsys, "--model-dir", model_dir, "x.wav").endswith(
        f"error: Feature config {feature_config} cannot be read (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)); expected the feature_config.json a `python train.py --task transcription` run "
        "writes (a JSON object of FeatureConfig fields)."
    )
    feature_config.write_text('{"n_mel": 16}')
    assert f"error: Feature config {feature_config} cannot be read (FeatureConfig has no fields ['n_mel']" in (
        _usage_error(capsys, "--model-dir", model_dir, "x.wav")
    )
    write_json(str(feature_config), FEATURES.to_dict())

    vocabulary = model_dir / "vocabulary.json"
    vocabulary.write_text("not json")
    err = _usage_error(capsys, "--model-dir", model_dir, "x.wav")
    assert f"error: Vocabulary file {vocabulary} is not valid JSON: Expecting value" in err


def test_an_export_base_directory_names_its_highest_version(tmp_path, capsys):
    base = tmp_path / "export" / "transcriber"
    for version in ("1", "3", "12"):
        (base / version).mkdir(parents=True)
        (base / version / "saved_model.pb").write_bytes(b"")
    (base / "20").mkdir()  # incomplete: no saved_model.pb
    assert _usage_error(capsys, "--model-dir", base, "x.wav").endswith(
        f"error: {base} is an export base directory (SavedModel versions 1, 3, 12 in numbered subdirectories), "
        f"not a run or a version: use --model-dir {base / '12'} (its highest version)."
    )
    lm_base = tmp_path / "export" / "language_model"
    (lm_base / "2" / "assets").mkdir(parents=True)
    (lm_base / "2" / "saved_model.pb").write_bytes(b"")
    write_json(str(lm_base / "2" / "assets" / "metadata.json"), {"task": "language_model"})
    assert _usage_error(capsys, "--model-dir", lm_base, "x.wav").endswith(
        f"error: {lm_base} is a base directory of language model exports (versions 2), not a transcriber: "
        f"use generate.py --model-dir {lm_base / '2'}"
    )


def test_a_directory_given_as_audio_is_named_and_the_good_files_transcribed(tmp_path, model_dir, capsys):
    good = tmp_path / "good.wav"
    sf.write(good, _tone(0.5, 16000), 16000)
    folder = tmp_path / "recordings"
    folder.mkdir()
    status = transcribe.main(["--model-dir", str(model_dir), str(folder), str(good)])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == f"{good}\ta\n"
    assert captured.err == f"error: {folder}: unreadable: is a directory; expected an audio file (wav, flac, ...)\n"


def test_candidate_warps_are_refused_for_an_mfcc_run(tmp_path, capsys):
    import dataclasses

    import keras

    vocabulary = Vocabulary(SPEECH_ALPHABET)
    config = dataclasses.replace(FEATURES, kind="mfcc", n_mfcc=8)
    directory = tmp_path / "mfcc"
    directory.mkdir()
    build_transcription_model(
        num_features=config.n_features, vocabulary_size=vocabulary.size, hidden_size=4, num_layers=1, dropout=0.0,
    ).save(directory / "model.keras")
    vocabulary.save(directory / "vocabulary.json")
    write_json(str(directory / "feature_config.json"), config.to_dict())
    keras.backend.clear_session()
    words = tmp_path / "words.txt"
    words.write_text("a\nb\n")
    message = _usage_error(capsys, "--model-dir", directory, "--candidates", words, "--candidate-warps", "0.9,1",
                           tmp_path / "missing.wav")
    assert "--candidate-warps" in message and "no mel axis to warp" in message and "'0.9,1'" in message


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_a_bad_max_duration_is_a_usage_error(tmp_path, model_dir, capsys, value):
    # NaN used to lift the limit silently, and 0 or -1 to refuse every file as "too_long".
    audio = tmp_path / "a.wav"
    sf.write(audio, _tone(0.5, 16000), 16000)
    assert _usage_error(capsys, "--model-dir", model_dir, "--max-duration-s", value, audio).endswith(
        f"error: argument --max-duration-s: expected a finite number of seconds > 0, got {float(value)}"
    )
    assert transcribe.main(["--model-dir", str(model_dir), "--max-duration-s", "0.4", str(audio)]) == 1
    assert capsys.readouterr().err == f"error: {audio}: too_long: 0.5 s is longer than --max-duration-s=0.4\n"


def test_a_candidate_outside_the_vocabulary_names_the_file_and_line(tmp_path, model_dir, capsys):
    words = tmp_path / "words.txt"
    words.write_text("one\n\ntwo 2\n")
    message = _usage_error(capsys, "--model-dir", model_dir, "--candidates", words, tmp_path / "missing.wav")
    assert f"Candidates file {str(words)!r}, line 3" in message and "got 'two 2'" in message

"""`python generate.py`: text from a language-model run directory or export."""

import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import pytest

import generate
from models.language_model_io import save_language_model
from models.text_generation import generate_text
from pipelines.vocabulary import Vocabulary
from serving.language_model_export import export_language_model
from tests.fresh_process import exits_before_tensorflow
from tests.test_export_language_model import TEXT, fitted_language_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory (model.keras + vocabulary.json) with its export, as train.py leaves them."""
    vocabulary = Vocabulary.from_text(TEXT)
    model = fitted_language_model(vocabulary, seed=3, num_layers=1, dropout=0.0)
    directory = tmp_path_factory.mktemp("lm_run")
    save_language_model(model, vocabulary, str(directory / "model.keras"))
    export = export_language_model(model, vocabulary, directory / "export", trained_on={"dataset": "hamlet"},
                                   metrics={"val_bpc": 3.0}, config={"hidden_size": 24})
    return directory, export, model, vocabulary


def _run(capsys, *argv):
    assert generate.main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


def test_greedy_continuation_equals_generate_text(run_dir, capsys):
    directory, _, model, vocabulary = run_dir
    out = _run(capsys, "--model-dir", directory, "--prompt", "to b", "--temperature", "0", "--length", "30")
    expected = generate_text(model, vocabulary, "to b", length=30, temperature=0.0)
    assert out == "to b" + expected + "\n"
    assert len(expected) == 30 and len(set(expected)) > 1


def test_export_generates_what_the_run_generates(run_dir, capsys):
    directory, export, _, _ = run_dir
    argv = ("--prompt", "whe", "--prompt", "to", "--temperature", "0", "--length", "25", "--json")
    from_run = [json.loads(line) for line in _run(capsys, "--model-dir", directory, *argv).splitlines()]
    from_export = [json.loads(line) for line in _run(capsys, "--model-dir", export, *argv).splitlines()]
    assert [row["prompt"] for row in from_run] == ["whe", "to"]
    assert from_export == from_run
    assert all(len(row["text"]) == 25 for row in from_run)


def test_seeded_samples_repeat_and_match_generate_text(run_dir, capsys):
    directory, _, model, vocabulary = run_dir
    argv = ("--model-dir", directory, "--prompt", "the", "--num-samples", "3", "--seed", "5", "--length", "20", "--json")
    first = [json.loads(line)["text"] for line in _run(capsys, *argv).splitlines()]
    again = [json.loads(line)["text"] for line in _run(capsys, *argv).splitlines()]
    assert first == again == generate_text(model, vocabulary, ["the"] * 3, length=20, temperature=0.8, seed=5)
    assert len(set(first)) > 1  # three different samples of one prompt


def test_seeded_samples_from_an_export_repeat(run_dir, capsys):
    _, export, _, _ = run_dir
    argv = ("--model-dir", export, "--prompt", "the", "--num-samples", "3", "--length", "20", "--json")
    first, again, other, unseeded = (
        [json.loads(line)["text"] for line in _run(capsys, *argv, *seed).splitlines()]
        for seed in (("--seed", "5"), ("--seed", "5"), ("--seed", "6"), ())
    )
    assert first == again != other
    assert len(set(first)) == 3 and all(len(text) == 20 for text in first)
    assert unseeded != first


def test_an_export_takes_a_temperature_above_float32s_range(run_dir, capsys):
    # 1e39 is a finite temperature (the run directory samples uniformly with it), but as the export's
    # float32 input it was inf, which the export refused with an InvalidArgumentError traceback.
    _, export, _, _ = run_dir
    argv = ("--model-dir", export, "--prompt", "to", "--num-samples", "2", "--length", "20", "--seed", "5", "--json")
    huge = [json.loads(line)["text"] for line in _run(capsys, *argv, "--temperature", "1e39").splitlines()]
    largest = [json.loads(line)["text"] for line in _run(capsys, *argv, "--temperature", "3.4028234663852886e38")
               .splitlines()]
    assert huge == largest
    assert [len(text) for text in huge] == [20, 20]


def test_an_export_without_the_seeded_signature_refuses_a_seed(run_dir, tmp_path, capsys):
    # An export made before `generate_seeded` existed: its serving_default only.
    import tensorflow as tf

    _, export, _, _ = run_dir
    loaded = tf.saved_model.load(str(export))
    old = tmp_path / "language_model" / "1"
    tf.saved_model.save(loaded, str(old), signatures={"serving_default": loaded.signatures["serving_default"]})
    shutil.copytree(os.path.join(export, "assets"), old / "assets", dirs_exist_ok=True)
    with pytest.raises(SystemExit) as exit_info:
        generate.main(["--model-dir", str(old), "--seed", "1"])
    assert exit_info.value.code == 2
    assert re.search(r"argument --seed: the export .*1 has no 'generate_seeded' signature .* "
                     r"export the run again \(python -m serving.export_run RUN_DIR\)", capsys.readouterr().err)
    assert _run(capsys, "--model-dir", old, "--prompt", "to", "--length", "5").startswith("to")


def test_default_prompt_is_a_new_line_and_samples_are_headed(run_dir, capsys):
    directory, _, model, vocabulary = run_dir
    out = _run(capsys, "--model-dir", directory, "--num-samples", "2", "--temperature", "0", "--length", "12")
    greedy = generate_text(model, vocabulary, "\n", length=12, temperature=0.0)
    assert out == f"=== sample 1 ===\n\n{greedy}\n=== sample 2 ===\n\n{greedy}\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--prompt", "ROMEO:"), r"argument --prompt: 'ROMEO:' holds characters \['E', 'M', 'O', 'R'\] the model was not trained on"),
        (("--prompt", ""), "argument --prompt: expected at least one character"),
        (("--length", "-1"), "argument --length: expected a non-negative integer, got -1"),
        (("--temperature", "nan"), "argument --temperature: expected a finite number >= 0"),
        (("--num-samples", "0"), "argument --num-samples: expected a positive integer, got 0"),
        # Upper bounds, before any model is read (an unbounded --length ran out of memory).
        (("--length", "100000000000"), "argument --length: expected at most 100000 characters per sample, "
         "got 100000000000"),
        (("--num-samples", "1001"), "argument --num-samples: expected at most 1000, got 1001"),
        (("--prompt", "to", "--prompt", "be", "--num-samples", "501"), r"arguments --prompt and --num-samples: "
         r"2 prompts x 501 samples is 1002 samples; expected at most 1000 in all"),
        (("--seed", "-1"), r"argument --seed: expected an integer from 0 to 2\*\*63 - 1, got -1"),
        (("--seed", str(2**63)), rf"argument --seed: expected an integer from 0 to 2\*\*63 - 1, got {2**63}"),
    ],
)
def test_bad_arguments_name_the_argument(run_dir, capsys, argv, message):
    directory = run_dir[0]
    with pytest.raises(SystemExit) as exit_info:
        generate.main(["--model-dir", str(directory), *argv])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_missing_model_and_seeded_export_are_refused(run_dir, tmp_path, capsys):
    _, export, _, _ = run_dir
    # A tuning run's directory: no .keras file of its own, only the export of its best model.
    shutil.copytree(export, tmp_path / "tuned" / "export" / "language_model" / "1")
    for argv, message in (
        (["--model-dir", str(tmp_path / "nowhere")], "nowhere' does not exist; expected the --output-dir"),
        (["--model-dir", str(tmp_path / "tuned" / "export" / "language_model" / "1" / "saved_model.pb")],
         "saved_model.pb' is a file, not a directory; expected the --output-dir of `train.py --task language_model`"),
        (["--model-dir", str(tmp_path)], "has neither best.keras nor model.keras"),
        (["--model-dir", str(tmp_path / "tuned")], r"has neither best.keras .* It has an export: use "
         r"--model-dir .*tuned/export/language_model/1$"),
    ):
        with pytest.raises(SystemExit):
            generate.main(argv)
        assert re.search(message, capsys.readouterr().err.strip()), argv


def test_help_states_the_bounds(capsys):
    with pytest.raises(SystemExit):
        generate.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "characters to generate per sample, at most 100000 (default: 500)" in help_text
    assert "at most 1000 samples in all" in help_text


def test_help_and_bad_arguments_do_not_wait_for_tensorflow(tmp_path):
    # TensorFlow is imported where a model is loaded: `--help`, a bad
    # argument and a --model-dir that is not there answer before the ~5 s
    # `import tensorflow`.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    missing = str(tmp_path / "missing")
    codes, stderr, imported = exits_before_tensorflow(
        "generate", [["--help"], ["--length", "-1"], ["--model-dir", missing]], root)
    assert (codes, imported) == ([0, 2, 2], []), stderr
    assert "argument --length: expected a non-negative integer, got -1" in stderr
    assert f"Model directory {missing!r} does not exist; expected the --output-dir of `train.py --task " in stderr


def _transcription_run(directory, *, feature_config=True):
    """A speech transcription run directory as train.py --task transcription leaves it."""
    from models.transcription import build_transcription_model
    from pipelines.audio_features import FeatureConfig
    from pipelines.vocabulary import SPEECH_ALPHABET
    from training.cli import write_json

    vocabulary = Vocabulary(SPEECH_ALPHABET)
    model = build_transcription_model(num_features=16, vocabulary_size=vocabulary.size, hidden_size=4, num_layers=1)
    directory.mkdir()
    model.save(directory / "model.keras")
    vocabulary.save(str(directory / "vocabulary.json"))
    if feature_config:
        write_json(str(directory / "feature_config.json"), FeatureConfig(n_mels=16).to_dict())
    return directory


def _usage_error(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        generate.main([str(a) for a in argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip()


def test_a_transcription_run_or_export_points_at_transcribe(tmp_path, capsys):
    from training.cli import write_json

    for run in (_transcription_run(tmp_path / "asr"), _transcription_run(tmp_path / "bare", feature_config=False)):
        assert _usage_error(capsys, "--model-dir", run).endswith(
            f"error: {run} is a speech transcription run, not a language model: use transcribe.py --model-dir {run}"
        )
    version = tmp_path / "export" / "transcriber" / "3"
    (version / "assets").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    write_json(str(version / "assets" / "metadata.json"), {"task": "transcription"})
    assert _usage_error(capsys, "--model-dir", version).endswith(
        f"error: {version} is a speech transcription export, not a language model: "
        f"use transcribe.py --model-dir {version}"
    )
    assert _usage_error(capsys, "--model-dir", version.parent).endswith(
        f"error: {version.parent} is a base directory of speech transcription exports (versions 3), not a language "
        f"model: use transcribe.py --model-dir {version}"
    )


def test_an_export_base_directory_names_its_highest_version(run_dir, tmp_path, capsys):
    _, export, _, _ = run_dir
    base = os.path.dirname(export)
    assert _usage_error(capsys, "--model-dir", base).endswith(
        f"error: {base} is an export base directory (SavedModel versions 1 in numbered subdirectories), not a run "
        f"or a version: use --model-dir {export} (its highest version)."
    )
    for version in ("2", "10", "9"):
        shutil.copytree(export, tmp_path / "language_model" / version)
    (tmp_path / "language_model" / "11").mkdir()  # incomplete: no saved_model.pb
    err = _usage_error(capsys, "--model-dir", tmp_path / "language_model")
    assert err.endswith(f"(SavedModel versions 2, 9, 10 in numbered subdirectories), not a run or a version: use "
                        f"--model-dir {tmp_path / 'language_model' / '10'} (its highest version).")


def test_a_corrupt_model_or_vocabulary_names_the_file(run_dir, tmp_path, capsys):
    directory = run_dir[0]
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(directory / "vocabulary.json", broken)
    (broken / "model.keras").write_bytes((directory / "model.keras").read_bytes()[:4000])  # truncated
    err = _usage_error(capsys, "--model-dir", broken)
    assert f"error: Model file {str(broken / 'model.keras')!r} exists but cannot be read as a Keras model " \
           "(corrupt or truncated?) [" in err
    assert err.endswith("]")
    shutil.copy(directory / "model.keras", broken)
    (broken / "vocabulary.json").write_text("{characters: 'ab'}", encoding="utf-8")
    err = _usage_error(capsys, "--model-dir", broken)
    assert f"error: Vocabulary file {broken / 'vocabulary.json'} is not valid JSON: Expecting property name" in err
    assert err.endswith("expected the vocabulary.json saved with the model.")
    (broken / "vocabulary.json").write_text('["a", "b"]', encoding="utf-8")
    assert f"error: Vocabulary file {broken / 'vocabulary.json'}: " in _usage_error(capsys, "--model-dir", broken)
    # A corrupt export: the same, naming the version directory.
    _, export, _, _ = run_dir
    version = tmp_path / "export" / "language_model" / "1"
    shutil.copytree(export, version)
    (version / "saved_model.pb").write_bytes(b"garbage\n")
    err = _usage_error(capsys, "--model-dir", version)
    assert f"error: Export {version} cannot be loaded as a SavedModel (" in err
    assert err.endswith("write it again with python -m serving.export_run RUN_DIR).")
    # A partly copied export: saved_model.pb whole, the variables' data cut short (was an IndexError traceback).
    shutil.rmtree(version)
    shutil.copytree(export, version)
    (data,) = (version / "variables").glob("variables.data-*")
    data.write_bytes(data.read_bytes()[:1000])
    err = _usage_error(capsys, "--model-dir", version)
    assert f"error: Export {version} cannot be loaded as a SavedModel (" in err
    assert err.endswith("write it again with python -m serving.export_run RUN_DIR).")


def test_command_line(run_dir):
    directory = run_dir[0]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, os.path.join(root, "generate.py"), "--model-dir", str(directory), "--prompt", "to",
         "--temperature", "0", "--length", "5"],
        capture_output=True, text=True, cwd=root, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("to") and len(result.stdout) == len("to") + 5 + 1


def test_a_reader_that_stops_early_gets_no_traceback(run_dir):
    # `generate.py ... | head -1`: the reader is gone before the samples are printed (closed here
    # at once, seconds before the process has imported TensorFlow), so every write fails (EPIPE).
    directory = run_dir[0]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(
        [sys.executable, os.path.join(root, "generate.py"), "--model-dir", str(directory), "--prompt", "to",
         "--num-samples", "2", "--length", "20", "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
    )
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=120) == 0, err[-2000:]
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_a_tuning_runs_best_model_is_a_run_directory(tmp_path, capsys):
    import train

    corpus = tmp_path / "hamlet.txt"
    corpus.write_text((TEXT + "the quick brown fox jumps over the lazy dog's back\n") * 20, encoding="utf-8")
    out = tmp_path / "tuned"
    argv = [
        "--task", "language_model", "--dataset", corpus, "--embedding-dim", "8", "--sequence-length", "20",
        "--batch-size", "8", "--output-dir", out, "--verbose", "0",
        "--tune", "--tuner", "random", "--max-trials", "1", "--max-epochs", "1",
        "--min-hidden-size", "16", "--max-hidden-size", "16", "--min-num-layers", "1", "--max-num-layers", "1",
    ]
    assert train.main([str(a) for a in argv]) == 0
    best_dir = out / "tuning" / "best"
    best = json.loads((out / "tuning" / "best.json").read_text())
    printed = capsys.readouterr().out.splitlines()
    assert printed[-3:-1] == ["Next:", f"  python generate.py --model-dir {best_dir} --prompt TEXT"]
    assert not [line for line in printed if "/step - loss: " in line]  # --verbose 0 holds for the trials too
    assert f"--model_base_path={os.path.dirname(best['export'])} " in printed[-1]
    assert best["model"]["path"] == str(best_dir)
    assert sorted(os.listdir(best_dir)) == ["config.json", "metrics.json", "model.keras", "vocabulary.json"]
    assert json.loads((best_dir / "metrics.json").read_text()) == best["metrics"]
    assert json.loads((best_dir / "config.json").read_text())["hidden_size"] == 16
    capsys.readouterr()
    # generate.py reads it as a run directory, and it is the model the search exported.
    prompts = ("--prompt", "to b", "--prompt", "whe", "--temperature", "0", "--length", "20", "--json")
    with warnings.catch_warnings():
        # The restored trial's model is saved with its optimizer built: loading it warns of nothing.
        warnings.filterwarnings("error", message="Skipping variable loading")
        from_best = _run(capsys, "--model-dir", best_dir, *prompts)
    from_export = _run(capsys, "--model-dir", best["export"], *prompts)
    assert from_best == from_export and len(from_best.splitlines()) == 2
    # transcribe.py --lm takes it too (the CTC decoder's scorer).
    from models.ctc_lm_decoding import CharacterLanguageModelScorer
    from pipelines.vocabulary import SPEECH_ALPHABET

    scorer = CharacterLanguageModelScorer.from_run(str(best_dir), Vocabulary(SPEECH_ALPHABET))
    assert scorer.lm_vocabulary == Vocabulary.load(str(best_dir / "vocabulary.json"))
    # The search's own directory points at both.
    with pytest.raises(SystemExit):
        generate.main(["--model-dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        f"It is a tuning run: use --model-dir {best_dir} (its best model). "
        f"It has an export: use --model-dir {best['export']}"
    ), err

"""Usage errors of `python -m serving.export_run` (bad run lists, export bases, warps, candidates)."""

import dataclasses
import json
import os

import pytest

from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary
from serving.export_run import main
from tests.test_export_ensemble import CONFIG, _write_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _write_run(str(tmp_path_factory.mktemp("runs") / "seed1"), 1, Vocabulary(SPEECH_ALPHABET))


def _usage_error(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_the_same_run_twice_is_not_an_ensemble(run, tmp_path, capsys):
    message = _usage_error(capsys, run, os.path.join(run, "."), "--export_base", tmp_path / "out")
    assert "given twice" in message and run in message
    assert not os.path.exists(tmp_path / "out")


def test_an_export_base_that_is_a_file_names_the_flag(run, tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("keep me\n")
    for base in (file, file / "sub"):
        message = _usage_error(capsys, run, "--export_base", base)
        assert f"--export_base {base}" in message and "not a directory" in message
    assert file.read_text() == "keep me\n"


def test_candidate_warps_are_refused_for_mfcc_runs(tmp_path, capsys):
    mfcc = _write_run(str(tmp_path / "mfcc"), 3, Vocabulary(SPEECH_ALPHABET),
                      feature_config=dataclasses.replace(CONFIG, kind="mfcc"))
    words = tmp_path / "words.txt"
    words.write_text("bead\ncab\n", encoding="utf-8")
    message = _usage_error(capsys, mfcc, "--candidates", words, "--candidate_warps", "0.9,1")
    assert "--candidate_warps 0.9,1" in message and "no mel axis to warp" in message
    assert not os.path.exists(os.path.join(mfcc, "export"))


def test_a_candidate_outside_the_vocabulary_names_its_line(run, tmp_path, capsys):
    words = tmp_path / "words.txt"
    words.write_text("bead\n\ntwo 2\n", encoding="utf-8")
    message = _usage_error(capsys, run, "--candidates", words, "--export_base", tmp_path / "out")
    assert f"{str(words)!r}, line 3" in message and "got 'two 2'" in message


def _exit_message(*argv):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    return str(exit_info.value.code)


def test_damaged_run_files_are_named_not_a_traceback(run, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "metrics.json").write_text('{"val_cer": 0.1')  # cut short
    message = _exit_message(broken, "--export_base", tmp_path / "out")
    assert message.startswith(f"{broken / 'metrics.json'} cannot be read as JSON (")
    (broken / "metrics.json").write_text("{}")
    (broken / "vocabulary.json").unlink()
    assert _exit_message(broken, "--export_base", tmp_path / "out") == (
        f"{broken / 'vocabulary.json'} does not exist; expected the directory of a finished train.py run.")
    shutil.copy(os.path.join(run, "vocabulary.json"), broken)
    (broken / "model.keras").write_bytes((broken / "model.keras").read_bytes()[:3000])  # truncated
    message = _exit_message(broken, "--export_base", tmp_path / "out")
    assert message.startswith(f"Model file {str(broken / 'model.keras')!r} exists but cannot be read as a Keras "
                              "model (corrupt or truncated?)")
    # A file where the export's model directory goes: a usage error, the file kept.
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "transcriber").write_text("keep me\n")
    message = _usage_error(capsys, run, "--export_base", tmp_path / "base")
    assert f"cannot write the export at {tmp_path / 'base' / 'transcriber'}" in message
    assert (tmp_path / "base" / "transcriber").read_text() == "keep me\n"


def test_run_files_of_the_wrong_shape_are_named_not_a_traceback(run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "feature_config.json").write_text('{"n_mels": 40, "warp": 1}')  # a field of another version
    fields = sorted(field.name for field in dataclasses.fields(CONFIG))
    assert _exit_message(broken, "--export_base", tmp_path / "out") == (
        f"{broken / 'feature_config.json'}: FeatureConfig has no fields ['warp']; expected keys among {fields}.")
    (broken / "feature_config.json").write_text('{"n_mels": 0}')
    assert _exit_message(broken, "--export_base", tmp_path / "out") == (
        f"{broken / 'feature_config.json'}: Received an invalid value for FeatureConfig field `n_mels`, expected a "
        "positive integer, got 0.")
    shutil.copy(os.path.join(run, "feature_config.json"), broken)
    for name in ("config.json", "metrics.json"):
        (broken / name).write_text("[1, 2]")
        assert _exit_message(broken, "--export_base", tmp_path / "out") == (
            f"{broken / name} holds a JSON list, not an object; expected the file train.py wrote there.")
        shutil.copy(os.path.join(run, name), broken)
    assert not os.path.exists(tmp_path / "out")


def test_an_export_base_holding_versions_is_refused(run, tmp_path, capsys):
    # A server's --model_base_path (or one of its versions) as --export_base: the export went to
    # <it>/transcriber/1, which no server watching that folder sees.
    from serving.export_run import export_run

    version = export_run(run, str(tmp_path / "export"))
    model_dir = os.path.dirname(version)
    message = _usage_error(capsys, run, "--export_base", model_dir)
    assert (f"--export_base {model_dir} holds SavedModel versions (1): it is a model's folder; expected the folder "
            "that holds the model folders (it writes <export_base>/transcriber/N or <export_base>/language_model/N), "
            f"e.g. {tmp_path / 'export'}") in message
    message = _usage_error(capsys, run, "--export_base", version)
    assert (f"--export_base {version} is a SavedModel version directory; expected the folder that holds the model "
            f"folders (it writes <export_base>/transcriber/N or <export_base>/language_model/N), "
            f"e.g. {tmp_path / 'export'}") in message
    assert sorted(os.listdir(model_dir)) == ["1"] and "transcriber" not in os.listdir(version)


def test_candidate_warps_that_start_with_a_dash_reach_their_check(tmp_path, capsys):
    # A run's files as _read_run reads them; the checks come before any model is loaded.
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"")
    Vocabulary(SPEECH_ALPHABET).save(str(run / "vocabulary.json"))
    (run / "feature_config.json").write_text(json.dumps(CONFIG.to_dict()))
    words = tmp_path / "words.txt"
    words.write_text("bead\ncab\n", encoding="utf-8")
    for warps in ("-1,1", "-0.9,1"):  # argparse took the first for a flag: "expected one argument"
        message = _usage_error(capsys, run, "--candidates", words, "--candidate_warps", warps)
        assert f"--candidate_warps {warps}: " in message and "distinct factors in [0.5, 1.5]" in message
    assert not os.path.exists(run / "export")


def test_a_search_directory_points_at_its_best_model_which_exports_beside_the_search(run, tmp_path, capsys):
    import shutil

    # train.py --tune's layout: DIR/tuning/best is a run directory, DIR/export the search's own export.
    search = tmp_path / "search"
    shutil.copytree(run, search / "tuning" / "best")
    (search / "tuning" / "best.json").write_text("{}")
    best = search / "tuning" / "best"
    assert _exit_message(search) == (
        f"{search / 'model.keras'} does not exist; expected the directory of a finished train.py run. "
        f"It is a tuning run (train.py --tune): use {best} (its best model).")
    assert main([str(best) + os.sep]) == 0
    written = capsys.readouterr().out.strip()
    assert written == str(search / "export" / "transcriber" / "1")
    assert os.path.isfile(os.path.join(written, "saved_model.pb"))
    assert not os.path.exists(best / "export")
    # A folder called tuning/best that is no search's (no best.json) exports into its own export/.
    from serving.export_run import _own_export_base

    plain = tmp_path / "other" / "tuning" / "best"
    plain.mkdir(parents=True)
    assert _own_export_base(str(plain)) == str(plain / "export")

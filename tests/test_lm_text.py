"""Language-model text for transcription scoring: normalisation, formats, the command."""

import pytest

from data.lm_text import main, normalised_lines


def test_lines_are_normalised_and_digits_dropped():
    lines = ["Hello,  World!\n", "It's 4 o'clock\n", "   \n", "Café -- au lait\r\n"]
    assert normalised_lines(lines) == (["hello world", "cafe au lait"], 2)


def test_lines_the_transcription_alphabet_cannot_spell_are_dropped(tmp_path, capsys):
    # Letters that keep no a-z spelling after accents are stripped (ß, ø, ł, Greek) would put
    # characters into the language model that no transcription holds.
    lines = ["Straße is long\n", "The Øresund bridge\n", "Łódź too\n", "π is pi\n", "Naïve café\n"]
    assert normalised_lines(lines) == (["naive cafe"], 4)
    source, out = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("".join(lines), encoding="utf-8")
    assert main([str(source), str(out)]) == 0
    assert out.read_text(encoding="utf-8") == "naive cafe\n"
    assert "1 sentences, 10 characters (4 lines dropped)" in capsys.readouterr().out


def test_ljspeech_takes_the_normalised_field_and_names_a_bad_line():
    lines = ["LJ1|Volume 2.|Volume two.\n", "LJ2|Dr. Smith|Doctor Smith\n"]
    assert normalised_lines(lines, fmt="ljspeech") == (["volume two", "doctor smith"], 0)
    with pytest.raises(ValueError, match=r"metadata.csv, line 2: expected LJSpeech .* got 2 field"):
        normalised_lines(["a|b|c\n", "a|b\n"], fmt="ljspeech", source="metadata.csv")


def test_command_writes_one_sentence_per_line(tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("One, two.\nThree 3\nFour!\n", encoding="utf-8")
    out = tmp_path / "new_dir" / "out.txt"  # its folder is made
    assert main([str(source), str(out)]) == 0
    assert out.read_text(encoding="utf-8") == "one two\nfour\n"
    assert "2 sentences, 11 characters (1 lines dropped)" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.txt"), str(out)]) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_interleave_spreads_the_extra_lines_evenly():
    from data.lm_text import interleave

    assert interleave(list("abcdef"), ["X", "Y"], 1) == ["X", "a", "b", "c", "Y", "d", "e", "f"]
    assert interleave(list("abcd"), ["X"], 2) == ["X", "a", "b", "X", "c", "d"]
    assert interleave(list("ab"), [], 3) == ["a", "b"]
    assert interleave([], ["X"], 2) == ["X", "X"]


def test_transcripts_come_from_the_training_split_only(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = ["path\tspeaker\tsplit\ttext"]
    for i, (split, text) in enumerate(
        [("train", "Hello there"), ("train", "Good night!"), ("validation", "secret words"), ("test", "hidden")]
    ):
        sf.write(folder / f"u{i}.wav", np.random.default_rng(i).normal(0, 0.1, 8000), 16000)
        rows.append(f"u{i}.wav\t\t{split}\t{text}")
    (folder / "manifest.tsv").write_text("\n".join(rows) + "\n")
    source = tmp_path / "in.txt"
    source.write_text("one\ntwo\nthree\nfour\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert main([str(source), str(out), "--transcripts", str(folder), "--transcript-repeats", "2",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert sorted(set(lines) - {"one", "two", "three", "four"}) == ["good night", "hello there"]
    assert len(lines) == 8 and lines.count("hello there") == 2
    assert "2 training transcripts x 2 mixed in" in capsys.readouterr().out
    assert main([str(source), str(out), "--transcripts", str(tmp_path / "nowhere")]) == 2
    assert "--transcripts" in capsys.readouterr().err

    # A training split without a usable transcript is an error, not a silent no-op.
    silent = tmp_path / "silent"
    silent.mkdir()
    sf.write(silent / "u0.wav", np.random.default_rng(0).normal(0, 0.1, 8000), 16000)
    sf.write(silent / "u1.wav", np.random.default_rng(1).normal(0, 0.1, 8000), 16000)
    (silent / "manifest.tsv").write_text("path\tspeaker\tsplit\ttext\nu0.wav\t\ttrain\t\nu1.wav\t\tvalidation\thello\n")
    assert main([str(source), str(out), "--transcripts", str(silent), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "has no usable transcript (1 without text or with digits)" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_output_that_is_the_input_is_refused_before_writing(tmp_path, capsys, how):
    import os

    source = tmp_path / "in.txt"
    source.write_text("Hello, World!\nIt's 4 o'clock\n", encoding="utf-8")
    out = {"same path": source, "symlink": tmp_path / "link.txt", "hard link": tmp_path / "hard.txt"}[how]
    if how == "symlink":
        os.symlink(source, out)
    elif how == "hard link":
        os.link(source, out)
    with pytest.raises(SystemExit) as exit_info:
        main([str(source), str(out)])
    assert exit_info.value.code == 2
    assert (f"error: output {out} is the input file {source}; expected a new file "
            "(writing it would replace the source text).") in capsys.readouterr().err
    assert source.read_text(encoding="utf-8") == "Hello, World!\nIt's 4 o'clock\n"


def test_output_directory_or_under_a_file_is_a_usage_error(tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("one\n", encoding="utf-8")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(source), str(folder)])
    assert exit_info.value.code == 2
    assert f"error: output {folder} is a directory; expected the path of a text file to write." in (
        capsys.readouterr().err
    )
    under_file = tmp_path / "in.txt" / "sub" / "out.txt"
    with pytest.raises(SystemExit) as exit_info:
        main([str(source), str(under_file)])
    assert exit_info.value.code == 2
    assert f"error: output {under_file}: {source} is a file, not a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "in.txt"]
    assert list(folder.iterdir()) == []


def test_output_inside_the_transcripts_folder_is_refused(tmp_path, capsys):
    dataset = tmp_path / "corpus"
    dataset.mkdir()
    manifest = dataset / "manifest.tsv"
    manifest.write_text("path\tspeaker\tsplit\ttext\n")
    source = tmp_path / "in.txt"
    source.write_text("one\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main([str(source), str(manifest), "--transcripts", f"{dataset}:test_fraction=0.1"])
    assert exit_info.value.code == 2
    assert f"output {manifest} is inside the --transcripts dataset folder {dataset}" in capsys.readouterr().err
    assert manifest.read_text() == "path\tspeaker\tsplit\ttext\n"


def test_a_failed_write_keeps_the_previous_output(tmp_path, capsys, monkeypatch):
    import os

    import data.lm_text

    source = tmp_path / "in.txt"
    source.write_text("one\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    out.write_text("previous\n", encoding="utf-8")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.lm_text.os, "replace", full_disk)
    assert main([str(source), str(out)]) == 2
    assert f"lm_text: error: output {out}: cannot write the text ([Errno 28] No space left on device)." in (
        capsys.readouterr().err
    )
    assert out.read_text(encoding="utf-8") == "previous\n"
    assert sorted(os.listdir(tmp_path)) == ["in.txt", "out.txt"]  # no temporary file left behind


def test_an_input_that_is_not_utf8_or_a_directory_is_named(tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_bytes("one\r\ncaf\u00e9\n".encode("latin-1"))
    out = tmp_path / "out.txt"
    assert main([str(source), str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"lm_text: error: {source}, line 2: expected UTF-8 text, got byte 0xe9 at column 4. "
        "Convert it first, e.g. `iconv -f latin1 -t utf-8`.")
    assert main([str(tmp_path), str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"lm_text: error: {tmp_path} is a directory; expected a text file."
    assert not out.exists()
    # A byte-order mark and Windows line ends read as plain UTF-8 text.
    source.write_bytes("\ufeffOne\r\nTwo\r\n".encode("utf-8"))
    assert main([str(source), str(out)]) == 0
    assert out.read_text(encoding="utf-8") == "one\ntwo\n"

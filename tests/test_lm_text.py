"""Language-model text for transcription scoring: normalisation, formats, the command."""

import pytest

from data.lm_text import main, normalised_lines


def test_lines_are_normalised_and_digits_dropped():
    lines = ["Hello,  World!\n", "It's 4 o'clock\n", "   \n", "Café -- au lait\r\n"]
    assert normalised_lines(lines) == (["hello world", "cafe au lait"], 2)


def test_ljspeech_takes_the_normalised_field_and_names_a_bad_line():
    lines = ["LJ1|Volume 2.|Volume two.\n", "LJ2|Dr. Smith|Doctor Smith\n"]
    assert normalised_lines(lines, fmt="ljspeech") == (["volume two", "doctor smith"], 0)
    with pytest.raises(ValueError, match=r"metadata.csv, line 2: expected LJSpeech .* got 2 field"):
        normalised_lines(["a|b|c\n", "a|b\n"], fmt="ljspeech", source="metadata.csv")


def test_command_writes_one_sentence_per_line(tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("One, two.\nThree 3\nFour!\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert main([str(source), str(out)]) == 0
    assert out.read_text(encoding="utf-8") == "one two\nfour\n"
    assert "2 sentences, 11 characters (1 lines dropped)" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.txt"), str(out)]) == 2
    assert "missing.txt" in capsys.readouterr().err

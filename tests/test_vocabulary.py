"""Tests for `pipelines.vocabulary`: ids, round trips, saving, errors."""

import json

import pytest

from pipelines.vocabulary import (
    PAD,
    SPEECH_ALPHABET,
    UNK,
    Vocabulary,
    normalize_transcript,
    spell_out_transcript,
)


def test_reserved_ids_and_character_ids():
    vocab = Vocabulary.from_text("hello world")
    assert (vocab.pad_id, vocab.blank_id, vocab.unk_id) == (0, 0, 1)
    # sorted distinct characters: ' ', d, e, h, l, o, r, w -> ids 2..9
    assert vocab.characters == (" ", "d", "e", "h", "l", "o", "r", "w")
    assert vocab.size == len(vocab) == 10
    assert vocab.encode("hello") == [5, 4, 6, 6, 7]
    assert vocab.tokens() == [PAD, UNK, " ", "d", "e", "h", "l", "o", "r", "w"]


def test_encode_decode_round_trip_and_unknowns():
    text = "To be, or not to be:\nthat is the question."
    vocab = Vocabulary.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text
    assert vocab.encode("tZ") == [vocab.encode("t")[0], vocab.unk_id]
    assert vocab.unknown_characters("toZQ!") == ["!", "Q", "Z"]
    # padding is dropped, unknown and out-of-range ids print as '?'
    assert vocab.decode([0, vocab.encode("t")[0], 1, 0, 999]) == "t??"


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary(["b", "a", "\n", "é"])
    path = tmp_path / "vocabulary.json"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded == vocab
    assert loaded.encode("ab\né") == [3, 2, 4, 5]
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved == {"characters": ["b", "a", "\n", "é"], "pad_id": 0, "blank_id": 0, "unk_id": 1}
    assert Vocabulary.from_config(vocab.get_config()) == vocab


@pytest.mark.parametrize(
    "characters, message",
    [
        (["a", "bc"], "expected single characters, got 'bc'"),
        (["a", "b", "a"], "expected no duplicates, got ['a'] more than once"),
        ([], "expected at least one character, got none"),
    ],
)
def test_invalid_characters(characters, message):
    with pytest.raises(ValueError, match="argument `characters`") as error:
        Vocabulary(characters)
    assert message in str(error.value)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Vocabulary.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="is not valid JSON"):
        Vocabulary.load(bad)
    with pytest.raises(ValueError, match="`pad_id` is 3, but this version of the project uses 0"):
        Vocabulary.from_config({"characters": ["a"], "pad_id": 3})
    with pytest.raises(ValueError, match="no field `characters`"):
        Vocabulary.from_config({"pad_id": 0})


def test_normalize_transcript_and_speech_alphabet():
    assert normalize_transcript("  Héllo,  WORLD! It\u2019s 2 o'clock ") == "hello world it's 2 o'clock"
    assert SPEECH_ALPHABET[:2] == (" ", "'") and len(SPEECH_ALPHABET) == 28
    vocab = Vocabulary(SPEECH_ALPHABET)
    assert vocab.encode("a b") == [4, 2, 5]


def test_spell_out_transcript_known_values():
    assert spell_out_transcript("Press 1, or # to exit. (beep)") == "press one or pound to exit"
    assert spell_out_transcript("press * to toggle pause, press # to enter") == (
        "press star to toggle pause press pound to enter"
    )
    assert spell_out_transcript("Use the 7 key for Q and the 9 key for Z.") == (
        "use the seven key for q and the nine key for z"
    )
    assert spell_out_transcript("3D audio enabled") == "three d audio enabled"
    assert spell_out_transcript("press 0 for help") == "press zero for help"
    assert spell_out_transcript("at [@]") == "at"
    assert spell_out_transcript("[ascending tones]") == ""
    assert spell_out_transcript("(1 second of silence)") == ""
    # Longer numbers have no single spoken form: they stay digits (refused later).
    assert spell_out_transcript("dial 500 now") == "dial 500 now"
    assert spell_out_transcript("a 28.8 kilobit modem, extension 1234") == "a 28 8 kilobit modem extension 1234"
    # Text without digits or symbols is normalize_transcript's.
    assert spell_out_transcript("Don\u2019t STOP!") == normalize_transcript("Don\u2019t STOP!") == "don't stop"


def test_normalize_transcript_lowercases_compatibility_forms_and_keeps_every_apostrophe():
    # NFKD turns some lowercase-less forms into capitals: they are lowercased too.
    assert normalize_transcript("\u210dello 20\u2103 5 \u3392") == "hello 20 c 5 mhz"
    assert normalize_transcript("\u1d2cB") == "ab"
    # The left quotation mark and the modifier letter apostrophe are apostrophes, as ’ is.
    assert normalize_transcript("don\u2018t") == normalize_transcript("don\u02bct") == "don't"
    assert normalize_transcript("\u2018quoted\u2019") == "'quoted'"
    for text in ("\u3392", "\u210dello", "don\u02bct", "Stra\u00dfe"):
        assert normalize_transcript(normalize_transcript(text)) == normalize_transcript(text)

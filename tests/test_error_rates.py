"""Character and word error rates on known strings."""

import jiwer
import pytest

from models.error_rates import error_rates


def test_perfect_transcripts_score_zero():
    assert error_rates(["hello world", "a b"], ["hello world", "a b"]) == {"cer": 0.0, "wer": 0.0}


def test_known_single_utterance():
    # "word" vs "world": one deletion among 11 characters; 1 of 2 words wrong.
    rates = error_rates(["hello world"], ["hello word"])
    assert rates["cer"] == pytest.approx(1 / 11)
    assert rates["wer"] == pytest.approx(1 / 2)


def test_corpus_level_sums_errors_over_utterances():
    # 1 substitution in "cat" (3 chars), 2 deletions in "dogs" -> "do" (4 chars): 3 / 7.
    # Words: "cat"->"cot" wrong, "dogs"->"do" wrong: 2 / 2.
    rates = error_rates(["cat", "dogs"], ["cot", "do"])
    assert rates["cer"] == pytest.approx(3 / 7)
    assert rates["wer"] == pytest.approx(1.0)


def test_insertions_can_exceed_one():
    rates = error_rates(["a"], ["a b c"])
    assert rates["wer"] == pytest.approx(2.0)
    assert rates["cer"] == pytest.approx(4.0)


def test_empty_hypothesis_is_all_deletions():
    assert error_rates(["abc de"], [""]) == {"cer": 1.0, "wer": 1.0}


def test_empty_reference_counts_insertions():
    # 'xy' against '' inserts 2 characters; the other utterance has 3 chars, 0 errors.
    rates = error_rates(["", "abc"], ["xy", "abc"])
    assert rates["cer"] == pytest.approx(2 / 3)
    assert rates["wer"] == pytest.approx(1 / 1)
    assert error_rates([""], [""]) == {"cer": 0.0, "wer": 0.0}


def test_agrees_with_jiwer():
    refs = ["the cat sat on the mat", "a quick brown fox", "hello there"]
    hyps = ["the cat sat on mat", "a quick brown fax", "hello their friend"]
    rates = error_rates(refs, hyps)
    assert rates["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    assert rates["wer"] == pytest.approx(jiwer.wer(refs, hyps))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="2 references and 1 hypotheses"):
        error_rates(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no references"):
        error_rates([], [])
    with pytest.raises(TypeError, match="`hypotheses` at index 1, expected a string, got int"):
        error_rates(["a", "b"], ["a", 3])

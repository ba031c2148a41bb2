"""CTC decoding to text: greedy and beam search on hand-made outputs."""

import numpy as np
import pytest

from models.ctc_decoding import ctc_choose_text, ctc_decode_text
from pipelines.vocabulary import Vocabulary

VOCABULARY = Vocabulary(" ab")  # ids: 0 blank, 1 unknown, 2 ' ', 3 'a', 4 'b'
BLANK, SPACE, A, B = VOCABULARY.blank_id, 2, 3, 4


def one_hot_log_probs(paths, confidence=0.9):
    """`(batch, frames, classes)` log-probs whose argmax follows `paths`."""
    frames = max(len(path) for path in paths)
    probs = np.full((len(paths), frames, VOCABULARY.size), (1 - confidence) / (VOCABULARY.size - 1))
    for row, path in enumerate(paths):
        for t, class_id in enumerate(path):
            probs[row, t, class_id] = confidence
        for t in range(len(path), frames):
            probs[row, t, A] = confidence  # padding frames say "a"
            probs[row, t, BLANK] = (1 - confidence) / (VOCABULARY.size - 1)
    return np.log(probs).astype("float32")


@pytest.mark.parametrize("strategy", ["greedy", "beam_search"])
def test_repeats_merge_and_blanks_separate(strategy):
    paths = [
        [A, A, BLANK, A, B, B, BLANK],          # "aa-abb-" -> "aab"
        [BLANK, B, BLANK, BLANK, B, A, A],      # "-b--baa" -> "bba"
        [BLANK, BLANK, BLANK],                  # nothing
        [A, SPACE, SPACE, B, BLANK, SPACE],     # "a  b -" -> "a b" (space strip)
    ]
    log_probs = one_hot_log_probs(paths)
    lengths = np.array([len(p) for p in paths], "int32")
    texts = ctc_decode_text(log_probs, lengths, vocabulary=VOCABULARY, strategy=strategy)
    assert texts == ["aab", "bba", "", "a b"]


def test_frames_past_the_length_are_ignored():
    log_probs = one_hot_log_probs([[B, BLANK, B, A, A]])
    assert ctc_decode_text(log_probs, np.array([3]), vocabulary=VOCABULARY) == ["bb"]
    assert ctc_decode_text(log_probs, np.array([5]), vocabulary=VOCABULARY) == ["bba"]


def test_beam_search_sums_alignments_where_greedy_cannot():
    # Two frames, each blank 0.6 / 'a' 0.4. Greedy: "--" -> "" (p = 0.36).
    # Beam: P("a") = 0.4*0.6 + 0.6*0.4 + 0.4*0.4 = 0.64 > P("") = 0.36.
    probs = np.full((1, 2, VOCABULARY.size), 1e-9)
    probs[0, :, BLANK] = 0.6
    probs[0, :, A] = 0.4
    log_probs = np.log(probs).astype("float32")
    lengths = np.array([2], "int32")
    assert ctc_decode_text(log_probs, lengths, vocabulary=VOCABULARY) == [""]
    assert ctc_decode_text(
        log_probs, lengths, vocabulary=VOCABULARY, strategy="beam_search", beam_width=4
    ) == ["a"]


def test_unknown_id_decodes_as_question_mark():
    log_probs = one_hot_log_probs([[A, VOCABULARY.unk_id, B]])
    assert ctc_decode_text(log_probs, np.array([3]), vocabulary=VOCABULARY) == ["a?b"]


def test_bad_arguments_are_named():
    log_probs = one_hot_log_probs([[A]])
    with pytest.raises(ValueError, match="`strategy`, expected one of .*got 'best'"):
        ctc_decode_text(log_probs, [1], vocabulary=VOCABULARY, strategy="best")
    with pytest.raises(ValueError, match="`beam_width`, expected a positive integer, got 0"):
        ctc_decode_text(log_probs, [1], vocabulary=VOCABULARY, strategy="beam_search", beam_width=0)
    with pytest.raises(ValueError, match=r"`log_probs`, expected shape \(batch, frames, 5\).*got \(1, 1, 7\)"):
        ctc_decode_text(np.zeros((1, 1, 7), "float32"), [1], vocabulary=VOCABULARY)


def test_choose_text_scores_candidates_by_ctc_likelihood():
    # Two frames; per-frame probabilities of blank, 'a', 'b' (the rest tiny).
    probs = np.full((1, 2, VOCABULARY.size), 1e-6)
    probs[0, 0, [BLANK, A, B]] = [0.2, 0.7, 0.1 - 3e-6]
    probs[0, 1, [BLANK, A, B]] = [0.5, 0.1, 0.4 - 3e-6]
    log_probs = np.log(probs).astype("float32")
    texts, scores = ctc_choose_text(log_probs, np.array([2], "int32"), ["a", "b", "ab", "aa", "aba"],
                                    vocabulary=VOCABULARY)
    p = probs[0]
    # "a": aa, a-, -a; "b": bb, b-, -b; "ab": a then b; "aa" needs a blank between: 3 frames.
    expected = {
        "a": p[0, A] * p[1, A] + p[0, A] * p[1, BLANK] + p[0, BLANK] * p[1, A],
        "b": p[0, B] * p[1, B] + p[0, B] * p[1, BLANK] + p[0, BLANK] * p[1, B],
        "ab": p[0, A] * p[1, B],
    }
    np.testing.assert_allclose(scores[0, :3], [-np.log(expected[t]) for t in ("a", "b", "ab")], rtol=1e-4)
    assert np.isinf(scores[0, 3]) and np.isinf(scores[0, 4])  # cannot fit in 2 frames
    assert texts == ["a"]  # 0.07 + 0.35 + 0.02 = 0.44 against "ab"'s 0.28


def test_choose_text_fixes_greedy_spelling_and_respects_lengths():
    paths = [
        [A, A, BLANK, B, B, A],   # greedy "aba"
        [B, BLANK, BLANK, A],     # greedy "ba"
        [A],                      # one frame: no two-letter candidate fits
    ]
    log_probs = one_hot_log_probs(paths)
    lengths = np.array([len(p) for p in paths], "int32")
    assert ctc_decode_text(log_probs, lengths, vocabulary=VOCABULARY) == ["aba", "ba", "a"]
    texts, scores = ctc_choose_text(log_probs, lengths, ["ab", "ba"], vocabulary=VOCABULARY)
    assert texts == ["ab", "ba", ""]
    assert scores.shape == (3, 2) and np.isinf(scores[2]).all()


@pytest.mark.parametrize(
    "candidates, message",
    [([], "it is empty"), (["ab", "ab"], "duplicates"), (["ab", ""], "non-empty text"),
     (["ab", "abc"], r"vocabulary's characters ' ab', got 'abc'")],
)
def test_choose_text_rejects_bad_candidates(candidates, message):
    with pytest.raises(ValueError, match=message):
        ctc_choose_text(one_hot_log_probs([[A]]), np.array([1], "int32"), candidates, vocabulary=VOCABULARY)

"""CTC decoding to text: greedy and beam search on hand-made outputs."""

import numpy as np
import pytest

from models.ctc_decoding import ctc_decode_text
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

"""`models.ctc_alignment`: the Viterbi path of a known transcript, checked by brute force."""

import itertools

import numpy as np
import pytest

from models.ctc_alignment import ctc_forced_alignment, word_frames


def _collapse(path, blank):
    """The labels a CTC path spells: repeats merged, blanks dropped."""
    out = []
    for previous, label in zip([None, *path[:-1]], path):
        if label != blank and label != previous:
            out.append(label)
    return out


def _best_by_enumeration(log_probs, labels, blank):
    """The best path spelling `labels`, over every path of the frames' length."""
    best, best_score = None, -np.inf
    for path in itertools.product(range(log_probs.shape[1]), repeat=log_probs.shape[0]):
        if _collapse(path, blank) == list(labels):
            score = sum(log_probs[t, c] for t, c in enumerate(path))
            if score > best_score:
                best, best_score = path, score
    return best, best_score


def test_docstring_example_and_a_repeat_that_needs_a_blank():
    log_probs = np.log(np.array([[0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]))
    positions, score = ctc_forced_alignment(log_probs, [1, 2], blank_id=0)
    assert positions.tolist() == [0, -1, 1]
    assert score == pytest.approx(3 * np.log(0.8))
    # "aa" must put a blank between its two a's, even where every frame prefers "a".
    log_probs = np.log(np.array([[0.1, 0.9], [0.2, 0.8], [0.1, 0.9]]))  # blank 0, "a" 1
    positions, score = ctc_forced_alignment(log_probs, [1, 1], blank_id=0)
    assert positions.tolist() == [0, -1, 1]
    assert score == pytest.approx(np.log(0.9 * 0.2 * 0.9))


@pytest.mark.parametrize("seed", range(6))
def test_the_path_is_the_best_of_all_paths(seed):
    rng = np.random.default_rng(seed)
    frames, classes, blank = 6, 4, int(rng.integers(4))
    others = [c for c in range(classes) if c != blank]
    labels = list(rng.choice(others, size=int(rng.integers(1, 4))))
    if seed == 0:
        labels = [others[0], others[0], others[1]]  # a repeat
    log_probs = np.log(rng.dirichlet(np.ones(classes), size=frames))
    positions, score = ctc_forced_alignment(log_probs, labels, blank_id=blank)
    expected_path, expected_score = _best_by_enumeration(log_probs, labels, blank)
    assert score == pytest.approx(expected_score)
    path = [blank if p < 0 else labels[p] for p in positions]
    assert _collapse(path, blank) == labels
    assert sum(log_probs[t, c] for t, c in enumerate(path)) == pytest.approx(expected_score)
    assert path == list(expected_path)  # random scores: the best path is unique
    # Positions move forward one label at a time.
    on_labels = [p for p in positions if p >= 0]
    assert on_labels == sorted(on_labels) and set(on_labels) == set(range(len(labels)))


def test_a_long_transcript_follows_its_frames():
    # 90 labels, 271 states (past int8's range), each label on its own two frames, blanks between.
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 5, size=90)
    log_probs = np.full((270, 5), np.log(0.01))
    for index, label in enumerate(labels):
        log_probs[3 * index : 3 * index + 2, label] = np.log(0.96)
        log_probs[3 * index + 2, 0] = np.log(0.96)
    positions, _ = ctc_forced_alignment(log_probs, labels, blank_id=0)
    assert positions.tolist() == [p for index in range(90) for p in (index, index, -1)]


def test_labels_that_cannot_fit_and_bad_arguments():
    log_probs = np.zeros((2, 3))
    assert ctc_forced_alignment(log_probs, [1, 1], blank_id=0) == (None, float("-inf"))  # needs 3 frames
    assert ctc_forced_alignment(log_probs, [1, 2, 1], blank_id=0) == (None, float("-inf"))
    assert ctc_forced_alignment(np.zeros((0, 3)), [1], blank_id=0) == (None, float("-inf"))
    positions, _ = ctc_forced_alignment(log_probs, [], blank_id=0)  # nothing said: every frame blank
    assert positions.tolist() == [-1, -1]
    with pytest.raises(ValueError, match=r"`labels`.*other than the blank \(0\), got \[1, 0\]"):
        ctc_forced_alignment(log_probs, [1, 0], blank_id=0)
    with pytest.raises(ValueError, match=r"`labels`.*in \[0, 3\).*got \[5\]"):
        ctc_forced_alignment(log_probs, [5], blank_id=0)
    with pytest.raises(ValueError, match=r"shape \(frames, classes\), got shape \(1, 2, 3\)"):
        ctc_forced_alignment(np.zeros((1, 2, 3)), [1], blank_id=0)


def test_word_frames_reads_each_words_first_and_last_frame():
    # labels "ab c" (space 3): a on frames 1-2, b on 4, the space on 6, c on 8-9.
    labels = [1, 2, 3, 4]
    positions = np.array([-1, 0, 0, -1, 1, -1, 2, -1, 3, 3, -1])
    assert word_frames(positions, labels, space_id=3) == [(1, 4), (8, 9)]
    assert word_frames(positions, [1, 2, 4, 5], space_id=3) == [(1, 9)]  # no space: one word
    # Through an alignment: three words, each where its log-probabilities put it.
    log_probs = np.full((12, 6), np.log(0.02))
    for frame, label in {1: 1, 2: 1, 4: 3, 5: 2, 7: 3, 9: 4, 10: 5}.items():
        log_probs[frame, label] = np.log(0.9)
    for frame in (0, 3, 6, 8, 11):
        log_probs[frame, 0] = np.log(0.9)
    text = [1, 3, 2, 3, 4, 5]  # "a b de" with space 3
    positions, _ = ctc_forced_alignment(log_probs, text, blank_id=0)
    assert positions.tolist() == [-1, 0, 0, -1, 1, 2, -1, 3, -1, 4, 5, -1]
    assert word_frames(positions, text, space_id=3) == [(1, 2), (5, 5), (9, 10)]

"""CTC forced alignment: where in an utterance a trained model hears each character and word.

`ctc_forced_alignment` finds the single most likely CTC path (Viterbi) of a
known transcript through a model's per-frame log-probabilities; `word_frames`
reads each word's first and last frame off that path. `data.word_splice`
uses them to cut training recordings between words.

NumPy only: neither Keras nor TensorFlow has a forced aligner (their CTC ops
sum over the paths, `keras.ops.ctc_loss`, or search for the text,
`keras.ops.ctc_decode`), and an utterance of `T` frames and `L` characters
costs `T` vectorised steps over `2L + 1` states.
"""

import numpy as np


def ctc_forced_alignment(log_probs, labels, *, blank_id):
    """The most likely CTC path of `labels` through `log_probs`.

    A CTC path emits, at every frame, either the blank or the current
    character; it may move on to the next character, or skip the blank
    between two different characters. Of all paths that spell `labels`
    this returns the one with the highest log-probability (ties go to the
    path that stays longest on earlier states).

    Args:
        log_probs: float `(frames, classes)`, log-probabilities (or logits)
            of one utterance, its valid frames only.
        labels: int sequence, the transcript's class ids (no blank, no
            padding).
        blank_id: The CTC blank's class id.

    Returns:
        `(positions, score)`: int `(frames,)` with, for each frame, the
        index into `labels` of the character it emits, -1 for the blank;
        and the path's summed log-probability. `(None, -inf)` when the
        labels cannot fit the frames (one frame per character and one
        blank between repeated characters).

    Example:

    ```python
    import numpy as np
    log_probs = np.log(np.array([[0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]))
    positions, score = ctc_forced_alignment(log_probs, [1, 2], blank_id=0)
    # positions == [0, -1, 1]
    ```
    """
    log_probs = np.asarray(log_probs, np.float64)
    if log_probs.ndim != 2:
        raise ValueError(
            "Received an invalid value for argument `log_probs`, expected an array of shape "
            f"(frames, classes), got shape {log_probs.shape}."
        )
    labels = np.asarray(labels, np.int64).reshape(-1)
    frames, classes = log_probs.shape
    if labels.size and (labels.min() < 0 or labels.max() >= classes or np.any(labels == blank_id)):
        raise ValueError(
            "Received an invalid value for argument `labels`, expected class ids in "
            f"[0, {classes}) other than the blank ({blank_id}), got {labels.tolist()}."
        )
    states = 2 * len(labels) + 1
    extended = np.full(states, blank_id, np.int64)
    extended[1::2] = labels
    # State s may be entered from s - 2 when it is a character unlike the one before it.
    skip = np.zeros(states, bool)
    skip[3::2] = labels[1:] != labels[:-1]
    if frames == 0 or frames < len(labels) + int(np.sum(labels[1:] == labels[:-1])):
        return None, float("-inf")
    emit = log_probs[:, extended]  # (frames, states)
    score = np.full(states, -np.inf)
    score[0] = emit[0, 0]
    if states > 1:
        score[1] = emit[0, 1]
    back = np.zeros((frames, states), np.int8)  # 0: stayed, 1: from s - 1, 2: from s - 2
    candidates = np.full((3, states), -np.inf)
    for t in range(1, frames):
        candidates[0] = score
        candidates[1, 1:] = score[:-1]
        candidates[2, 2:] = np.where(skip[2:], score[:-2], -np.inf)
        step = np.argmax(candidates, axis=0)  # the first of equals: staying
        score = candidates[step, np.arange(states)] + emit[t]
        back[t] = step
    last = states - 1
    if states > 1 and score[states - 2] > score[last]:
        last = states - 2
    total = float(score[last])
    if not np.isfinite(total):
        return None, float("-inf")
    path = np.empty(frames, np.int64)
    state = last
    for t in range(frames - 1, -1, -1):
        path[t] = state
        state -= int(back[t, state])  # not int8 arithmetic: states pass 127
    positions = np.where(path % 2 == 1, (path - 1) // 2, -1)
    return positions, total


def word_frames(positions, labels, *, space_id):
    """Each word's first and last frame on a forced-alignment path.

    Args:
        positions: int `(frames,)` from `ctc_forced_alignment`.
        labels: The class ids that were aligned; words are the runs of
            non-space ids between `space_id`s.
        space_id: The class id of the space.

    Returns:
        A list of `(first_frame, last_frame)` pairs, one per word, in order
        (every character is on at least one frame of a path).
    """
    positions = np.asarray(positions)
    labels = list(labels)
    spans, start = [], None
    for index, label in enumerate(labels + [space_id]):
        if label != space_id and start is None:
            start = index
        elif label == space_id and start is not None:
            on_word = np.flatnonzero((positions >= start) & (positions < index))
            spans.append((int(on_word[0]), int(on_word[-1])))
            start = None
    return spans

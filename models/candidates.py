"""The texts of closed-vocabulary decoding (`--candidates`) and its test-time
warps (`--candidate-warps`): read and checked without Keras or TensorFlow, so
that `train.py` refuses a bad file with its flags. The decoding itself is
`models.ctc_decoding.ctc_choose_text`."""

import numbers


def check_candidates(candidates, *, vocabulary):
    """`candidates` as a list, or a ValueError saying what is wrong with them."""
    candidates = list(candidates)
    if not candidates:
        raise ValueError("Received an invalid value for argument `candidates`: it is empty.")
    for text in candidates:
        if not isinstance(text, str) or not text.strip() or vocabulary.unknown_characters(text):
            raise ValueError(
                "Received an invalid value for argument `candidates`: every candidate must be a "
                f"non-empty text of the vocabulary's characters {''.join(vocabulary.characters)!r}, got {text!r}."
            )
    if len(set(candidates)) != len(candidates):
        raise ValueError("Received an invalid value for argument `candidates`: it has duplicates.")
    return candidates


def check_candidate_warps(candidate_warps, candidates, *, feature_kind="log_mel"):
    """`candidate_warps` as a tuple of floats; a ValueError naming the argument otherwise.

    The factors of test-time warping for closed-vocabulary decoding
    (`serving.transcription_export.export_transcriber`, `transcribe.py
    --candidate-warps`): distinct, in [0.5, 1.5], only with candidates, and
    only for features with a mel axis to warp (`feature_kind` log_mel).
    """
    if candidate_warps is None:
        return None
    if feature_kind != "log_mel":
        raise ValueError(
            f"Received `candidate_warps` for {feature_kind} features: cepstra have no mel axis to warp; "
            "expected no warps with them."
        )
    if candidates is None:
        raise ValueError(
            "Received `candidate_warps` without `candidates`: the warps average the likelihood of "
            "closed-vocabulary candidates; give the candidate texts too."
        )
    warps = list(candidate_warps) if isinstance(candidate_warps, (list, tuple)) else None
    if (
        not warps
        or any(isinstance(w, bool) or not isinstance(w, numbers.Real) or not 0.5 <= w <= 1.5 for w in warps)
        or len(set(warps)) != len(warps)
    ):
        raise ValueError(
            "Received an invalid value for argument `candidate_warps`, expected a non-empty list of "
            f"distinct factors in [0.5, 1.5] (e.g. [0.92, 0.96, 1.0, 1.04, 1.08]), got {candidate_warps!r}."
        )
    return tuple(float(w) for w in warps)


def load_candidates(path):
    """The candidate texts in the file `path`, one per line, for `ctc_choose_text`.

    Lines are normalised as transcripts are (lowercase, punctuation to
    spaces); blank and repeated lines are dropped. A ValueError names the
    file when it cannot be read or has no text.
    """
    from pipelines.vocabulary import normalize_transcript

    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Candidates file {path!r} cannot be read as UTF-8 text: {error}") from error
    candidates = list(dict.fromkeys(filter(None, (normalize_transcript(line) for line in lines))))
    if not candidates:
        raise ValueError(f"Candidates file {path!r} has no text; expected one candidate per line.")
    return candidates


def read_candidates_file(path, vocabulary):
    """The candidate texts of the file `path` (`load_candidates`), checked against `vocabulary`.

    A ValueError names the file, and the line of the first text with
    characters outside the vocabulary.
    """
    from pipelines.vocabulary import normalize_transcript

    candidates = load_candidates(path)
    try:
        return check_candidates(candidates, vocabulary=vocabulary)
    except ValueError as error:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f.read().splitlines(), 1):
                text = normalize_transcript(line)
                if text and vocabulary.unknown_characters(text):
                    raise ValueError(f"Candidates file {path!r}, line {number}: {error}") from error
        raise ValueError(f"Candidates file {path!r}: {error}") from error

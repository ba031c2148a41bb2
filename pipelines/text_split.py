"""The 90/10 character split of a text, checked against the window length."""

import numbers


def _fits(length, sequence_length, validation_fraction):
    cut = int(length * (1.0 - validation_fraction))
    return min(cut, length - cut) >= sequence_length + 1


def _smallest_text_length(sequence_length, validation_fraction):
    """Fewest characters whose two splits each hold `sequence_length + 1`."""
    # Both splits only grow with the text, so bisect the first length that fits.
    low, high = sequence_length + 1, 2 * (sequence_length + 1)
    while not _fits(high, sequence_length, validation_fraction):
        low, high = high, 2 * high
    while low < high:
        middle = (low + high) // 2
        if _fits(middle, sequence_length, validation_fraction):
            high = middle
        else:
            low = middle + 1
    return high


def split_text(text, *, sequence_length, validation_fraction=0.1, source="text"):
    """Split `text` by characters: the first part trains, the last validates.

    The cut is at `int(len(text) * (1 - validation_fraction))`, the cut TFDS'
    `tiny_shakespeare` makes (its validation and test halves together are our
    validation split). Both parts must hold at least one window of
    `sequence_length` inputs plus its next character.

    Args:
        text: The whole text, a string.
        sequence_length: Positive integer, characters per training window.
        validation_fraction: Float in (0, 1), the share of characters, taken
            from the end, that validates. Default 0.1.
        source: Name of the text's origin (a file path) for error messages.

    Returns:
        `(train_text, validation_text)`, two strings whose concatenation is
        `text`.

    Raises:
        ValueError: naming `source` and the lengths found and needed, when the
            text is shorter than a window or either split is.
    """
    if (
        isinstance(sequence_length, bool)
        or not isinstance(sequence_length, numbers.Integral)
        or sequence_length <= 0
    ):
        raise ValueError(
            "Received an invalid value for argument `sequence_length`, expected "
            f"a positive integer, got {sequence_length!r}."
        )
    if (
        isinstance(validation_fraction, bool)
        or not isinstance(validation_fraction, numbers.Real)
        or not 0.0 < validation_fraction < 1.0
    ):
        raise ValueError(
            "Received an invalid value for argument `validation_fraction`, "
            f"expected a float in (0, 1), got {validation_fraction!r}."
        )
    if sequence_length >= len(text):
        raise ValueError(
            f"sequence_length={sequence_length} is longer than the text of "
            f"{source!r} ({len(text)} characters); expected a text of at least "
            f"{_smallest_text_length(sequence_length, validation_fraction)} characters "
            "for this sequence length, or a smaller --sequence-length."
        )
    cut = int(len(text) * (1.0 - validation_fraction))
    train_text, validation_text = text[:cut], text[cut:]
    need = sequence_length + 1
    for split, part in (("training", train_text), ("validation", validation_text)):
        if len(part) < need:
            raise ValueError(
                f"Text of {source!r} is too short: {len(text)} characters give a "
                f"{split} split of {len(part)} characters, but sequence_length="
                f"{sequence_length} needs at least {need} in each split "
                f"(validation is the last {validation_fraction:.0%}); expected a text "
                f"of at least {_smallest_text_length(sequence_length, validation_fraction)} "
                "characters, or a smaller --sequence-length."
            )
    return train_text, validation_text

"""`error_rates`: corpus character and word error rates with jiwer."""

import jiwer


def error_rates(references, hypotheses):
    """Character and word error rates of `hypotheses` against `references`.

    Both rates are corpus-level: the edit operations (substitutions,
    deletions, insertions) summed over all utterances, divided by the total
    reference characters (CER, spaces included) or words (WER), as jiwer
    computes them. An empty reference counts its hypothesis' characters or
    words as insertions (jiwer alone refuses empty references).

    Args:
        references: Sequence of reference strings (normalised transcripts).
        hypotheses: Sequence of hypothesis strings, same length.

    Returns:
        `{"cer": float, "wer": float}`; 0.0 is perfect, and either can
        exceed 1.0 when the hypotheses insert a lot.

    Example:

    ```python
    error_rates(["hello world"], ["hello word"])  # {"cer": 1/11, "wer": 0.5}
    ```
    """
    references = list(references)
    hypotheses = list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(
            "Received references and hypotheses of different lengths, "
            f"expected equal counts, got {len(references)} references and "
            f"{len(hypotheses)} hypotheses."
        )
    if not references:
        raise ValueError(
            "Received no references, expected at least one utterance to score."
        )
    for name, texts in (("references", references), ("hypotheses", hypotheses)):
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(
                    f"Received an invalid value in `{name}` at index {index}, "
                    f"expected a string, got {type(text).__name__}."
                )
    char_errors = word_errors = char_total = word_total = 0
    scored = [(r, h) for r, h in zip(references, hypotheses) if r.split()]
    for reference, hypothesis in zip(references, hypotheses):
        if not reference.split():
            char_errors += len(hypothesis.strip())
            word_errors += len(hypothesis.split())
    if scored:
        refs, hyps = zip(*scored)
        chars = jiwer.process_characters(list(refs), list(hyps))
        words = jiwer.process_words(list(refs), list(hyps))
        char_errors += chars.substitutions + chars.deletions + chars.insertions
        word_errors += words.substitutions + words.deletions + words.insertions
        char_total = chars.substitutions + chars.deletions + chars.hits
        word_total = words.substitutions + words.deletions + words.hits
    return {
        "cer": char_errors / char_total if char_total else float(char_errors > 0),
        "wer": word_errors / word_total if word_total else float(word_errors > 0),
    }

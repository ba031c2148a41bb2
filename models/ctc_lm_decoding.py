"""CTC prefix beam search with a character language model (shallow fusion).

Greedy and plain beam search spell what the acoustics say; on words the
transcriber never heard in training they spell badly ("leisure" -> "leeser").
A character language model trained on plain text (`train.py --task
language_model` on text normalised to the transcription alphabet) knows how
English is spelled. Shallow fusion adds its log-probability to the CTC score
of every prefix in the beam:

    score(prefix) = log P_ctc(prefix | audio) + lm_weight * log P_lm(prefix)
                    + char_bonus * len(prefix)

`lm_weight` and `char_bonus` are tuned on validation data; the bonus offsets
the language model's pull towards short texts.

A `Lexicon` (a word list) constrains the same search to texts made of its
words: a prefix may only go on with a character that keeps its last word a
prefix of some word, and a space (or the end) only follows a whole word. It
generalises closed-vocabulary decoding (a handful of whole texts) to open
sentences over a dictionary.

    from models.ctc_lm_decoding import CharacterLanguageModelScorer, Lexicon, ctc_beam_search_with_lm
    scorer = CharacterLanguageModelScorer.from_run("runs/lm_ljspeech", speech_vocabulary)
    texts = ctc_beam_search_with_lm(log_probs, frame_length, vocabulary=speech_vocabulary,
                                    scorer=scorer, lm_weight=0.5, char_bonus=1.0)
    lexicon = Lexicon.from_file("runs/ljspeech_lm.txt", speech_vocabulary)  # any text: its words
    texts = ctc_beam_search_with_lm(log_probs, frame_length, vocabulary=speech_vocabulary,
                                    scorer=scorer, lexicon=lexicon, lm_weight=0.5, char_bonus=1.0)
"""

import math
import numbers

import numpy as np

# A sentence ends with a line break in the text the language model reads.
END_OF_TEXT = "\n"


class CharacterLanguageModelScorer:
    """Next-character log-probabilities of a trained character language model.

    The model's distribution is restricted to the transcription alphabet
    (plus the end of text, when the model knows the line break) and
    renormalised, so a model trained on any text that contains every
    character of the alphabet can score transcriptions. Texts start after a
    line break (the start of a line of the training text), or after a space
    when the model has no line break.

    Args:
        model: A model from `build_language_model` (or loaded from a run).
        lm_vocabulary: The `Vocabulary` the language model was trained with.
        speech_vocabulary: The transcriber's `Vocabulary`.
        source: What to call the model in error messages (its run directory).

    Raises:
        ValueError: a character of the transcription alphabet is not in the
            language model's vocabulary.
    """

    def __init__(self, model, lm_vocabulary, speech_vocabulary, *, source="the language model"):
        import tensorflow as tf

        from models.text_generation import build_step_model

        missing = [c for c in speech_vocabulary.characters if lm_vocabulary.unknown_characters(c)]
        if missing:
            raise ValueError(
                f"{source} cannot score transcriptions: its vocabulary lacks {missing!r} of the "
                f"transcription alphabet {''.join(speech_vocabulary.characters)!r}; train it on text "
                "normalised to that alphabet (see `python -m data.lm_text`)."
            )
        self.speech_vocabulary = speech_vocabulary
        self.lm_vocabulary = lm_vocabulary
        self.has_end = not lm_vocabulary.unknown_characters(END_OF_TEXT)
        start = END_OF_TEXT if self.has_end else " "
        self._start_id = lm_vocabulary.encode(start)[0]
        # LM id of every transcriber class id (-1: never a character: blank, unknown).
        self._lm_id = np.full(speech_vocabulary.size, -1, np.int64)
        for char in speech_vocabulary.characters:
            self._lm_id[speech_vocabulary.encode(char)[0]] = lm_vocabulary.encode(char)[0]
        self._columns = np.flatnonzero(self._lm_id >= 0)  # class ids that are characters
        kept = [int(i) for i in self._lm_id[self._columns]]
        if self.has_end:
            kept.append(lm_vocabulary.encode(END_OF_TEXT)[0])
        self._kept = np.array(kept, np.int64)
        step_model = build_step_model(model)
        self._state_units = [int(state.shape[-1]) for state in step_model.inputs[1:]]
        self._step = tf.function(
            lambda ids, states: step_model([ids, *states], training=False), reduce_retracing=True
        )

    @classmethod
    def from_run(cls, run_dir, speech_vocabulary):
        """The scorer of the language model saved in `run_dir` (best.keras, else model.keras)."""
        from models.language_model_io import load_language_model_run

        model, vocabulary, path = load_language_model_run(run_dir)
        return cls(model, vocabulary, speech_vocabulary, source=f"Language model {path!r}")

    def _advance(self, lm_ids, states):
        """`(log_probs, end_log_probs, states)` after feeding `lm_ids` from `states`."""
        outputs = self._step(np.asarray(lm_ids, np.int32)[:, None], [np.asarray(s) for s in states])
        logits = np.asarray(outputs[0], np.float64)[:, self._kept]
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        out = np.full((len(lm_ids), self.speech_vocabulary.size), -np.inf)
        out[:, self._columns] = log_probs[:, : len(self._columns)]
        end = log_probs[:, -1] if self.has_end else np.zeros(len(lm_ids))
        return out, end, [np.asarray(s) for s in outputs[1:]]

    def start(self):
        """The scorer's state at the start of a text: `(log_probs, end_log_prob, states)`."""
        states = [np.zeros((1, units), np.float32) for units in self._state_units]
        log_probs, end, states = self._advance([self._start_id], states)
        return log_probs[0], float(end[0]), [s[0] for s in states]

    def extend(self, parents, class_ids):
        """The states after each parent state reads one transcriber class id.

        Args:
            parents: List of `states` (as returned by `start`/`extend`).
            class_ids: Transcriber ids of the characters read, one per parent.

        Returns:
            A list of `(log_probs, end_log_prob, states)`, one per parent:
            log_probs over the transcriber's class ids (-inf for the blank
            and the unknown id).
        """
        lm_ids = self._lm_id[np.asarray(class_ids, np.int64)]
        states = [np.stack([p[layer] for p in parents]) for layer in range(len(self._state_units))]
        log_probs, end, new_states = self._advance(lm_ids, states)
        return [
            (log_probs[i], float(end[i]), [s[i] for s in new_states]) for i in range(len(parents))
        ]


class Lexicon:
    """The words a transcription may be made of, for `ctc_beam_search_with_lm`.

    Args:
        words: Iterable of words (strings over the vocabulary's characters,
            no spaces); repeats are ignored.
        vocabulary: The transcriber's `Vocabulary`.
        source: What to call the word list in error messages (its file).

    Raises:
        ValueError: no words, or a word with a space or a character outside
            the vocabulary (the message names the source and the word).
    """

    def __init__(self, words, vocabulary, *, source="the lexicon"):
        self.vocabulary = vocabulary
        self.source = source
        self.space_id = vocabulary.encode(" ")[0] if " " in vocabulary.characters else None
        encoded = set()
        for word in words:
            unknown = vocabulary.unknown_characters(word)
            if not word or " " in word or unknown:
                what = f"has characters {''.join(unknown)!r} outside the vocabulary" if unknown else "is no single word"
                raise ValueError(
                    f"{source}: {word!r} {what}; expected words over "
                    f"{''.join(c for c in vocabulary.characters if c != ' ')!r}."
                )
            encoded.add(tuple(vocabulary.encode(word)))
        if not encoded:
            raise ValueError(f"{source} has no words.")
        self.words = frozenset(encoded)
        self.prefixes = frozenset(word[:end] for word in encoded for end in range(1, len(word) + 1))

    def __len__(self):
        return len(self.words)

    def __repr__(self):
        return f"Lexicon({len(self)} words from {self.source})"

    @classmethod
    def from_file(cls, path, vocabulary):
        """The words of the text file `path`: every line normalised as transcripts
        are (`normalize_transcript`) and split at spaces, so a word list (one
        per line) and running text both work. Errors name the file and line."""
        from pipelines.vocabulary import normalize_transcript

        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"Lexicon file {path!r} cannot be read as UTF-8 text: {error}") from error
        words = {}
        for number, line in enumerate(lines, 1):
            for word in normalize_transcript(line).split():
                words.setdefault(word, number)
        bad = next(((w, n) for w, n in words.items() if vocabulary.unknown_characters(w)), None)
        if bad is not None:
            word, number = bad
            raise ValueError(
                f"Lexicon file {path!r} line {number}: word {word!r} has characters "
                f"{''.join(vocabulary.unknown_characters(word))!r} outside the transcription alphabet "
                f"{''.join(vocabulary.characters)!r}."
            )
        if not words:
            raise ValueError(f"Lexicon file {path!r} has no words; expected a word list or text.")
        return cls(words, vocabulary, source=f"Lexicon file {path!r}")

    def allows(self, partial, class_id):
        """Whether a prefix whose last (unfinished) word is `partial` (a tuple
        of class ids, () after a space or at the start) may read `class_id`."""
        if class_id == self.space_id:
            return partial in self.words
        return partial + (class_id,) in self.prefixes


def _check_number(name, value, *, minimum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or (
        minimum is not None and value < minimum
    ):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"Received an invalid value for argument `{name}`, expected a finite number{bound}, got {value!r}.")


def ctc_beam_search_with_lm(
    log_probs, frame_length, *, vocabulary, scorer=None, beam_width=16, lm_weight=0.5, char_bonus=0.0,
    prune_log_prob=-10.0, lexicon=None,
):
    """CTC prefix beam search, optionally fused with a character language model
    and constrained to the words of a lexicon.

    Each prefix keeps the log-probability of all alignments that end in a
    blank and of those that end in its last character (Hannun et al., 2014),
    so repeated characters need a blank between them, as in greedy decoding.
    Prefixes are ranked by the fused score in the module docstring; the
    language model's end-of-text probability is added at the last frame
    when the model knows the line break. With `scorer=None` (or
    `lm_weight=0` and `char_bonus=0`) this is plain CTC prefix beam search.

    With a `lexicon`, every prefix is a sequence of its words followed by a
    prefix of one (see `Lexicon.allows`), and the text returned is the best
    prefix whose last word is whole; if no prefix in the final beam is, the
    best one is returned without its unfinished last word.

    Args:
        log_probs: float `(batch, frames, classes)` log-probabilities
            (log-softmax of the transcriber's outputs).
        frame_length: int `(batch,)`, the valid frames of each utterance.
        vocabulary: The transcriber's `Vocabulary` (blank id, characters).
        scorer: A `CharacterLanguageModelScorer`, or None.
        beam_width: Positive integer, prefixes kept after each frame.
        lm_weight: Weight of the language model's log-probability, >= 0.
        char_bonus: Added per character of the prefix.
        prune_log_prob: Characters below this log-probability at a frame
            are not tried there (the blank always is).
        lexicon: A `Lexicon` made for this vocabulary, or None.

    Returns:
        A list of `batch` strings (runs of spaces collapsed, ends stripped).
    """
    if isinstance(beam_width, bool) or not isinstance(beam_width, numbers.Integral) or beam_width <= 0:
        raise ValueError(
            f"Received an invalid value for argument `beam_width`, expected a positive integer, got {beam_width!r}."
        )
    _check_number("lm_weight", lm_weight, minimum=0)
    _check_number("char_bonus", char_bonus)
    _check_number("prune_log_prob", prune_log_prob)
    log_probs = np.asarray(log_probs, np.float64)
    frame_length = np.asarray(frame_length, np.int64)
    if log_probs.ndim != 3 or log_probs.shape[-1] != vocabulary.size:
        raise ValueError(
            "Received an invalid value for argument `log_probs`, expected shape "
            f"(batch, frames, {vocabulary.size}) for this vocabulary, got {log_probs.shape}."
        )
    if frame_length.shape != (log_probs.shape[0],):
        raise ValueError(
            "Received an invalid value for argument `frame_length`, expected shape "
            f"({log_probs.shape[0]},), got {frame_length.shape}."
        )
    if scorer is not None and tuple(scorer.speech_vocabulary.characters) != tuple(vocabulary.characters):
        raise ValueError(
            "Received an invalid value for argument `scorer`: it was made for the transcription alphabet "
            f"{''.join(scorer.speech_vocabulary.characters)!r}, expected {''.join(vocabulary.characters)!r}."
        )
    if lexicon is not None and tuple(lexicon.vocabulary.characters) != tuple(vocabulary.characters):
        raise ValueError(
            "Received an invalid value for argument `lexicon`: it was made for the transcription alphabet "
            f"{''.join(lexicon.vocabulary.characters)!r}, expected {''.join(vocabulary.characters)!r}."
        )
    characters = np.array([i for i in range(vocabulary.size) if i not in (vocabulary.blank_id, vocabulary.unk_id)])
    use_lm = scorer is not None and lm_weight > 0
    texts = []
    for row in range(log_probs.shape[0]):
        frames = log_probs[row, : max(0, min(int(frame_length[row]), log_probs.shape[1]))]
        best = _search(frames, vocabulary.blank_id, characters, scorer if use_lm else None, beam_width,
                       lm_weight, char_bonus, prune_log_prob, lexicon)
        texts.append(" ".join(vocabulary.decode(list(best)).split()))
    return texts


def _search(frames, blank, characters, scorer, beam_width, lm_weight, char_bonus, prune_log_prob, lexicon=None):
    """The best prefix (tuple of class ids) for one utterance's frames."""
    neg_inf = -np.inf
    # prefix -> [log P(alignments ending in a blank), log P(ending in its last character)]
    beams = {(): [0.0, neg_inf]}
    lm_score = {(): 0.0}  # prefix -> lm_weight * log P_lm(prefix)
    lm_next = {}  # prefix -> (next-character log-probs over class ids, end log-prob, states)
    partial = {(): ()}  # prefix -> its last, unfinished word (class ids); with a lexicon only
    if scorer is not None:
        lm_next[()] = scorer.start()

    def lm_ready(prefixes):
        todo = [p for p in prefixes if p not in lm_next]
        if todo:
            results = scorer.extend([lm_next[p[:-1]][2] for p in todo], [p[-1] for p in todo])
            lm_next.update(zip(todo, results))

    def fused(item):
        prefix, (p_blank, p_char) = item
        return np.logaddexp(p_blank, p_char) + lm_score[prefix] + char_bonus * len(prefix)

    for frame in frames:
        if scorer is not None:
            lm_ready(list(beams))  # every beam's parent is known: it was in the last beam
        tried = [int(c) for c in characters[frame[characters] >= prune_log_prob]]
        extended = {}

        def add(prefix, blank_part, char_part):
            entry = extended.setdefault(prefix, [neg_inf, neg_inf])
            entry[0] = np.logaddexp(entry[0], blank_part)
            entry[1] = np.logaddexp(entry[1], char_part)

        for prefix, (p_blank, p_char) in beams.items():
            total = np.logaddexp(p_blank, p_char)
            add(prefix, total + frame[blank], neg_inf)
            for c in tried:
                repeat = bool(prefix) and prefix[-1] == c
                if repeat:
                    add(prefix, neg_inf, p_char + frame[c])  # the same character goes on
                if lexicon is not None and not lexicon.allows(partial[prefix], c):
                    continue
                longer = prefix + (c,)
                # A repeated character needs a blank between the two.
                add(longer, neg_inf, (p_blank if repeat else total) + frame[c])
                if longer not in lm_score:
                    lm_score[longer] = lm_score[prefix] + (
                        lm_weight * lm_next[prefix][0][c] if scorer is not None else 0.0
                    )
                    if lexicon is not None:
                        partial[longer] = () if c == lexicon.space_id else partial[prefix] + (c,)
        beams = dict(sorted(extended.items(), key=fused, reverse=True)[:beam_width])

    final = beams
    if lexicon is not None:
        final = {p: v for p, v in beams.items() if not partial[p] or partial[p] in lexicon.words}
        if not final:  # nothing whole: the best prefix, its unfinished word dropped
            best = max(beams.items(), key=fused)[0]
            return best[: len(best) - len(partial[best])]
    if scorer is not None and scorer.has_end:
        lm_ready(list(final))
        return max(final.items(), key=lambda item: fused(item) + lm_weight * lm_next[item[0]][1])[0]
    return max(final.items(), key=fused)[0]

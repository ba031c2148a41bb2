"""CTC prefix beam search with a character language model: exactness, fusion, the scorer."""

import itertools

import numpy as np
import pytest

from models.ctc_decoding import ctc_decode_text
from models.ctc_lm_decoding import END_OF_TEXT, CharacterLanguageModelScorer, Lexicon, ctc_beam_search_with_lm
from pipelines.vocabulary import Vocabulary

VOCAB = Vocabulary(["a", "b"])  # ids: 0 blank, 1 unknown, 2 a, 3 b


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _exact_best(frames, vocabulary, allowed=lambda labelling: True):
    """The most probable labelling by summing every alignment (no unknown id),
    among the labellings (decoded strings) `allowed` accepts."""
    classes = [0] + list(range(vocabulary.num_reserved, vocabulary.size))
    totals = {}
    for path in itertools.product(classes, repeat=len(frames)):
        merged = [c for i, c in enumerate(path) if c != 0 and (i == 0 or c != path[i - 1])]
        key = vocabulary.decode(merged)
        if allowed(key):
            totals[key] = np.logaddexp(totals.get(key, -np.inf), sum(frames[t, c] for t, c in enumerate(path)))
    return max(totals, key=totals.get)


def test_without_a_language_model_it_finds_the_exact_most_probable_text():
    rng = np.random.default_rng(0)
    for trial in range(20):
        logits = rng.normal(0, 2, (1, 5, VOCAB.size))
        logits[..., VOCAB.unk_id] = -1e9  # never in the brute-force sum either
        log_probs = _log_softmax(logits)
        # Beam 64 holds every prefix of up to 5 frames of 2 characters: the search is exact.
        got = ctc_beam_search_with_lm(log_probs, [5], vocabulary=VOCAB, beam_width=64, prune_log_prob=-1e9)
        assert got == [_exact_best(log_probs[0], VOCAB)], trial


def test_without_a_language_model_it_agrees_with_keras_beam_search():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, (6, 12, VOCAB.size)).astype(np.float32)
    logits[..., VOCAB.unk_id] = -1e9  # our search never emits the unknown id
    log_probs = _log_softmax(logits)
    lengths = np.array([12, 9, 12, 3, 12, 7])
    ours = ctc_beam_search_with_lm(log_probs, lengths, vocabulary=VOCAB, beam_width=16, prune_log_prob=-1e9)
    keras_beam = ctc_decode_text(log_probs, lengths, vocabulary=VOCAB, strategy="beam_search", beam_width=16)
    assert ours == keras_beam


class BigramScorer:
    """A stand-in language model: fixed next-character log-probs by last character."""

    has_end = False
    speech_vocabulary = VOCAB

    def __init__(self, table):
        self.table = table  # last class id (None at the start) -> log-probs over class ids

    def start(self):
        return self.table[None], 0.0, [None]

    def extend(self, parents, class_ids):
        return [(self.table[c], 0.0, [c]) for c in class_ids]


def test_the_language_model_overrules_weak_acoustic_evidence():
    # Two frames: "a" for sure, then "b" (0.6) or "a"-after-blank... no: the
    # second frame is "b" 0.55 vs blank 0.45, so the acoustics say "ab".
    p = np.full((1, 2, VOCAB.size), 1e-9)
    p[0, 0, 2] = 1.0
    p[0, 1, 3], p[0, 1, 0] = 0.55, 0.45
    log_probs = np.log(p / p.sum(-1, keepdims=True))
    a, b = 2, 3
    uniform = np.log(np.array([1e-12, 1e-12, 0.5, 0.5]))
    after_a = np.log(np.array([1e-12, 1e-12, 0.5, 0.05]))  # "b" after "a" is unlikely
    scorer = BigramScorer({None: uniform, a: after_a, b: uniform})
    assert ctc_beam_search_with_lm(log_probs, [2], vocabulary=VOCAB) == ["ab"]
    assert ctc_beam_search_with_lm(log_probs, [2], vocabulary=VOCAB, scorer=scorer, lm_weight=0.0) == ["ab"]
    # Fused: "ab" = log .55 + w log .5 + w log .05, "a" = log .45 + w log .5.
    # "a" wins when log(.55/.45) < -w log .05, i.e. w > 0.067.
    assert ctc_beam_search_with_lm(log_probs, [2], vocabulary=VOCAB, scorer=scorer, lm_weight=0.06) == ["ab"]
    assert ctc_beam_search_with_lm(log_probs, [2], vocabulary=VOCAB, scorer=scorer, lm_weight=0.08) == ["a"]
    # A bonus per character pays back the language model's cost of "b":
    # "ab" wins again when bonus > -w log .05 - log(.55/.45) = 0.3 * 3.0 - 0.2 = 0.70.
    fused = dict(vocabulary=VOCAB, scorer=scorer, lm_weight=0.3)
    assert ctc_beam_search_with_lm(log_probs, [2], char_bonus=0.65, **fused) == ["a"]
    assert ctc_beam_search_with_lm(log_probs, [2], char_bonus=0.75, **fused) == ["ab"]


def test_frames_past_the_length_and_empty_utterances():
    p = np.full((2, 3, VOCAB.size), 1e-9)
    p[:, 0, 2] = p[:, 1, 0] = p[:, 2, 3] = 1.0
    log_probs = np.log(p / p.sum(-1, keepdims=True))
    assert ctc_beam_search_with_lm(log_probs, [3, 2], vocabulary=VOCAB) == ["ab", "a"]
    assert ctc_beam_search_with_lm(log_probs, [0, 1], vocabulary=VOCAB) == ["", "a"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(beam_width=0), "beam_width"),
        (dict(lm_weight=-1.0), "lm_weight"),
        (dict(char_bonus=float("nan")), "char_bonus"),
        (dict(frame_length=[1, 2]), "frame_length"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    arguments = dict(log_probs=np.zeros((1, 2, VOCAB.size)), frame_length=[2], vocabulary=VOCAB)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ctc_beam_search_with_lm(**arguments)
    with pytest.raises(ValueError, match=r"\(batch, frames, 4\)"):
        ctc_beam_search_with_lm(np.zeros((1, 2, 5)), [2], vocabulary=VOCAB)


def _tiny_language_model(lm_vocabulary):
    from models.language_model import build_language_model

    model = build_language_model(vocabulary_size=lm_vocabulary.size, embedding_dim=4, hidden_size=6, seed=0)
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.7, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def test_scorer_matches_the_model_reading_the_whole_text():
    speech = Vocabulary([" ", "a", "b"])
    lm_vocabulary = Vocabulary([END_OF_TEXT, "x", " ", "b", "a"])  # other ids, an extra character
    model = _tiny_language_model(lm_vocabulary)
    scorer = CharacterLanguageModelScorer(model, lm_vocabulary, speech)
    assert scorer.has_end
    text = "ab a"
    logits = np.asarray(model(np.array([lm_vocabulary.encode(END_OF_TEXT + text)])), np.float64)[0]
    kept = lm_vocabulary.encode(" ab" + END_OF_TEXT)  # the alphabet and the end, not "x"
    log_probs, end, states = scorer.start()
    for position in range(len(text) + 1):
        expected = _log_softmax(logits[position, kept])
        for char, value in zip(" ab", expected[:3]):
            assert log_probs[speech.encode(char)[0]] == pytest.approx(value, abs=1e-5)
        assert end == pytest.approx(expected[3], abs=1e-5)
        assert log_probs[speech.blank_id] == -np.inf and log_probs[speech.unk_id] == -np.inf
        if position < len(text):
            [(log_probs, end, states)] = scorer.extend([states], [speech.encode(text[position])[0]])


def test_a_scorer_of_another_alphabet_is_refused():
    scorer = BigramScorer({})
    scorer.speech_vocabulary = Vocabulary(["a", "c"])
    with pytest.raises(ValueError, match="made for the transcription alphabet 'ac', expected 'ab'"):
        ctc_beam_search_with_lm(np.zeros((1, 2, VOCAB.size)), [2], vocabulary=VOCAB, scorer=scorer)


def test_scorer_names_the_characters_its_model_lacks():
    lm_vocabulary = Vocabulary([END_OF_TEXT, "a"])
    with pytest.raises(ValueError, match=r"lacks \['b'\].*data.lm_text"):
        CharacterLanguageModelScorer(_tiny_language_model(lm_vocabulary), lm_vocabulary, VOCAB, source="runs/x")


SPACED = Vocabulary([" ", "a", "b"])  # ids: 0 blank, 1 unknown, 2 space, 3 a, 4 b


def _in_lexicon(words):
    """Whether a labelling is words of `words` joined by single spaces (a
    trailing space allowed: the search may end just after one)."""

    def allowed(labelling):
        body = labelling[:-1] if labelling.endswith(" ") else labelling
        return body == "" and labelling == "" or all(word in words for word in body.split(" "))

    return allowed


def test_with_a_lexicon_it_finds_the_exact_most_probable_text_of_its_words():
    lexicon = Lexicon(["ab", "b", "bba"], SPACED)
    rng = np.random.default_rng(4)
    differs = 0
    for trial in range(12):
        logits = rng.normal(0, 2, (1, 6, SPACED.size))
        logits[..., SPACED.unk_id] = -1e9
        log_probs = _log_softmax(logits)
        # Beam 512 holds every allowed prefix of 6 frames: the search is exact.
        got = ctc_beam_search_with_lm(
            log_probs, [6], vocabulary=SPACED, beam_width=512, prune_log_prob=-1e9, lexicon=lexicon
        )
        expected = _exact_best(log_probs[0], SPACED, _in_lexicon({"ab", "b", "bba"}))
        assert got == [" ".join(expected.split())], trial
        unconstrained = ctc_beam_search_with_lm(log_probs, [6], vocabulary=SPACED, beam_width=512, prune_log_prob=-1e9)
        differs += got != unconstrained
    assert differs >= 6  # the constraint decides most of these random cases


def test_a_lexicon_turns_a_misspelling_into_its_nearest_likely_word():
    # Frames say "ba" (0.6 each), with "ab"-ish alternatives behind them.
    p = np.full((1, 3, SPACED.size), 1e-9)
    p[0, 0, 4], p[0, 0, 3] = 0.6, 0.4  # b | a
    p[0, 1, 3], p[0, 1, 4] = 0.6, 0.4  # a | b
    p[0, 2, 0] = 1.0
    log_probs = np.log(p / p.sum(-1, keepdims=True))
    assert ctc_beam_search_with_lm(log_probs, [3], vocabulary=SPACED) == ["ba"]
    # The texts' probabilities: "ba" .36, "b" .24 (b b), "a" .24 (a a), "ab" .16.
    assert ctc_beam_search_with_lm(log_probs, [3], vocabulary=SPACED, lexicon=Lexicon(["ab"], SPACED)) == ["ab"]
    assert ctc_beam_search_with_lm(log_probs, [3], vocabulary=SPACED, lexicon=Lexicon(["ab", "a"], SPACED)) == ["a"]


def test_the_text_ends_with_a_whole_word():
    # Frames spell "b", then "a" (0.9) or nothing (0.1); "ba" only begins "bab".
    p = np.full((1, 2, SPACED.size), 1e-9)
    p[0, 0, 4] = 1.0
    p[0, 1, 3], p[0, 1, 0] = 0.9, 0.1
    log_probs = np.log(p / p.sum(-1, keepdims=True))
    lexicon = Lexicon(["b", "bab"], SPACED)
    assert ctc_beam_search_with_lm(log_probs, [2], vocabulary=SPACED, lexicon=lexicon) == ["b"]
    assert ctc_beam_search_with_lm(log_probs, [2], vocabulary=SPACED, lexicon=Lexicon(["ba"], SPACED)) == ["ba"]


def test_nothing_whole_in_the_beam_returns_the_words_before_the_unfinished_one():
    # Frames spell "b", space, "a"; the lexicon has "b" and "aab", and one frame
    # cannot finish "aab": the text is "b".
    p = np.full((1, 3, SPACED.size), 1e-9)
    p[0, 0, 4] = p[0, 1, 2] = p[0, 2, 3] = 1.0
    log_probs = np.log(p / p.sum(-1, keepdims=True))
    lexicon = Lexicon(["b", "aab"], SPACED)
    assert ctc_beam_search_with_lm(log_probs, [3], vocabulary=SPACED, beam_width=1, lexicon=lexicon) == ["b"]


def test_a_lexicon_with_a_language_model_chooses_among_its_words():
    a, b = 3, 4
    p = np.full((1, 2, SPACED.size), 1e-9)
    p[0, 0, a] = p[0, 0, b] = 0.5
    p[0, 1, 0] = 1.0
    log_probs = np.log(p / p.sum(-1, keepdims=True))
    table = np.log(np.array([1e-12, 1e-12, 0.1, 0.1, 0.8]))  # "b" is likelier than "a"
    scorer = BigramScorer({None: table, a: table, b: table})
    scorer.speech_vocabulary = SPACED
    fused = dict(vocabulary=SPACED, scorer=scorer, lm_weight=1.0)
    assert ctc_beam_search_with_lm(log_probs, [2], **fused) == ["b"]
    assert ctc_beam_search_with_lm(log_probs, [2], lexicon=Lexicon(["a"], SPACED), **fused) == ["a"]


def test_lexicon_from_a_file_reads_word_lists_and_running_text(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("Ab\nb, bba!\n\nab\n", encoding="utf-8")
    lexicon = Lexicon.from_file(str(path), SPACED)
    assert len(lexicon) == 3
    assert lexicon.words == {tuple(SPACED.encode(w)) for w in ("ab", "b", "bba")}
    assert tuple(SPACED.encode("bb")) in lexicon.prefixes and tuple(SPACED.encode("ba")) not in lexicon.prefixes


def test_lexicon_errors_name_the_file_line_and_word(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("ab\nb abc\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"words.txt' line 2: word 'abc' has characters 'c' outside"):
        Lexicon.from_file(str(path), SPACED)
    path.write_text("\n ,.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no words"):
        Lexicon.from_file(str(path), SPACED)
    with pytest.raises(ValueError, match="cannot be read"):
        Lexicon.from_file(str(tmp_path / "missing.txt"), SPACED)
    with pytest.raises(ValueError, match=r"'a b' is no single word"):
        Lexicon(["a b"], SPACED)
    with pytest.raises(ValueError, match=r"the lexicon: 'ac' has characters 'c' outside the vocabulary"):
        Lexicon(["ab", "ac"], SPACED)
    with pytest.raises(ValueError, match="made for the transcription alphabet ' ab', expected 'ab'"):
        ctc_beam_search_with_lm(np.zeros((1, 2, VOCAB.size)), [2], vocabulary=VOCAB, lexicon=Lexicon(["a"], SPACED))


def test_a_lexicon_with_a_real_language_model_finds_the_best_fused_text_of_its_words():
    # The real scorer knows the end of text: the final choice adds its log-probability.
    lm_vocabulary = Vocabulary([END_OF_TEXT, " ", "a", "b"])
    scorer = CharacterLanguageModelScorer(_tiny_language_model(lm_vocabulary), lm_vocabulary, SPACED)
    assert scorer.has_end
    words = {"ab", "b", "bba"}
    lexicon = Lexicon(sorted(words), SPACED)
    weight, bonus = 0.7, 0.5

    def lm_log_prob(text):
        log_probs, end, states = scorer.start()
        total = 0.0
        for char in text:
            class_id = SPACED.encode(char)[0]
            total += log_probs[class_id]
            [(log_probs, end, states)] = scorer.extend([states], [class_id])
        return total + end

    rng = np.random.default_rng(6)
    for trial in range(6):
        logits = rng.normal(0, 2, (1, 5, SPACED.size))
        logits[..., SPACED.unk_id] = -1e9
        log_probs = _log_softmax(logits)
        # Every allowed labelling with its CTC log-probability (all alignments summed).
        classes = [0] + list(range(SPACED.num_reserved, SPACED.size))
        totals = {}
        for path in itertools.product(classes, repeat=5):
            merged = [c for i, c in enumerate(path) if c != 0 and (i == 0 or c != path[i - 1])]
            key = SPACED.decode(merged)
            if _in_lexicon(words)(key):  # "b " too: a text may end after a space
                totals[key] = np.logaddexp(totals.get(key, -np.inf), sum(log_probs[0, t, c] for t, c in enumerate(path)))
        fused = {text: ctc + weight * lm_log_prob(text) + bonus * len(text) for text, ctc in totals.items()}
        got = ctc_beam_search_with_lm(
            log_probs, [5], vocabulary=SPACED, scorer=scorer, lm_weight=weight, char_bonus=bonus,
            beam_width=512, prune_log_prob=-1e9, lexicon=lexicon,
        )
        assert got == [max(fused, key=fused.get).strip()], trial

"""CTC prefix beam search with a character language model: exactness, fusion, the scorer."""

import itertools

import numpy as np
import pytest

from models.ctc_decoding import ctc_decode_text
from models.ctc_lm_decoding import END_OF_TEXT, CharacterLanguageModelScorer, ctc_beam_search_with_lm
from pipelines.vocabulary import Vocabulary

VOCAB = Vocabulary(["a", "b"])  # ids: 0 blank, 1 unknown, 2 a, 3 b


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _exact_best(frames, vocabulary):
    """The most probable labelling by summing every alignment (no unknown id)."""
    classes = [0] + list(range(vocabulary.num_reserved, vocabulary.size))
    totals = {}
    for path in itertools.product(classes, repeat=len(frames)):
        merged = [c for i, c in enumerate(path) if c != 0 and (i == 0 or c != path[i - 1])]
        key = vocabulary.decode(merged)
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

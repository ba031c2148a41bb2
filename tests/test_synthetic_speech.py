"""SyntheticSpeechParams: options outside what the pipeline can use are refused."""

import dataclasses

import pytest

from data.synthetic_speech import (
    MIN_SAMPLE_RATE,
    TEXT_CORPUS,
    SyntheticSpeech,
    SyntheticSpeechParams,
    _corpus_text,
    choose_sentences,
)


@pytest.mark.parametrize("spec", ["synthetic:sample_rate=1000", "synthetic:sample_rate=7999"])
def test_sample_rate_below_telephone_band_refused(spec):
    with pytest.raises(
        ValueError, match=r"field `sample_rate`, expected an integer >= 8000 \(Hz, the telephone band's rate\), got"
    ):
        SyntheticSpeechParams.from_spec(spec)


def test_telephone_sample_rate_still_valid():
    assert MIN_SAMPLE_RATE == 8000
    assert SyntheticSpeechParams.from_spec("synthetic:sample_rate=8000").sample_rate == 8000


def test_rate_and_pitch_ranges_parse_and_keep_default_names():
    default = SyntheticSpeechParams()
    assert (default.min_rate, default.max_rate, default.min_pitch, default.max_pitch) == (140, 200, 25, 75)
    slow = SyntheticSpeechParams.from_spec("synthetic:text=digits,min_rate=90,min_pitch=0,max_pitch=60")
    assert (slow.min_rate, slow.max_rate, slow.min_pitch, slow.max_pitch) == (90, 200, 0, 60)
    # Fields at their defaults stay out of the corpus name, so existing caches keep theirs.
    assert default.config_name("0" * 8) == (
        "seed0_num_train16000_num_validation300_min_words2_max_words5_min_word_count30_sample_rate16000_"
        "textshakespeare_corpus00000000"
    )
    assert SyntheticSpeechParams(min_rate=140, max_pitch=75).config_name("0" * 8) == default.config_name("0" * 8)
    assert slow.config_name("0" * 8).endswith("_min_rate90_min_pitch0_max_pitch60_corpus00000000")


@pytest.mark.parametrize("kwargs, needle", [
    (dict(min_rate=79), r"field `min_rate`, expected an integer in \[80, 450\] \(espeak-ng's range\), got 79"),
    (dict(max_rate=451), r"field `max_rate`, expected an integer in \[80, 450\] \(espeak-ng's range\), got 451"),
    (dict(min_pitch=-1), r"field `min_pitch`, expected an integer in \[0, 99\] \(espeak-ng's range\), got -1"),
    (dict(max_pitch=100), r"field `max_pitch`, expected an integer in \[0, 99\] \(espeak-ng's range\), got 100"),
    (dict(min_rate=180, max_rate=150), r"field `min_rate`, expected at most max_rate=150, got 180"),
    (dict(min_pitch=60, max_pitch=40), r"field `min_pitch`, expected at most max_pitch=40, got 60"),
    (dict(min_pitch=1.5), r"field `min_pitch`, expected an integer in \[0, 99\] \(espeak-ng's range\), got 1.5"),
    (dict(max_rate=True), r"field `max_rate`, expected an integer in \[80, 450\] \(espeak-ng's range\), got True"),
    (dict(min_words=0), r"field `min_words`, expected an integer >= 1, got 0"),  # the other fields' check still runs
])
def test_rate_and_pitch_ranges_out_of_range_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SyntheticSpeechParams(**kwargs)


def test_lone_quotation_marks_are_not_words():
    # "home,' quoth he" normalises to "home ' quoth he": espeak says nothing for the "'".
    text = "\n".join(["we go home,' quoth he"] * 20)
    params = SyntheticSpeechParams(num_train=3, num_validation=1, min_words=2, max_words=5, min_word_count=5)
    train, validation = choose_sentences(text, params)
    assert sorted(train + validation) == ["go home", "quoth he", "we go", "we go home"]
    with pytest.raises(ValueError, match=r"yields only 4 distinct sentences of 2-5 words; asked for 5\."):
        choose_sentences(text, dataclasses.replace(params, num_train=4))
    # The shipped corpus's quotations gave 69 of the default 16,300 sentences such a word.
    train, validation = choose_sentences(_corpus_text(TEXT_CORPUS), SyntheticSpeechParams())
    assert (len(train), len(validation)) == (16000, 300)
    assert [s for s in train + validation if "'" in s.split()] == []
    assert SyntheticSpeech.VERSION == "1.3.0"  # the default corpus changed: caches are rebuilt


def test_option_given_twice_refused():
    with pytest.raises(
        ValueError,
        match=r"^Received an invalid value for argument `dataset`: 'synthetic:seed=1,num_train=50,seed=2'; "
        r"the synthetic speech field `seed` is given twice\.$",
    ):
        SyntheticSpeechParams.from_spec("synthetic:seed=1,num_train=50,seed=2")

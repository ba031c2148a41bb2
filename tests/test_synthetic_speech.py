"""SyntheticSpeechParams: options outside what the pipeline can use are refused; the espeak-ng behind the corpus."""

import dataclasses
import json
import logging
import pathlib

import numpy as np
import pytest

from data.espeak_synthesizer import check_voice_variant, espeak_ng_version, synthesize_in_subprocess, voice_variants
from data.synthetic_speech import (
    TEXT_CORPUS,
    TRAIN_VARIANTS,
    VALIDATION_VARIANTS,
    SyntheticSpeech,
    SyntheticSpeechParams,
    _corpus_text,
    choose_sentences,
)
from data.synthetic_speech_params import MIN_SAMPLE_RATE


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


def test_an_unknown_voice_variant_is_refused_not_spoken_as_the_plain_voice():
    # espeak_SetVoiceByName returns success for "en+nosuchvariant" and speaks plain "en".
    with pytest.raises(ValueError, match=r"'en\+nosuchvariant': espeak-ng has no voice variant 'nosuchvariant', "
                                         r"and would silently speak with the plain voice 'en'; expected one of the "
                                         r"\d+ variants of .*!v: Alex, .*\bm3\b"):
        synthesize_in_subprocess([{"text": "one", "voice": "en+nosuchvariant"}])
    # Numbers as espeak-ng reads them: 3 is m3, 13 is f3, 25 would be f15 (none), 0 no variant.
    for voice in ("en-us+m3", "en+3", "en+13", "en+0", "en+Alex", "en"):
        check_voice_variant(voice)
    with pytest.raises(ValueError, match=r"no voice variant '25' \(espeak-ng reads '25' as 'f15'\)"):
        check_voice_variant("en+25")
    with pytest.raises(ValueError, match="no voice variant 'alex'"):  # variant files are case-sensitive
        check_voice_variant("en+alex")
    # The corpus's own variants all exist: none is silently the plain voice.
    assert set(TRAIN_VARIANTS + VALIDATION_VARIANTS) - {""} <= set(voice_variants())
    (pcm,), _ = synthesize_in_subprocess([{"text": "one", "voice": "en+m3"}])
    assert pcm.size > 1000


def test_the_cached_corpus_records_its_espeak_version_and_warns_when_another_is_installed(tmp_path, caplog):
    import tensorflow_datasets as tfds

    params = SyntheticSpeechParams(num_train=1, num_validation=1, text="digits", min_words=1, max_words=1,
                                   sample_rate=8000)
    builder = SyntheticSpeech(params=params, data_dir=tmp_path)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    installed = espeak_ng_version()
    assert installed["espeak_ng"] and installed["espeakng_loader"]
    record = pathlib.Path(builder.data_dir) / "metadata.json"
    assert json.loads(record.read_text()) == installed

    def reopen():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="data.synthetic_speech"):
            opened = SyntheticSpeech(params=params, data_dir=tmp_path)
        assert opened.is_prepared()
        return [r.getMessage() for r in caplog.records if r.name == "data.synthetic_speech"]

    audio = [np.frombuffer(e["pcm16"], "<i2") for e in tfds.as_numpy(builder.as_dataset(split="train"))]
    assert reopen() == []
    record.write_text(json.dumps({"espeak_ng": "1.51.1", "espeakng_loader": "0.1.9"}))
    [message] = reopen()
    assert (f"was made by espeak-ng 1.51.1 (espeakng-loader 0.1.9), but espeak-ng {installed['espeak_ng']} "
            f"(espeakng-loader {installed['espeakng_loader']}) is installed") in message
    assert builder.data_dir in message and "Delete that folder" in message
    # Warned, not rebuilt: the same name and audio.
    reopened = SyntheticSpeech(params=params, data_dir=tmp_path)
    assert reopened.data_dir == builder.data_dir
    again = [np.frombuffer(e["pcm16"], "<i2") for e in tfds.as_numpy(reopened.as_dataset(split="train"))]
    assert all(np.array_equal(a, b) for a, b in zip(audio, again)) and len(audio) == len(again) == 1
    record.unlink()  # a corpus cached before the record was kept: nothing to compare
    assert reopen() == []

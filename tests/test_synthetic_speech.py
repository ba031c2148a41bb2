"""SyntheticSpeechParams: options outside what the pipeline can use are refused."""

import pytest

from data.synthetic_speech import MIN_SAMPLE_RATE, SyntheticSpeechParams


@pytest.mark.parametrize("spec", ["synthetic:sample_rate=1000", "synthetic:sample_rate=7999"])
def test_sample_rate_below_telephone_band_refused(spec):
    with pytest.raises(
        ValueError, match=r"field `sample_rate`, expected an integer >= 8000 \(Hz, the telephone band's rate\), got"
    ):
        SyntheticSpeechParams.from_spec(spec)


def test_telephone_sample_rate_still_valid():
    assert MIN_SAMPLE_RATE == 8000
    assert SyntheticSpeechParams.from_spec("synthetic:sample_rate=8000").sample_rate == 8000

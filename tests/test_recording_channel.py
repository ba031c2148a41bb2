"""The random recording channel of the synthetic corpus: each effect's known size."""

import numpy as np
import pytest

from data.recording_channel import (
    HUM_HARMONICS,
    PEAK,
    Channel,
    apply_channel,
    coloured_noise,
    draw_channel,
)

RATE = 8000


def _sine(hz, seconds=1.0, amplitude=0.5):
    t = np.arange(int(seconds * RATE)) / RATE
    return amplitude * np.sin(2 * np.pi * hz * t)


def _channel(**overrides):
    values = dict(
        highpass_hz=None, lowpass_hz=None, filter_order=4, noise_snr_db=None, noise_colour=0.0,
        hum_hz=None, hum_db=-20.0, hum_decay=0.5, pad_s=(0.0, 0.0),
    )
    values.update(overrides)
    return Channel(**values)


def _amplitude_at(audio, hz):
    """Amplitude of the `hz` sinusoid in `audio` (whole-second signals: exact bins)."""
    spectrum = np.fft.rfft(audio) / (audio.size / 2)
    return np.abs(spectrum[int(round(hz * audio.size / RATE))])


def test_identity_channel_only_rescales_the_peak():
    speech = _sine(440)
    out = apply_channel(speech, RATE, _channel(), np.random.default_rng(0))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, speech * PEAK / np.abs(speech).max(), atol=1e-6)


def test_padding_adds_silence_of_the_drawn_length():
    speech = _sine(440)
    out = apply_channel(speech, RATE, _channel(pad_s=(0.25, 0.1)), np.random.default_rng(0))
    assert out.size == speech.size + 2000 + 800
    assert not out[:2000].any() and not out[-800:].any()
    np.testing.assert_allclose(out[2000:-800], speech * PEAK / np.abs(speech).max(), atol=1e-6)


def test_hum_harmonics_at_their_levels():
    speech = _sine(1000)  # RMS 0.5 / sqrt(2)
    out = apply_channel(speech, RATE, _channel(hum_hz=60.0, hum_db=-20.0, hum_decay=0.5), np.random.default_rng(0))
    tone = _amplitude_at(out, 1000)
    # The fundamental's RMS is 20 dB under the speech's, so its amplitude is a tenth of the tone's.
    np.testing.assert_allclose(_amplitude_at(out, 60) / tone, 0.1, rtol=1e-3)
    for k in range(1, HUM_HARMONICS):
        np.testing.assert_allclose(_amplitude_at(out, 60 * (k + 1)) / tone, 0.1 * 0.5**k, rtol=1e-3)
    assert _amplitude_at(out, 360) / tone < 1e-6  # five harmonics, no sixth


def test_noise_at_the_drawn_snr():
    speech = _sine(1000)
    out = apply_channel(speech, RATE, _channel(noise_snr_db=20.0), np.random.default_rng(0))
    tone = _amplitude_at(out, 1000) / np.sqrt(2)  # the speech's RMS after the peak rescale
    spectrum = np.fft.rfft(out)
    spectrum[1000] = 0
    residual = np.fft.irfft(spectrum, n=out.size)
    snr = 20 * np.log10(tone / np.sqrt(np.mean(residual**2)))
    assert abs(snr - 20.0) < 0.2


@pytest.mark.parametrize("colour", [0.0, 1.0, 2.0])
def test_coloured_noise_slope(colour):
    noise = coloured_noise(np.random.default_rng(1), 2**16, colour)
    assert abs(np.sqrt(np.mean(noise**2)) - 1.0) < 1e-9
    power = np.abs(np.fft.rfft(noise)) ** 2
    low, high = power[100:200].mean(), power[1000:2000].mean()  # a decade apart
    np.testing.assert_allclose(10 * np.log10(low / high), 10 * colour, atol=1.5)


def _butterworth_gain(hz, cutoff_hz, order, kind):
    """|H| of a digital Butterworth filter (bilinear transform, prewarped)."""
    ratio = np.tan(np.pi * hz / RATE) / np.tan(np.pi * cutoff_hz / RATE)
    return 1 / np.sqrt(1 + (ratio if kind == "low" else 1 / ratio) ** (2 * order))


@pytest.mark.parametrize("order", [1, 4])
def test_band_limits(order):
    audio = _sine(200) + _sine(3000)
    for kind, field in (("low", "lowpass_hz"), ("high", "highpass_hz")):
        out = apply_channel(audio, RATE, _channel(filter_order=order, **{field: 1000.0}), np.random.default_rng(0))
        out = out[RATE // 2:]  # the steady state, after the filter's onset transient
        expected = _butterworth_gain(3000, 1000, order, kind) / _butterworth_gain(200, 1000, order, kind)
        np.testing.assert_allclose(_amplitude_at(out, 3000) / _amplitude_at(out, 200), expected, rtol=0.01)


def test_draw_is_deterministic_and_varied():
    draws = [draw_channel(np.random.default_rng([3, i]), RATE) for i in range(200)]
    assert draws == [draw_channel(np.random.default_rng([3, i]), RATE) for i in range(200)]
    for name in ("highpass_hz", "lowpass_hz", "noise_snr_db", "hum_hz"):
        present = sum(getattr(d, name) is not None for d in draws)
        assert 70 < present < 130, name  # each effect in about half the draws
    assert all(d.lowpass_hz is None or d.lowpass_hz < RATE / 2 for d in draws)
    assert {d.hum_hz for d in draws} == {None, 50.0, 60.0}

"""A random recording channel for synthetic speech: band limits, background noise, mains hum.

espeak-ng's voices are clean, full-band and silent between words; real
recordings are not. A speaker the model never heard is often also a
microphone and a room it never heard (FSDD's `lucas` carries mains hum and
little energy above 3 kHz), so the synthetic corpus can pass each utterance
through a channel drawn at random: what varies between recordings then
varies in training too.
"""

from dataclasses import dataclass

import numpy as np
import scipy.signal

# Ranges of the random channel (see `draw_channel`).
HIGHPASS_HZ = (60.0, 300.0)
LOWPASS_FRACTION = (0.35, 0.95)  # of the Nyquist frequency
NOISE_SNR_DB = (10.0, 45.0)
NOISE_COLOUR = (0.0, 2.0)  # power spectrum ~ 1 / f**colour: white 0, pink 1, brown 2
HUM_HZ = (50.0, 60.0)
HUM_DB = (-35.0, -5.0)  # fundamental's level relative to the speech RMS
HUM_HARMONICS = 5
PAD_S = (0.0, 0.3)  # noise-only lead-in and tail
PEAK = 0.9  # peak of the returned waveform (full scale = 1)


@dataclass(frozen=True)
class Channel:
    """One drawn channel; `None` fields are left out."""

    highpass_hz: float | None
    lowpass_hz: float | None
    filter_order: int
    noise_snr_db: float | None
    noise_colour: float
    hum_hz: float | None
    hum_db: float
    hum_decay: float
    pad_s: tuple[float, float]


def draw_channel(rng, sample_rate):
    """A random `Channel`: each effect is present with probability one half."""
    def maybe():
        return rng.random() < 0.5

    return Channel(
        highpass_hz=float(rng.uniform(*HIGHPASS_HZ)) if maybe() else None,
        lowpass_hz=float(rng.uniform(*LOWPASS_FRACTION) * sample_rate / 2) if maybe() else None,
        filter_order=int(rng.integers(1, 5)),
        noise_snr_db=float(rng.uniform(*NOISE_SNR_DB)) if maybe() else None,
        noise_colour=float(rng.uniform(*NOISE_COLOUR)),
        hum_hz=float(HUM_HZ[rng.integers(2)]) if maybe() else None,
        hum_db=float(rng.uniform(*HUM_DB)),
        hum_decay=float(rng.uniform(0.3, 0.9)),
        pad_s=(float(rng.uniform(*PAD_S)), float(rng.uniform(*PAD_S))),
    )


def coloured_noise(rng, length, colour):
    """Unit-RMS noise of `length` samples whose power falls as 1 / f**colour."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequency = np.arange(spectrum.size, dtype=np.float64)
    frequency[0] = 1.0
    noise = np.fft.irfft(spectrum / frequency ** (colour / 2.0), n=length)
    noise -= noise.mean()
    return noise / max(np.sqrt(np.mean(noise**2)), 1e-12)


def apply_channel(waveform, sample_rate, channel, rng):
    """`waveform` (float, full scale 1) as recorded through `channel`.

    In order: noise-only padding before and after; the band limits
    (Butterworth high- and low-pass of `filter_order`, applied forwards);
    mains hum (`HUM_HARMONICS` harmonics, each `hum_decay` times the one
    before, the fundamental `hum_db` relative to the speech's RMS); background
    noise at `noise_snr_db` below the speech's RMS. The result is scaled to a
    peak of `PEAK`. Returns float32.
    """
    speech = np.asarray(waveform, dtype=np.float64)
    rms = max(np.sqrt(np.mean(speech**2)), 1e-6) if speech.size else 1e-6
    lead, tail = (int(round(s * sample_rate)) for s in channel.pad_s)
    audio = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    nyquist = sample_rate / 2.0
    if channel.highpass_hz is not None and channel.highpass_hz < nyquist:
        sos = scipy.signal.butter(channel.filter_order, channel.highpass_hz, "highpass", fs=sample_rate, output="sos")
        audio = scipy.signal.sosfilt(sos, audio)
    if channel.lowpass_hz is not None and channel.lowpass_hz < nyquist:
        sos = scipy.signal.butter(channel.filter_order, channel.lowpass_hz, "lowpass", fs=sample_rate, output="sos")
        audio = scipy.signal.sosfilt(sos, audio)
    if channel.hum_hz is not None:
        t = np.arange(audio.size) / sample_rate
        phase = rng.uniform(0.0, 2 * np.pi, HUM_HARMONICS)
        amplitude = rms * 10 ** (channel.hum_db / 20) * np.sqrt(2)
        for k in range(HUM_HARMONICS):
            if (k + 1) * channel.hum_hz >= nyquist:
                break
            audio += amplitude * channel.hum_decay**k * np.sin(2 * np.pi * (k + 1) * channel.hum_hz * t + phase[k])
    if channel.noise_snr_db is not None:
        audio += rms * 10 ** (-channel.noise_snr_db / 20) * coloured_noise(rng, audio.size, channel.noise_colour)
    peak = np.max(np.abs(audio)) if audio.size else 0.0
    if peak > 0:
        audio *= PEAK / peak
    return audio.astype(np.float32)

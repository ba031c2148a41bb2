"""`LogMel` (tf.signal) against `compute_features` (librosa), the definition."""

import numpy as np
import pytest
import scipy.signal

from layers.log_mel import LogMel
from pipelines.audio_features import FeatureConfig, compute_features


def synthetic_utterance(seed, sample_rate, seconds):
    """Speech-like audio: voiced vowels (pulse train through formant filters),
    fricative noise bursts and silences, with a moving pitch."""
    rng = np.random.default_rng(seed)
    pieces = [np.zeros(int(rng.uniform(0.05, 0.2) * sample_rate), np.float32)]
    while sum(map(len, pieces)) < seconds * sample_rate:
        n = int(rng.uniform(0.06, 0.18) * sample_rate)
        if rng.random() < 0.25:
            b, a = scipy.signal.butter(2, [2500, min(6000, 0.45 * sample_rate)], "band", fs=sample_rate)
            piece = 0.05 * scipy.signal.lfilter(b, a, rng.standard_normal(n))
        else:
            f0 = rng.uniform(90, 220) * (1 + 0.1 * np.linspace(-1, 1, n))
            phase = np.cumsum(f0 / sample_rate)
            piece = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
            for formant, bandwidth in ((rng.uniform(300, 900), 80), (rng.uniform(900, 2500), 120)):
                r = np.exp(-np.pi * bandwidth / sample_rate)
                theta = 2 * np.pi * formant / sample_rate
                piece = scipy.signal.lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], piece)
            piece = 0.3 * piece / (np.abs(piece).max() + 1e-9) * np.hanning(n)
        pieces.append(piece.astype(np.float32))
        if rng.random() < 0.2:
            pieces.append(np.zeros(int(0.05 * sample_rate), np.float32))
    return np.concatenate(pieces)[: int(seconds * sample_rate)].astype(np.float32)


def padded_batch(waveforms, fill=0.0):
    width = max(len(w) for w in waveforms)
    batch = np.full((len(waveforms), width), fill, np.float32)
    for row, waveform in enumerate(waveforms):
        batch[row, : len(waveform)] = waveform
    return batch, np.array([len(w) for w in waveforms], np.int32)


CONFIGS = {
    "default_log_mel": FeatureConfig(),
    "mfcc": FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=13),
    "8k_short_window": FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80,
                                     n_mels=40, fmin=0.0, fmax=3800.0),
    "unnormalised": FeatureConfig(n_mels=40, normalisation="none", log_offset=1e-3),
    "top_db": FeatureConfig(n_mels=40, normalisation="none", top_db=20.0),
    "mfcc_top_db": FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=13, top_db=20.0),
    "trim": FeatureConfig(n_mels=40, top_db=30.0, trim_db=30.0),
    "scalar_normalisation": FeatureConfig(n_mels=40, top_db=30.0, trim_db=30.0, normalisation="utterance_scalar"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_librosa_features_on_padded_batches(name):
    config = CONFIGS[name]
    rate = config.sample_rate
    waveforms = [synthetic_utterance(seed, rate, seconds)
                 for seed, seconds in enumerate((1.3, 0.6, 2.0))]
    waveforms.append(np.sin(np.arange(config.n_fft) / 7.0).astype(np.float32))  # one frame
    # Padding holds garbage: it must not reach any valid frame.
    batch, lengths = padded_batch(waveforms, fill=0.9)
    features, feature_length = LogMel(config)([batch, lengths])
    features, feature_length = np.asarray(features), np.asarray(feature_length)
    assert features.shape == (4, feature_length.max(), config.n_features)
    for row, waveform in enumerate(waveforms):
        expected = compute_features(waveform, config)
        assert feature_length[row] == expected.shape[0]
        if config.trim_db is None:
            assert expected.shape[0] == config.num_frames(len(waveform))
        elif row < 3:  # every synthetic utterance starts with silence, which trimming drops
            assert expected.shape[0] < config.num_frames(len(waveform))
        got = features[row, : feature_length[row]]
        assert np.abs(got - expected).mean() < 1e-4
        assert np.abs(got - expected).max() < 1e-2
        np.testing.assert_array_equal(features[row, feature_length[row]:], 0.0)


def test_frame_count_follows_the_definition():
    config = FeatureConfig(n_mels=16)
    lengths = np.array([0, 399, 400, 559, 560, 16000], np.int32)
    layer = LogMel(config)
    expected = [config.num_frames(int(n)) for n in lengths]
    assert expected == [0, 0, 1, 1, 2, 98]
    np.testing.assert_array_equal(np.asarray(layer.num_frames(lengths)), expected)
    _, feature_length = layer([np.zeros((6, 16000), np.float32), lengths])
    np.testing.assert_array_equal(np.asarray(feature_length), expected)


def test_accepts_the_config_dict_and_round_trips():
    config = CONFIGS["mfcc"]
    layer = LogMel(config.to_dict(), name="features")
    assert layer.config == config
    clone = LogMel.from_config(layer.get_config())
    assert clone.config == config and clone.name == "features"


def test_rejects_a_config_of_the_wrong_type():
    with pytest.raises(TypeError, match="argument `config`, expected a FeatureConfig"):
        LogMel(80)
    with pytest.raises(ValueError, match="no fields"):
        LogMel({"n_mels": 40, "bands": 3})

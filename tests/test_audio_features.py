"""FeatureConfig, compute_features and load_audio: definition, errors, bad files."""

import dataclasses
import json
import os

import numpy as np
import pytest
import scipy.fft
import scipy.signal
import soundfile as sf

from pipelines.audio_features import FeatureConfig, compute_features, kept_frame_range
from pipelines.audio_loading import AudioError, load_audio, prepare_waveform


def _tone(seconds, rate, freqs=(440.0, 1250.0), amplitude=0.3, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.shape) * 0.01
    wave = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    return (amplitude * wave + noise).astype(np.float32)


def _reference(waveform, config):
    """The eight steps of FeatureConfig's docstring, in plain NumPy/SciPy."""
    n_frames = 1 + (len(waveform) - config.n_fft) // config.hop_length
    frames = np.stack(
        [waveform[t * config.hop_length: t * config.hop_length + config.n_fft] for t in range(n_frames)]
    ).astype(np.float64)
    window = scipy.signal.get_window("hann", config.win_length, fftbins=True)
    left = (config.n_fft - config.win_length) // 2
    window = np.pad(window, (left, config.n_fft - config.win_length - left))
    power = np.abs(np.fft.rfft(frames * window, n=config.n_fft)) ** 2
    mel = power @ config.mel_matrix().astype(np.float64)
    if config.trim_db is not None:
        energy = mel.sum(axis=1)
        loud = np.flatnonzero(10 * np.log10(energy / energy.max()) >= -config.trim_db)
        mel = mel[loud[0] : loud[-1] + 1]
    features = np.log(mel + config.log_offset)
    if config.top_db is not None:
        features = np.maximum(features, features.max() - config.top_db * np.log(10) / 10)
    if config.kind == "mfcc":
        features = scipy.fft.dct(features, type=2, norm="ortho", axis=-1)[:, : config.n_mfcc]
    if config.normalisation == "utterance":
        features = (features - features.mean(0)) / np.sqrt(features.var(0) + config.norm_epsilon)
    elif config.normalisation == "utterance_scalar":
        features = (features - features.mean()) / np.sqrt(features.var() + config.norm_epsilon)
    return features


def test_defaults_and_shapes():
    config = FeatureConfig()
    assert (config.sample_rate, config.kind, config.n_mels, config.n_fft, config.hop_length) == (
        16000, "log_mel", 80, 400, 160
    )
    assert config.n_features == 80
    assert config.resolved_fmax == 8000.0
    assert config.window().shape == (400,)
    assert config.mel_matrix().shape == (201, 80)
    features = compute_features(_tone(1.0, 16000), config)
    assert features.shape == (98, 80) == (config.num_frames(16000), 80)
    assert features.dtype == np.float32
    assert FeatureConfig(kind="mfcc", n_mfcc=13).n_features == 13


@pytest.mark.parametrize(
    "config",
    [
        FeatureConfig(),
        FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=13),
        FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=40, fmax=3800.0),
        FeatureConfig(n_mels=40, normalisation="none", log_offset=1e-3),
        FeatureConfig(n_mels=40, normalisation="none", top_db=25.0),
        FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=13, top_db=25.0),
        FeatureConfig(n_mels=40, top_db=30.0, normalisation="utterance_scalar"),
    ],
    ids=["default", "mfcc", "8k_short_window", "unnormalised", "top_db", "mfcc_top_db", "scalar"],
)
def test_matches_documented_definition(config):
    waveform = _tone(0.7, config.sample_rate)
    expected = _reference(waveform, config)
    got = compute_features(waveform, config)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-4)
    assert np.mean(np.abs(got - expected)) < 1e-4


def test_top_db_floors_quiet_bins_below_the_loudest():
    # A loud tone, then near silence: the silence sits at the floor.
    waveform = np.concatenate([_tone(0.3, 16000), np.full(8000, 1e-5, np.float32)])
    config = FeatureConfig(n_mels=40, normalisation="none", top_db=30.0)
    floored = compute_features(waveform, config)
    plain = compute_features(waveform, FeatureConfig(n_mels=40, normalisation="none"))
    floor = plain.max() - 3.0 * np.log(10.0)
    assert plain.min() < floor - 5.0  # the floor matters for this input
    np.testing.assert_allclose(floored.min(), floor, rtol=1e-6)
    np.testing.assert_allclose(floored, np.maximum(plain, floor), rtol=1e-6)
    # Only the floor changes: a quieter background (with the same tone)
    # gives the same features once both are below it.
    quieter = np.concatenate([_tone(0.3, 16000), np.full(8000, 1e-7, np.float32)])
    np.testing.assert_allclose(compute_features(quieter, config)[-20:], floored[-20:], rtol=1e-6)


@pytest.mark.parametrize("bad", [0, -3.0, True, "40"])
def test_top_db_must_be_positive(bad):
    with pytest.raises(ValueError, match="field `top_db`, expected None or a positive number"):
        FeatureConfig(top_db=bad)
    with pytest.raises(ValueError, match="field `trim_db`, expected None or a positive number"):
        FeatureConfig(trim_db=bad)


def test_trim_db_drops_leading_and_trailing_silence_only():
    rate, hop = 16000, 160
    quiet = lambda seconds: np.full(int(seconds * rate), 1e-4, np.float32)  # noqa: E731  (-70 dB)
    tone = _tone(0.3, rate)
    # Silence, tone, a pause inside the speech, tone, silence.
    waveform = np.concatenate([quiet(0.2), tone, quiet(0.1), tone, quiet(0.25)])
    config = FeatureConfig(n_mels=40, trim_db=30.0)
    got = compute_features(waveform, config)
    expected = _reference(waveform, config)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-4)
    # Kept: the frames from the first to the last that touch the tones (the
    # inner pause stays); 0.2 s = 20 hops of leading silence, 25 trailing.
    untrimmed = config.num_frames(len(waveform))
    first = (int(0.2 * rate) - config.n_fft) // hop + 1  # first frame reaching into the tone
    last = (int(0.2 * rate) + 2 * len(tone) + int(0.1 * rate)) // hop  # last frame starting in it
    assert abs(got.shape[0] - (last - first + 1)) <= 2
    assert untrimmed - got.shape[0] > 40
    # Without silence around it, trimming keeps every frame.
    assert compute_features(tone, config).shape == compute_features(tone, FeatureConfig(n_mels=40)).shape
    # kept_frame_range says which: the trimmed features are those of the samples its frames cover.
    kept_first, kept_last = kept_frame_range(waveform, config)
    assert kept_last - kept_first + 1 == got.shape[0] and abs(kept_first - first) <= 1
    plain = FeatureConfig(n_mels=40, normalisation="none")
    np.testing.assert_array_equal(
        compute_features(waveform, dataclasses.replace(plain, trim_db=30.0)),
        compute_features(waveform[kept_first * hop : kept_last * hop + config.n_fft], plain),
    )
    assert kept_frame_range(waveform, FeatureConfig(n_mels=40)) == (0, untrimmed - 1)
    # Part of the cache key only when set: the keys of caches made before the
    # field existed (these two values) stay the same.
    assert (FeatureConfig().cache_key(), FeatureConfig(n_mels=40).cache_key()) == ("32430ab05aa147ff", "77b377ae9175f7e6")
    assert config.cache_key() != FeatureConfig(n_mels=40).cache_key()


def test_utterance_normalisation():
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(16000) * np.repeat(rng.uniform(0.01, 0.5, 20), 800)
    features = compute_features(noise.astype(np.float32), FeatureConfig(n_mels=40))
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(features.std(axis=0), 1.0, atol=1e-3)


def test_utterance_scalar_normalisation_keeps_the_spectrum_shape():
    tone = _tone(1.0, 16000)  # two partials over faint noise: a strongly shaped spectrum
    raw = compute_features(tone, FeatureConfig(n_mels=40, normalisation="none"))
    features = compute_features(tone, FeatureConfig(n_mels=40, normalisation="utterance_scalar"))
    assert abs(features.mean()) < 1e-5 and abs(features.std() - 1.0) < 1e-4
    # One affine map for every band: the differences between bands survive
    # (per-band normalisation would centre each band on zero).
    scale = raw.std()
    np.testing.assert_allclose(features.mean(axis=0) * scale, raw.mean(axis=0) - raw.mean(), atol=1e-3)
    assert np.ptp(features.mean(axis=0)) > 1.0
    per_band = compute_features(tone, FeatureConfig(n_mels=40))
    assert np.ptp(per_band.mean(axis=0)) < 1e-4
    assert FeatureConfig(n_mels=40, normalisation="utterance_scalar").cache_key() != FeatureConfig(n_mels=40).cache_key()


def test_cache_key_and_round_trip():
    config = FeatureConfig(n_mels=40)
    assert config.cache_key() == FeatureConfig(n_mels=40).cache_key()
    assert len({FeatureConfig().cache_key(), config.cache_key(), FeatureConfig(hop_length=80).cache_key(),
                FeatureConfig(kind="mfcc").cache_key()}) == 4
    assert FeatureConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"no fields \['hop'\]"):
        FeatureConfig.from_dict({**config.to_dict(), "hop": 1})


def test_equal_configurations_written_with_ints_or_floats_share_a_cache_key():
    # The command line parses --fmin/--fmax/--top-db/--trim-db as floats: the
    # keys of those caches (the default's and the README's 8 kHz command's)
    # stay as they were, and the same settings written as ints, or as NumPy
    # scalars, find them instead of computing every feature again.
    documented = FeatureConfig(fmax=3800.0, top_db=30.0, trim_db=30.0)
    assert (FeatureConfig().cache_key(), documented.cache_key()) == ("32430ab05aa147ff", "f7d2accff75f70fc")
    assert FeatureConfig(fmin=20, fmax=3800, top_db=30, trim_db=30).cache_key() == documented.cache_key()
    assert FeatureConfig(fmax=np.float32(3800), top_db=np.float64(30), trim_db=30).cache_key() == documented.cache_key()
    assert FeatureConfig(sample_rate=np.int64(16000), n_mels=np.int32(80), fmin=20).cache_key() == "32430ab05aa147ff"
    ints, floats = FeatureConfig(log_offset=1, norm_epsilon=1), FeatureConfig(log_offset=1.0, norm_epsilon=1.0)
    assert ints.cache_key() == floats.cache_key()
    assert FeatureConfig(fmax=3800).cache_key() != FeatureConfig(fmax=3801).cache_key() != documented.cache_key()


def test_numpy_scalars_are_read_as_python_numbers():
    # A config built from NumPy values (say, read from an array of settings) is written as
    # JSON with the run (feature_config.json, the export's metadata) and checked as numbers.
    config = FeatureConfig(sample_rate=np.int64(8000), n_mels=np.int32(40), fmax=np.float32(3800),
                           top_db=np.float32(30), trim_db=np.float16(30))
    assert json.loads(json.dumps(config.to_dict())) == FeatureConfig(
        sample_rate=8000, n_mels=40, fmax=3800.0, top_db=30.0, trim_db=30.0).to_dict()
    assert type(config.sample_rate) is int and type(config.top_db) is float
    with pytest.raises(ValueError, match="field `n_mels`, expected a positive integer, got True"):
        FeatureConfig(n_mels=np.bool_(True))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sample_rate": 0}, "field `sample_rate`, expected a positive integer, got 0"),
        ({"kind": "spectrogram"}, "field `kind`, expected one of"),
        ({"win_length": 512}, "field `win_length`, expected at most n_fft=400, got 512"),
        ({"kind": "mfcc", "n_mfcc": 100}, "field `n_mfcc`, expected at most n_mels=80"),
        ({"fmax": 9000.0}, "field `fmax`"),
        ({"normalisation": "global"}, "field `normalisation`"),
        ({"n_mels": 2.5}, "field `n_mels`, expected a positive integer"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatureConfig(**kwargs)


def test_compute_features_rejects_short_or_2d_input():
    with pytest.raises(ValueError, match="at least n_fft=400 samples, got 399"):
        compute_features(np.ones(399, np.float32), FeatureConfig())
    with pytest.raises(ValueError, match=r"1-D \(samples,\) array, got shape \(2, 800\)"):
        compute_features(np.ones((2, 800), np.float32), FeatureConfig())


def test_load_audio_resamples_any_rate(tmp_path):
    for rate in (8000, 11025, 44100):
        path = tmp_path / f"tone_{rate}.wav"
        sf.write(path, _tone(1.0, rate, freqs=(440.0,)), rate, subtype="PCM_16")
        waveform = load_audio(path, 16000)
        assert waveform.dtype == np.float32
        assert abs(len(waveform) - 16000) <= 2
        spectrum = np.abs(np.fft.rfft(waveform))
        assert abs(np.argmax(spectrum) * 16000 / len(waveform) - 440.0) < 2.0


def test_load_audio_stereo_and_flac(tmp_path):
    left, right = _tone(0.5, 16000, freqs=(300.0,)), _tone(0.5, 16000, freqs=(700.0,))
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 16000)
    waveform = load_audio(path, 16000)
    np.testing.assert_allclose(waveform, (left + right) / 2, atol=1e-4)


def _bad_files(tmp_path):
    """(path, reason) for one file of every kind of bad audio."""
    good = _tone(2.0, 16000)
    files = {}
    files["unreadable"] = tmp_path / "notes.wav"
    files["unreadable"].write_text("this is not audio")
    files["missing"] = tmp_path / "missing.wav"
    files["empty"] = tmp_path / "empty.wav"
    files["empty"].write_bytes(b"")
    files["header_only"] = tmp_path / "header_only.wav"
    sf.write(files["header_only"], np.zeros(0, np.float32), 16000, subtype="PCM_16")
    whole = tmp_path / "whole.wav"
    sf.write(whole, good, 16000, subtype="PCM_16")
    files["truncated_wav"] = tmp_path / "truncated.wav"
    files["truncated_wav"].write_bytes(whole.read_bytes()[: os.path.getsize(whole) // 2])
    whole_flac = tmp_path / "whole.flac"
    sf.write(whole_flac, _tone(4.0, 16000), 16000)
    files["truncated_flac"] = tmp_path / "truncated.flac"
    files["truncated_flac"].write_bytes(whole_flac.read_bytes()[: os.path.getsize(whole_flac) // 2])
    files["silent"] = tmp_path / "silent.wav"
    sf.write(files["silent"], np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    files["too_long"] = tmp_path / "long.wav"
    sf.write(files["too_long"], _tone(30.0, 8000), 8000, subtype="PCM_16")
    files["too_short"] = tmp_path / "click.wav"
    sf.write(files["too_short"], _tone(0.01, 16000), 16000, subtype="PCM_16")
    return files


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("unreadable", "unreadable"),
        ("missing", "unreadable"),
        ("empty", "empty"),
        ("header_only", "empty"),
        ("truncated_wav", "truncated"),
        ("truncated_flac", "truncated"),
        ("silent", "silent"),
        ("too_long", "too_long"),
        ("too_short", "too_short"),
    ],
)
def test_bad_audio_named_with_reason(tmp_path, kind, reason):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(AudioError) as info:
        load_audio(path, 16000, max_duration_s=20.0, min_samples=400)
    assert info.value.reason == reason
    assert info.value.source == str(path)
    assert str(path) in str(info.value) and reason in str(info.value)
    assert isinstance(info.value, ValueError)
    if kind == "unreadable":  # libsndfile's reason, without its "Error opening b'<path>'" prefix
        assert str(info.value) == (f"{path}: unreadable: not a readable audio file (wav, flac, ogg): "
                                   "Format not recognised.")


def test_prepare_waveform_scales_integer_pcm():
    pcm = (np.sin(np.arange(8000) / 3.0) * 16384).astype(np.int16)
    waveform = prepare_waveform(pcm, 8000, 8000)
    np.testing.assert_allclose(waveform, pcm / 32768.0, atol=1e-6)
    with pytest.raises(AudioError, match="utt-7: silent"):
        prepare_waveform(np.zeros(800, np.int16), 8000, 16000, source="utt-7")


def test_float_audio_beyond_full_scale_is_scaled_not_clipped(tmp_path):
    # PCM values stored as float (peak ~9830): clipping to [-1, 1] left a square wave.
    tone = _tone(0.5, 16000, freqs=(300.0,))
    path = tmp_path / "float_pcm_scale.wav"
    sf.write(path, tone * 32768.0, 16000, subtype="FLOAT")
    waveform = load_audio(path, 16000)
    np.testing.assert_allclose(waveform, tone / np.abs(tone).max(), atol=1e-6)
    assert np.abs(waveform).max() == 1.0
    resampled = prepare_waveform(np.stack([tone, tone], axis=1) * 5.0, 16000, 8000)  # peak 1.65
    np.testing.assert_allclose(resampled, prepare_waveform(tone / np.abs(tone).max(), 16000, 8000), atol=1e-6)
    # within full scale nothing changes
    np.testing.assert_array_equal(prepare_waveform(tone, 16000, 16000), tone)


@pytest.mark.parametrize(
    "name, subtype, fmt, message",
    [
        ("cut_wavex.wav", "PCM_24", "WAVEX", "WAV data chunk is 48040 bytes shorter than its header declares"),
        ("cut.aiff", "PCM_16", "AIFF", "AIFF sound data chunk is 32027 bytes shorter than its header declares"),
    ],
)
def test_truncated_wavex_and_aiff_are_truncated_not_shorter(tmp_path, name, subtype, fmt, message):
    # libsndfile reads these cut short as a shorter recording, as it does a WAV.
    whole = tmp_path / f"whole_{name}"
    tone = _tone(1.0, 16000)
    sf.write(whole, np.stack([tone, tone], axis=1), 16000, subtype=subtype, format=fmt)
    np.testing.assert_allclose(load_audio(whole, 16000), tone, atol=1e-4)  # whole: read as it is
    cut = tmp_path / name
    cut.write_bytes(whole.read_bytes()[: os.path.getsize(whole) // 2])
    with pytest.raises(AudioError) as info:
        load_audio(cut, 16000)
    assert str(info.value) == f"{cut}: truncated: {message}"

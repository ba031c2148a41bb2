"""The speech features: one frozen configuration and one librosa function.

The configuration is shared by the librosa pipeline, the in-graph (tf.signal)
twin used by the export, the on-disk feature cache key and the export
metadata, so the four can never disagree.
"""

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field

import librosa
import numpy as np
import scipy.fft

# Bump when the definition in `FeatureConfig`'s docstring changes: it is part of
# every cache key, so stale cached features are never reused.
FEATURE_DEFINITION_VERSION = 1

KINDS = ("log_mel", "mfcc")
NORMALISATIONS = ("utterance", "utterance_scalar", "none")
# Widest SpecAugment frequency mask as a fraction of the features (two masks
# an utterance; `pipelines.spec_augment`): 10 of 80 mel bands. Park et al.'s
# LibriSpeech policies use 27 of 80; a quarter did not help FSDD's new speaker
# (docs/experiments.md).
SPEC_AUGMENT_MAX_FREQUENCY = 0.125
# The whole-number fields; the other numbers are floats (`cache_key`).
_INTEGER_FIELDS = ("sample_rate", "n_mels", "n_mfcc", "n_fft", "hop_length", "win_length")


@dataclass(frozen=True)
class FeatureConfig:
    """How a waveform becomes `(frames, n_features)` float32 features.

    The exact definition, which the in-graph twin must reproduce (to 1e-3
    mean absolute difference on the normalised features):

    1. `y`: mono float32 waveform in [-1, 1] at `sample_rate` (loading and
       resampling happen before, in `pipelines.audio_loading.load_audio`).
    2. Frames, no centring and no padding (librosa `center=False`,
       `tf.signal.frame(y, n_fft, hop_length, pad_end=False)`):
       `frame_t = y[t * hop_length : t * hop_length + n_fft]` for
       `t = 0 .. T - 1`, `T = 1 + (len(y) - n_fft) // hop_length`; a waveform
       shorter than `n_fft` samples has no frames and is rejected.
    3. Window: the periodic Hann window of `win_length` samples
       (`scipy.signal.get_window("hann", win_length, fftbins=True)`, equal to
       `tf.signal.hann_window(win_length, periodic=True)`), zero-padded to
       `n_fft` with `(n_fft - win_length) // 2` zeros on the left (librosa's
       `pad_center`). `window()` returns this `(n_fft,)` vector.
    4. Power spectrum: `P = |rfft(frame_t * window, n_fft)| ** 2`, shape
       `(T, n_fft // 2 + 1)` (power 2.0, no normalisation of the FFT).
    5. Mel: `M = P @ mel_matrix()`, shape `(T, n_mels)`; the matrix is
       librosa's Slaney-style filter bank (`librosa.filters.mel(sr, n_fft,
       n_mels, fmin, fmax, htk=False, norm="slaney")`, transposed to
       `(n_fft // 2 + 1, n_mels)`). It is NOT tf's HTK
       `linear_to_mel_weight_matrix`: the twin embeds `mel_matrix()` as a
       constant.
       With `trim_db` set, leading and trailing silence is dropped: frame
       `t`'s energy is `e_t = sum_j M[t, j]`, and only frames `first ..
       last` are kept, the first and last frames with
       `e_t >= max(e) * 10 ** (-trim_db / 10)` (at most `trim_db` decibels
       below the utterance's loudest frame; librosa's `effects.trim` on the
       mel energies). Every later step sees only those frames.
    6. Log: `L = log(M + log_offset)`, natural logarithm. With `top_db`
       set, `L = max(L, max(L) - top_db * ln(10) / 10)`, the maximum taken
       over every frame and band of the utterance (librosa's
       `power_to_db(top_db=...)` floor, in natural-log units): quiet
       backgrounds at any level below it look the same.
    7. `kind="mfcc"` only: `C = DCT-II(L, norm="ortho")` along the mel axis,
       first `n_mfcc` coefficients (`tf.signal.dct(L, type=2, norm="ortho")`).
    8. `normalisation="utterance"`: for each feature `j`, over the frames of
       the utterance, `x[:, j] = (x[:, j] - mean_j) / sqrt(var_j + norm_epsilon)`
       (population variance). `"utterance_scalar"`: one mean and one variance
       per utterance, over all its frames and features, so the shape of the
       spectrum is kept (a single word's bands are not each centred on
       itself). `"none"` leaves the features as they are.

    All arithmetic is float32.

    Args:
        sample_rate: Waveform rate in Hz; audio is resampled to it.
        kind: `"log_mel"` or `"mfcc"`.
        n_mels: Mel bands (also the DCT input for MFCC).
        n_mfcc: MFCC coefficients kept when `kind="mfcc"`.
        n_fft: FFT size and frame length, in samples.
        hop_length: Samples between frame starts.
        win_length: Hann window length, at most `n_fft`.
        fmin: Lowest mel filter edge, Hz.
        fmax: Highest mel filter edge, Hz; `None` means `sample_rate / 2`.
        log_offset: Added to the mel power before the logarithm.
        top_db: Floor of the log-mel energies, in decibels below the
            utterance's loudest mel bin; `None` means no floor.
        trim_db: Leading and trailing frames more than this many decibels
            below the utterance's loudest frame are dropped; `None` keeps
            every frame.
        normalisation: `"utterance"` (mean/variance per feature over time),
            `"utterance_scalar"` (one mean/variance per utterance) or
            `"none"`.
        norm_epsilon: Added to the variance in the normalisation.

    Example:

    ```python
    config = FeatureConfig(n_mels=40)
    features = compute_features(np.zeros(16000, "float32") + 0.1, config)
    features.shape   # (98, 40)
    ```
    """

    sample_rate: int = field(default=16000, metadata={"help": "Audio sample rate in Hz; inputs are resampled to it."})
    kind: str = field(default="log_mel", metadata={"help": "Feature kind.", "choices": KINDS})
    n_mels: int = field(default=80, metadata={"help": "Number of mel bands."})
    n_mfcc: int = field(default=20, metadata={"help": "MFCC coefficients kept when kind is mfcc."})
    n_fft: int = field(default=400, metadata={"help": "FFT size = frame length in samples (25 ms at 16 kHz)."})
    hop_length: int = field(default=160, metadata={"help": "Samples between frames (10 ms at 16 kHz)."})
    win_length: int = field(default=400, metadata={"help": "Hann window length in samples, at most n_fft."})
    fmin: float = field(default=20.0, metadata={"help": "Lowest mel frequency in Hz."})
    fmax: float | None = field(default=None, metadata={"help": "Highest mel frequency in Hz (None: sample_rate / 2)."})
    log_offset: float = field(default=1e-6, metadata={"help": "Added to mel power before the log."})
    top_db: float | None = field(
        default=None,
        metadata={"help": "Floor of the log-mel energies in dB below the utterance's loudest bin (None: no floor)."},
    )
    trim_db: float | None = field(
        default=None,
        metadata={"help": "Drop leading/trailing frames this many dB below the loudest frame (None: keep all)."},
    )
    normalisation: str = field(
        default="utterance",
        metadata={"help": "Per-utterance mean/variance normalisation: each feature on its own, one for all, or none.", "choices": NORMALISATIONS},
    )
    norm_epsilon: float = field(default=1e-5, metadata={"help": "Added to the variance when normalising."})

    def __post_init__(self):
        def fail(name, expected):
            raise ValueError(
                f"Received an invalid value for FeatureConfig field `{name}`, "
                f"expected {expected}, got {getattr(self, name)!r}."
            )

        for f in dataclasses.fields(self):  # NumPy scalars as Python numbers: `to_dict` is written as JSON
            if isinstance(getattr(self, f.name), np.generic):
                object.__setattr__(self, f.name, getattr(self, f.name).item())
        for name in _INTEGER_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                fail(name, "a positive integer")
        if self.kind not in KINDS:
            fail("kind", f"one of {KINDS}")
        if self.normalisation not in NORMALISATIONS:
            fail("normalisation", f"one of {NORMALISATIONS}")
        if self.win_length > self.n_fft:
            fail("win_length", f"at most n_fft={self.n_fft}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            fail("n_mfcc", f"at most n_mels={self.n_mels}")
        if not 0.0 <= self.fmin < self.sample_rate / 2:
            fail("fmin", f"a frequency in [0, {self.sample_rate / 2}) Hz")
        if self.fmax is not None and not self.fmin < self.fmax <= self.sample_rate / 2:
            fail("fmax", f"None or a frequency in ({self.fmin}, {self.sample_rate / 2}] Hz")
        if not self.log_offset > 0:
            fail("log_offset", "a positive number")
        if not self.norm_epsilon > 0:
            fail("norm_epsilon", "a positive number")
        if self.top_db is not None and (
            isinstance(self.top_db, bool) or not isinstance(self.top_db, (int, float)) or not self.top_db > 0
        ):
            fail("top_db", "None or a positive number of decibels")
        if self.trim_db is not None and (
            isinstance(self.trim_db, bool) or not isinstance(self.trim_db, (int, float)) or not self.trim_db > 0
        ):
            fail("trim_db", "None or a positive number of decibels")

    @property
    def n_features(self):
        """Width of the feature vectors: `n_mels` or `n_mfcc`."""
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def resolved_fmax(self):
        """`fmax` in Hz, with `None` resolved to `sample_rate / 2`."""
        return float(self.sample_rate) / 2 if self.fmax is None else float(self.fmax)

    def num_frames(self, num_samples):
        """Frames computed from `num_samples` samples (0 if too short), before any trimming."""
        if num_samples < self.n_fft:
            return 0
        return 1 + (num_samples - self.n_fft) // self.hop_length

    def to_dict(self):
        """Plain JSON-serialisable dict of every field (export metadata)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Inverse of `to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"FeatureConfig has no fields {unknown}; expected keys among {sorted(names)}."
            )
        return cls(**values)

    def cache_key(self):
        """Short stable hash of the definition and every field.

        Equal configurations share a key however their numbers are written:
        the whole-number fields enter it as ints, the other numbers as floats
        (as the command line parses them), so `fmax=3800` and `fmax=3800.0`,
        or a NumPy scalar, find the same cached features.
        """
        fields = {
            name: int(value) if name in _INTEGER_FIELDS
            else value if value is None or isinstance(value, str)
            else float(value)
            for name, value in self.to_dict().items()
        }
        if fields["trim_db"] is None:
            # A field added later enters the key only when set, so the
            # features cached before it existed stay valid.
            del fields["trim_db"]
        payload = json.dumps({"definition_version": FEATURE_DEFINITION_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def window(self):
        """The `(n_fft,)` float32 analysis window (step 3 of the definition)."""
        return _window(self.n_fft, self.win_length)

    def mel_matrix(self):
        """The `(n_fft // 2 + 1, n_mels)` float32 mel filter bank (step 5)."""
        return _mel_matrix(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.resolved_fmax)


@functools.lru_cache(maxsize=16)
def _window(n_fft, win_length):
    window = librosa.filters.get_window("hann", win_length, fftbins=True)
    window = librosa.util.pad_center(window, size=n_fft).astype(np.float32)
    window.setflags(write=False)
    return window


@functools.lru_cache(maxsize=16)
def _mel_matrix(sample_rate, n_fft, n_mels, fmin, fmax):
    mel = librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False, norm="slaney"
    )
    matrix = np.ascontiguousarray(mel.T, dtype=np.float32)
    matrix.setflags(write=False)
    return matrix


def loud_frame_range(mel, trim_db):
    """`(first, last)`: the frames `trim_db` trimming keeps (step 4 of `FeatureConfig`).

    Args:
        mel: `(frames, n_mels)` mel power spectrogram.
        trim_db: Frames whose energy is more than this many decibels below
            the loudest frame's are dropped at both ends.
    """
    energy = mel.sum(axis=1)
    loud = np.flatnonzero(energy >= energy.max() * np.float32(10.0 ** (-trim_db / 10.0)))
    return int(loud[0]), int(loud[-1])


def kept_frame_range(waveform, config):
    """`(first, last)`: the frames of `waveform` that `compute_features` keeps.

    Every frame, `(0, frames - 1)`, without `trim_db`. Feature frame `i`
    of `compute_features(waveform, config)` is the samples from
    `(first + i) * hop_length`, `n_fft` of them. `waveform` holds at least
    `n_fft` samples.
    """
    waveform = np.asarray(waveform, np.float32)
    if config.trim_db is None:
        return 0, (waveform.shape[0] - config.n_fft) // config.hop_length
    return loud_frame_range(_mel_power(waveform, config), config.trim_db)


def _mel_power(waveform, config):
    """`(frames, n_mels)` mel power spectrogram of a float32 waveform (steps 2-3 of `FeatureConfig`)."""
    # librosa.stft(center=False) computes exactly this; framing it here with
    # the cached window skips ~1 ms of per-call set-up on short utterances.
    frames = librosa.util.frame(waveform, frame_length=config.n_fft, hop_length=config.hop_length, axis=0)
    spectrum = scipy.fft.rfft(frames * config.window(), n=config.n_fft, axis=-1)  # (frames, n_fft // 2 + 1)
    power = np.square(spectrum.real) + np.square(spectrum.imag)
    return power @ config.mel_matrix()


def compute_features(waveform, config):
    """Features of one waveform, as defined in `FeatureConfig`.

    Args:
        waveform: `(samples,)` float mono audio at `config.sample_rate`, in
            [-1, 1], at least `config.n_fft` samples long.
        config: A `FeatureConfig`.

    Returns:
        `(frames, config.n_features)` float32 array,
        `frames = 1 + (samples - n_fft) // hop_length` (fewer with `trim_db`).
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim != 1:
        raise ValueError(
            f"Received an invalid value for argument `waveform`, expected a 1-D "
            f"(samples,) array, got shape {waveform.shape}."
        )
    if waveform.shape[0] < config.n_fft:
        raise ValueError(
            f"Received an invalid value for argument `waveform`, expected at least "
            f"n_fft={config.n_fft} samples, got {waveform.shape[0]}."
        )
    mel = _mel_power(waveform, config)
    if config.trim_db is not None:
        first, last = loud_frame_range(mel, config.trim_db)
        mel = mel[first : last + 1]
    features = np.log(mel + np.float32(config.log_offset))
    if config.top_db is not None:
        floor = features.max() - np.float32(config.top_db * np.log(10.0) / 10.0)
        features = np.maximum(features, floor)
    if config.kind == "mfcc":
        features = librosa.feature.mfcc(S=features.T, n_mfcc=config.n_mfcc, dct_type=2, norm="ortho").T
    features = np.ascontiguousarray(features, dtype=np.float32)  # (frames, n_features)
    if config.normalisation != "none":
        axis = 0 if config.normalisation == "utterance" else None  # per feature, or over all values
        mean = features.mean(axis=axis, keepdims=True)
        var = features.var(axis=axis, keepdims=True)
        features = (features - mean) / np.sqrt(var + np.float32(config.norm_epsilon))
    return features.astype(np.float32, copy=False)

"""Read, validate and resample audio: every bad file gets a named reason."""

import io
import os
import struct

import librosa
import numpy as np
import soundfile as sf

# Reasons an utterance is not used; the keys of the skip counts.
UNREADABLE = "unreadable"
EMPTY = "empty"
TRUNCATED = "truncated"
SILENT = "silent"
TOO_LONG = "too_long"
TOO_SHORT = "too_short"
AUDIO_REASONS = (UNREADABLE, EMPTY, TRUNCATED, SILENT, TOO_LONG, TOO_SHORT)

# Peak amplitude below which a file is silence (about -80 dBFS): 16-bit audio
# of a few quantisation steps or digital zero.
SILENCE_PEAK = 1e-4

RESAMPLE_TYPE = "soxr_hq"


class AudioError(ValueError):
    """An audio file or waveform that cannot be used, and why.

    Args:
        source: The file (or example id) at fault.
        reason: One of `AUDIO_REASONS`.
        detail: Human-readable explanation.
    """

    def __init__(self, source, reason, detail):
        self.source = str(source)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.source}: {reason}: {detail}")


# Container formats whose header declares the size of the sample data, and
# where: (magic, form type, byte order, sample data chunk id, name in messages).
# libsndfile reads such a file cut short as a shorter recording, so the
# shortfall is measured here. WAVEX is WAV with an extensible format chunk.
_DECLARED_SIZE_FORMATS = {
    "WAV": (b"RIFF", (b"WAVE",), "<", b"data", "WAV data chunk"),
    "WAVEX": (b"RIFF", (b"WAVE",), "<", b"data", "WAV data chunk"),
    "AIFF": (b"FORM", (b"AIFF", b"AIFC"), ">", b"SSND", "AIFF sound data chunk"),
}


def _wav_shortfall(stream, container="WAV"):
    """Bytes a RIFF/WAV file's `data` chunk (or an AIFF file's `SSND` chunk,
    `container="AIFF"`) declares but does not contain (`stream`: a binary
    file object)."""
    magic, form_types, order, data_id, _ = _DECLARED_SIZE_FORMATS[container]
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    header = stream.read(12)
    if len(header) < 12 or header[:4] != magic or header[8:12] not in form_types:
        return 0
    position = 12
    while position + 8 <= size:
        stream.seek(position)
        chunk_id, chunk_size = struct.unpack(f"{order}4sI", stream.read(8))
        if chunk_id == data_id:
            if chunk_size in (0, 0xFFFFFFFF):  # streamed WAV: size unknown
                return 0
            return max(0, position + 8 + chunk_size - size)
        position += 8 + chunk_size + (chunk_size & 1)
    return 0


def _read(source, max_duration_s, data=None, limit_name="max_duration_s"):
    """(samples, rate) of a file, opened once; AudioError on any problem.
    `data`: the file's bytes (an upload), when `source` only names it."""
    # A file name as bytes: libsndfile opens a name that is not UTF-8 (Python holds "caf\xe9.wav"
    # as "caf\udce9.wav", which soundfile cannot encode back).
    stream = os.fsencode(source) if data is None else io.BytesIO(data)
    try:
        handle = sf.SoundFile(stream)
    except Exception as error:  # libsndfile raises several types for bad files
        if data is None and not os.path.exists(source):
            raise AudioError(source, UNREADABLE, "file does not exist") from None
        if (len(data) if data is not None else os.path.getsize(source)) == 0:
            raise AudioError(source, EMPTY, "file has 0 bytes") from None
        # libsndfile's own words: its "Error opening <stream>: " prefix would name the
        # in-memory upload's object (or the path as bytes) where the message already names the file.
        reason = getattr(error, "error_string", None) or error
        raise AudioError(source, UNREADABLE, f"not a readable audio file (wav, flac, ogg): {reason}") from None
    with handle:
        frames, rate = handle.frames, handle.samplerate
        if frames == 0:
            raise AudioError(source, EMPTY, "file holds no samples")
        if rate <= 0:
            raise AudioError(source, UNREADABLE, f"invalid sample rate {rate}")
        if max_duration_s is not None and frames / rate > max_duration_s:
            raise AudioError(
                source, TOO_LONG, f"{frames / rate:.1f} s is longer than {limit_name}={max_duration_s:g}"
            )
        if handle.format in _DECLARED_SIZE_FORMATS:
            if data is None:
                with open(source, "rb") as f:
                    shortfall = _wav_shortfall(f, handle.format)
            else:
                shortfall = _wav_shortfall(io.BytesIO(data), handle.format)
            if shortfall:
                chunk = _DECLARED_SIZE_FORMATS[handle.format][-1]
                raise AudioError(
                    source, TRUNCATED, f"{chunk} is {shortfall} bytes shorter than its header declares"
                )
        try:
            samples = handle.read(dtype="float32", always_2d=True)
        except Exception as error:
            raise AudioError(source, TRUNCATED, f"decoding stopped part way ({error})") from None
    if samples.shape[0] < frames:
        raise AudioError(source, TRUNCATED, f"read {samples.shape[0]} of the {frames} frames its header declares")
    return (samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]), rate


def prepare_waveform(
    samples, source_rate, sample_rate, *, source="<waveform>", max_duration_s=None, min_samples=1,
    allow_silence=False, limit_name="max_duration_s",
):
    """Validate and resample decoded audio to mono float32 at `sample_rate`.

    Args:
        samples: `(samples,)` or `(samples, channels)` array; integer PCM is
            scaled to [-1, 1], float audio that goes beyond it is scaled
            down to a peak of 1.
        source_rate: Rate of `samples` in Hz.
        sample_rate: Wanted rate in Hz.
        source: Name used in error messages (the file or example id).
        max_duration_s: Longest accepted duration in seconds, or `None`.
        min_samples: Fewest samples accepted after resampling.
        allow_silence: Accept silence (the server transcribes it as "")
            instead of raising `SILENT`.
        limit_name: How the too-long message names `max_duration_s`
            (the caller's flag).

    Returns:
        `(samples,)` float32 waveform at `sample_rate`.

    Raises:
        AudioError: naming `source` and the reason (empty, silent, too long,
            too short).
    """
    samples = np.asarray(samples)
    if np.issubdtype(samples.dtype, np.integer):
        scale = float(2 ** (8 * samples.dtype.itemsize - 1))
        samples = samples.astype(np.float32) / scale
    samples = samples.astype(np.float32, copy=False)
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    if samples.ndim != 1:
        raise AudioError(source, UNREADABLE, f"expected 1-D or 2-D audio, got shape {samples.shape}")
    if samples.shape[0] == 0:
        raise AudioError(source, EMPTY, "no samples")
    if not source_rate or source_rate <= 0:
        raise AudioError(source, UNREADABLE, f"invalid sample rate {source_rate!r}")
    duration = samples.shape[0] / source_rate
    if max_duration_s is not None and duration > max_duration_s:
        raise AudioError(
            source, TOO_LONG, f"{duration:.1f} s is longer than {limit_name}={max_duration_s:g}"
        )
    if not np.all(np.isfinite(samples)):
        raise AudioError(source, UNREADABLE, "samples contain NaN or infinity")
    peak = float(np.max(np.abs(samples)))
    if peak < SILENCE_PEAK and not allow_silence:
        raise AudioError(source, SILENT, f"peak amplitude {peak:.2g} is below {SILENCE_PEAK:g} (silence)")
    if peak > 1.0:
        # Float audio beyond full scale (PCM values stored as float, a mix
        # never normalised): scaled down to a peak of 1, not clipped into a
        # square wave by the final clip (which only trims resampling overshoot).
        samples = samples / np.float32(peak)
    if source_rate != sample_rate:
        samples = librosa.resample(
            samples, orig_sr=source_rate, target_sr=sample_rate, res_type=RESAMPLE_TYPE
        ).astype(np.float32, copy=False)
    if samples.shape[0] < min_samples:
        raise AudioError(
            source,
            TOO_SHORT,
            f"{samples.shape[0]} samples at {sample_rate} Hz, fewer than the {min_samples} one frame needs",
        )
    return np.clip(samples, -1.0, 1.0)


def load_audio(path, sample_rate, *, max_duration_s=None, min_samples=1, data=None, allow_silence=False,
               limit_name="max_duration_s"):
    """Load an audio file (wav, flac, ogg, any rate) as mono float32.

    Multi-channel audio is averaged to mono and resampled with soxr
    (`librosa.resample(res_type="soxr_hq")`); float audio beyond [-1, 1]
    is scaled down to a peak of 1 (see `prepare_waveform`).

    Args:
        path: Audio file path.
        sample_rate: Wanted rate in Hz.
        max_duration_s: Longest accepted duration in seconds, or `None`.
        min_samples: Fewest samples accepted after resampling.
        data: Optional bytes of the file (an upload); `path` then only
            names it in messages. Checked exactly as a file on disk.
        allow_silence: Accept silence instead of raising `SILENT`.
        limit_name: How the too-long message names `max_duration_s`.

    Returns:
        `(samples,)` float32 waveform at `sample_rate`, in [-1, 1].

    Raises:
        AudioError: (a `ValueError`) naming the file and the reason:
            unreadable, empty, truncated, silent, too long or too short.
    """
    source = os.fspath(path)
    samples, rate = _read(source, max_duration_s, data=data, limit_name=limit_name)
    return prepare_waveform(
        samples, rate, sample_rate, source=source, max_duration_s=max_duration_s, min_samples=min_samples,
        allow_silence=allow_silence, limit_name=limit_name,
    )

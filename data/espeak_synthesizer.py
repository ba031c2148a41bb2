"""Offline text to speech with libespeak-ng (from the `espeakng-loader` wheel), via ctypes."""

import ctypes
import functools
import os
import threading

import numpy as np

# espeak-ng's C API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAMETERS = {"rate": 1, "volume": 2, "pitch": 3, "range": 4}

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakSynthesizer:
    """Synthesise English speech offline with libespeak-ng.

    libespeak-ng keeps one global engine per process, so this class is a
    process-wide singleton (`EspeakSynthesizer.instance()`) and serialises
    calls with a lock.

    Call arguments of `synthesize`:
        text: UTF-8 text.
        voice: espeak voice name with an optional variant, e.g. `"en-us+f2"`
            (`voice_variants()` lists the variants; a number n stands for
            `m<n>` below 10 and `f<n-10>` from 10, as espeak-ng reads it).
            An unknown variant is a ValueError: espeak-ng itself would
            speak with the plain voice and report success.
        rate: Words per minute (80-450).
        pitch: Base pitch, 0-100.
        pitch_range: Pitch range, 0-100.

    Returns `(samples,)` int16 PCM at `sample_rate` (22050 Hz).

    Example:

    ```python
    tts = EspeakSynthesizer.instance()
    pcm = tts.synthesize("hear me speak", voice="en-gb-x-rp+m3", rate=170, pitch=50)
    ```
    """

    _instance = None
    _instance_lock = threading.Lock()

    def __init__(self):
        espeakng_loader = _loader()
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self._variants = voice_variants()
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT
        )
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (returned {self.sample_rate}) with data {data_path!r}.")
        self._chunks = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    @classmethod
    def instance(cls):
        """The process-wide synthesizer."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav, num_samples, events):
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def synthesize(self, text, *, voice="en", rate=175, pitch=50, pitch_range=50):
        with self._lock:
            status = self._lib.espeak_SetVoiceByName(voice.encode())
            if status != 0:
                raise ValueError(
                    f"Received an invalid value for argument `voice`, expected an espeak-ng "
                    f"voice such as 'en-us+m3', got {voice!r} (espeak error {status})."
                )
            check_voice_variant(voice, self._variants)
            for name, value in (("rate", rate), ("pitch", pitch), ("range", pitch_range)):
                self._lib.espeak_SetParameter(_PARAMETERS[name], int(value), 0)
            encoded = text.encode("utf-8")
            self._chunks = []
            status = self._lib.espeak_Synth(
                encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status} for text {text!r}.")
            chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, np.int16)
        return np.concatenate(chunks).astype(np.int16, copy=False)


def _loader():
    try:
        import espeakng_loader
    except ImportError as error:
        raise ImportError(
            "The synthetic speech corpus needs the `espeakng-loader` package "
            "(`pip install espeakng-loader`), which ships libespeak-ng and its voices."
        ) from error
    return espeakng_loader


def _variant_directory():
    # espeak-ng loads the variant of "voice+name" from voices/!v/name (ExtractVoiceVariantName).
    return os.path.join(_loader().get_data_path(), "voices", "!v")


@functools.lru_cache(maxsize=1)
def voice_variants():
    """The voice variant names of the installed espeak-ng data, sorted (e.g. `"Alex"`, `"f1"`, `"m3"`)."""
    directory = _variant_directory()
    return tuple(sorted(
        name for name in os.listdir(directory) if os.path.isfile(os.path.join(directory, name))
    ))


def check_voice_variant(voice, variants=None):
    """Raise a ValueError when `voice` names a variant (`"en+name"`) that espeak-ng does not have.

    espeak_SetVoiceByName ignores a variant it cannot load (it returns
    success and speaks with the plain voice), so the variant is checked here,
    as espeak-ng reads it: the text after the first "+", where a leading
    number n stands for `m<n>` (1-9) or `f<n-10>` (10 and up) and 0 for none.
    """
    _, plus, variant = voice.partition("+")
    if not plus:
        return
    variants = voice_variants() if variants is None else variants
    name = variant
    if variant[:1].isdigit():
        number = int(variant[:len(variant) - len(variant.lstrip("0123456789"))])
        if number == 0:
            return
        name = f"m{number}" if number < 10 else f"f{number - 10}"
    if name not in variants:
        numbered = "" if name == variant else f" (espeak-ng reads {variant!r} as {name!r})"
        raise ValueError(
            f"Received an invalid value for argument `voice`, {voice!r}: espeak-ng has no voice variant "
            f"{variant!r}{numbered}, and would silently speak with the plain voice {voice.partition('+')[0]!r}; "
            f"expected one of the {len(variants)} variants of {_variant_directory()}: {', '.join(variants)}."
        )


@functools.lru_cache(maxsize=1)
def espeak_ng_version():
    """`{"espeak_ng": library version, "espeakng_loader": wheel version}` of the installed
    espeak-ng (e.g. `{"espeak_ng": "1.52.0", "espeakng_loader": "0.2.4"}`), or None without the wheel.

    The wheel pins both the library and its voice data, which decide the audio.
    Read once a process (every synthetic corpus builder records it); do not
    change the dict returned.
    """
    import importlib.metadata

    try:
        import espeakng_loader

        wheel = importlib.metadata.version("espeakng-loader")
    except (ImportError, importlib.metadata.PackageNotFoundError):
        return None
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Info.restype = ctypes.c_char_p  # the version string; no espeak_Initialize needed
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    return {"espeak_ng": lib.espeak_Info(None).decode("utf-8", "replace"), "espeakng_loader": wheel}


_BAD_JOB = 3  # the subprocess's exit status for a job synthesize refuses (ValueError)


def synthesize_in_subprocess(jobs, *, seed=0):
    """Synthesise `jobs` in a fresh Python process; output depends only on them.

    libespeak-ng carries hidden state from one utterance to the next (its
    pitch flutter position, its random generator), so the same call in a
    used process gives slightly different samples. A fresh process per batch
    of jobs makes a corpus reproducible sample for sample.

    Args:
        jobs: List of dicts with keys `text`, `voice`, `rate`, `pitch`,
            `pitch_range` (the arguments of `EspeakSynthesizer.synthesize`).
        seed: espeak-ng's random seed.

    Returns:
        `(list of (samples,) int16 arrays, sample_rate)`.

    Raises:
        ValueError: a job `synthesize` refuses (an unknown voice), its message.
    """
    import io
    import json
    import subprocess
    import sys

    for job in jobs:  # here, as a ValueError, rather than in the subprocess's stderr
        check_voice_variant(job.get("voice", "en"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-m", "data.espeak_synthesizer"],
        input=json.dumps({"seed": int(seed), "jobs": list(jobs)}).encode("utf-8"),
        capture_output=True,
        env=env,
        check=False,
    )
    if result.returncode == _BAD_JOB:  # a ValueError in the subprocess (an unknown voice): the same here
        raise ValueError(result.stderr.decode("utf-8", "replace").strip())
    if result.returncode != 0:
        raise RuntimeError(
            "espeak-ng synthesis subprocess failed with status "
            f"{result.returncode}: {result.stderr.decode('utf-8', 'replace')[-2000:]}"
        )
    with np.load(io.BytesIO(result.stdout)) as archive:
        sample_rate = int(archive["sample_rate"])
        return [archive[f"a{i}"] for i in range(len(jobs))], sample_rate


def _serve_jobs():
    import io
    import json
    import sys

    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    tts = EspeakSynthesizer.instance()
    tts._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    tts._lib.espeak_ng_SetRandSeed(int(request["seed"]))
    try:
        arrays = {f"a{i}": tts.synthesize(**job) for i, job in enumerate(request["jobs"])}
    except ValueError as error:
        sys.stderr.write(str(error))
        sys.exit(_BAD_JOB)
    buffer = io.BytesIO()
    np.savez(buffer, sample_rate=np.int64(tts.sample_rate), **arrays)
    sys.stdout.buffer.write(buffer.getvalue())
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    _serve_jobs()

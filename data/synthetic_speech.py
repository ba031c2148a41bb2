"""The default corpus: English sentences spoken by espeak-ng voices, made offline."""

import concurrent.futures
import hashlib
import json
import logging
import os

import librosa
import numpy as np
import tensorflow_datasets as tfds

from data.espeak_synthesizer import espeak_ng_version, synthesize_in_subprocess
from data.offline_builder import OfflineBuilder
from data.recording_channel import apply_channel, draw_channel
from data.synthetic_speech_params import SyntheticSpeechParams
from pipelines.cores import usable_cores
from pipelines.vocabulary import DIGIT_WORDS, normalize_transcript

logger = logging.getLogger(__name__)

TEXT_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tinyshakespeare.txt")

# English accents of espeak-ng, used by both splits.
ACCENTS = ("en", "en-us", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us-nyc", "en-gb-x-gbclan")
# Voice variants: the validation split's variants never speak in training.
# Training uses the classic m/f variants plus espeak-ng's named human-like
# variants (not the robotic, whispering or effect ones): many voices teach
# the model what does not matter, for voices it has never heard.
TRAIN_VARIANTS = (
    "", "m1", "m2", "m4", "m5", "m6", "m7", "f1", "f2", "f4", "f5",
    "Alex", "Andy", "Annie", "Denis", "Gene", "Jacky", "Lee", "Mike", "adam", "anika", "aunty",
    "belinda", "benjamin", "boris", "caleb", "david", "ed", "edward", "grandma", "grandpa",
    "gustave", "ian", "iven", "john", "linda", "max", "michel", "norbert", "pablo", "paul",
    "pedro", "quincy", "rob", "robert", "shelby", "steph", "travis", "victor", "zac",
)
VALIDATION_VARIANTS = ("m3", "f3", "m8")

SYNTHESIS_CHUNK = 500  # utterances per synthesis subprocess
_TRIM_THRESHOLD = 300  # int16 amplitude, about -40 dBFS
_TRIM_MARGIN_S = 0.05


def _corpus_text(path):
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"The synthetic speech corpus needs its text file {path}, which ships with the project."
        )
    with open(path, encoding="utf-8") as f:
        return f.read()


def choose_sentences(text, params):
    """Distinct (train, validation) sentence lists, no sentence in both.

    Sentences are runs of `min_words`..`max_words` consecutive words of one
    line of `text` (speaker-name lines ending in ':' left out), normalised to
    a-z, apostrophe and space, using only words that occur at least
    `min_word_count` times in `text` and contain a letter and no digit.

    With `params.text == "digits"`, sentences are random sequences of digit
    words instead, and may repeat (there are too few to keep apart).
    """
    if params.text == "digits":
        rng = np.random.default_rng([params.seed, 7919])
        sentences = [
            " ".join(DIGIT_WORDS[i] for i in rng.integers(0, 10, rng.integers(params.min_words, params.max_words + 1)))
            for _ in range(params.num_train + params.num_validation)
        ]
        return sentences[params.num_validation:], sentences[:params.num_validation]
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.endswith(":"):
            continue
        words = normalize_transcript(line).split()
        if words:
            lines.append(words)
    counts = {}
    for words in lines:
        for word in words:
            counts[word] = counts.get(word, 0) + 1
    # A word needs a letter: a quotation mark left alone by the normalisation
    # ("friends,' quoth he" -> "friends ' quoth he") is not spoken.
    usable = {
        w for w, c in counts.items()
        if c >= params.min_word_count and any(ch.isalpha() for ch in w) and not any(ch.isdigit() for ch in w)
    }
    runs = []  # maximal runs of usable words long enough for a sentence
    for words in lines:
        run = []
        for word in words + [None]:
            if word in usable:
                run.append(word)
                continue
            if len(run) >= params.min_words:
                runs.append(run)
            run = []
    if not runs:
        raise ValueError(
            f"The text corpus has no runs of {params.min_words}+ words used {params.min_word_count}+ times; "
            "lower min_words or min_word_count."
        )
    rng = np.random.default_rng([params.seed, 7919])
    wanted = params.num_train + params.num_validation
    chosen, seen = [], set()
    attempts = 0
    while len(chosen) < wanted:
        attempts += 1
        if attempts > 50 * wanted + 1000:
            raise ValueError(
                f"The text corpus yields only {len(chosen)} distinct sentences of "
                f"{params.min_words}-{params.max_words} words; asked for {wanted}."
            )
        run = runs[rng.integers(len(runs))]
        length = int(rng.integers(params.min_words, min(params.max_words, len(run)) + 1))
        start = int(rng.integers(0, len(run) - length + 1))
        sentence = " ".join(run[start:start + length])
        if sentence not in seen:
            seen.add(sentence)
            chosen.append(sentence)
    return chosen[params.num_validation:], chosen[:params.num_validation]


def _to_float(pcm):
    return pcm.astype(np.float32) / 32768.0


def _to_pcm16(audio):
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def _trim(pcm, sample_rate):
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > _TRIM_THRESHOLD)
    if loud.size == 0:
        return pcm
    margin = int(_TRIM_MARGIN_S * sample_rate)
    return pcm[max(0, loud[0] - margin): loud[-1] + margin + 1]


class SyntheticSpeech(OfflineBuilder):
    """English speech synthesised offline with espeak-ng, several voices.

    Sentences of a few words from the shipped text corpus
    (`data/tinyshakespeare.txt`), each spoken once by a voice drawn from
    `ACCENTS` x variants, at a random rate (by default 140-200 words a minute), pitch
    and pitch range, all from `params.seed` (with `params.channel`, through a
    random recording channel too). The `validation` split's
    sentences and voice variants (`VALIDATION_VARIANTS`) never occur in
    `train` (with `params.text="digits"`, digit sequences, only the voices are
    held out). Leading and trailing silence is trimmed to 50 ms. Synthesis
    runs in fresh subprocesses over fixed chunks, so the samples depend only
    on `params`.

    Features: `id`, `pcm16` (the samples as little-endian int16 bytes:
    `np.frombuffer(pcm16, "<i2")`), `sample_rate` (`params.sample_rate`),
    `text`, `speaker` (the espeak voice, e.g. `en-us+m3`).

    The espeak-ng that made the audio is recorded in the corpus's
    `metadata.json` (TFDS's `info.metadata`): `espeak_ng`, the library's
    version, and `espeakng_loader`, the wheel's, which pins the library and
    its voices. Corpora cached before that record have none and are not checked.
    It is not part of the corpus's name: a corpus cached by another version is
    still used (another wheel speaks slightly differently, so it would not be
    drawn again sample for sample), with a warning naming both versions.

    Args:
        params: A `SyntheticSpeechParams`.
        data_dir: Where TFDS writes the corpus (under the cache dir).

    Example:

    ```python
    builder = SyntheticSpeech(params=SyntheticSpeechParams(num_train=100), data_dir="runs/cache/tfds")
    builder.download_and_prepare()
    ```
    """

    VERSION = tfds.core.Version("1.3.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "Audio stored as raw PCM16 bytes.",
        "1.2.0": "50 training voice variants (was 10); validation variants unchanged.",
        "1.3.0": "No lone quotation marks (\"'\") as words of the sentences: espeak does not speak them.",
    }

    def __init__(self, *, params=None, data_dir=None, text_corpus=TEXT_CORPUS, **kwargs):
        self._params = params or SyntheticSpeechParams()
        self._text_corpus = text_corpus
        self._text = _corpus_text(text_corpus)
        digest = hashlib.sha1(self._text.encode("utf-8")).hexdigest()
        config = tfds.core.BuilderConfig(
            name=self._params.config_name(digest),
            description=f"espeak-ng speech, {self._params}",
        )
        super().__init__(data_dir=data_dir, config=config, **kwargs)
        if self.is_prepared():
            self._check_espeak_version()

    @property
    def params(self):
        return self._params

    def _check_espeak_version(self):
        """Warn when the cached corpus was made by another espeak-ng than the installed one."""
        path = os.path.join(self.data_dir, "metadata.json")  # TFDS's file of `info.metadata`
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            made_by = {k: record.get(k) for k in ("espeak_ng", "espeakng_loader")}
        except (OSError, ValueError, AttributeError):
            made_by = {}
        if not made_by.get("espeak_ng"):
            return  # cached before the version was recorded: nothing to compare
        installed = espeak_ng_version()
        if installed is None or made_by == installed:
            return  # reading the corpus needs no espeak-ng
        logger.warning(
            "The synthetic speech corpus %s was made by espeak-ng %s (espeakng-loader %s), but espeak-ng %s "
            "(espeakng-loader %s) is installed: the cached audio is used as it is, and a corpus built with the "
            "installed version would not be the same sample for sample (so neither would figures trained on it). "
            "Delete that folder to build the corpus again with the installed version.",
            self.data_dir, made_by["espeak_ng"], made_by["espeakng_loader"],
            installed["espeak_ng"], installed["espeakng_loader"],
        )

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__class__.__doc__.splitlines()[0],
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    # Raw little-endian PCM16 bytes: an `Audio` feature stores
                    # samples as an int64 list, 5x slower to write and read.
                    "pcm16": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "sample_rate": np.int32,
                    "text": tfds.features.Text(),
                    "speaker": tfds.features.Text(),
                }
            ),
            supervised_keys=("pcm16", "text"),
            # The espeak-ng making the audio, saved with the corpus as metadata.json
            # (TFDS reads a cached corpus's file over it, when it has one).
            metadata=tfds.core.MetadataDict(espeak_ng_version() or {}),
        )

    def _split_generators(self, dl_manager):
        train, validation = choose_sentences(self._text, self._params)
        return {
            "train": self._generate_examples("train", train, TRAIN_VARIANTS),
            "validation": self._generate_examples("validation", validation, VALIDATION_VARIANTS),
        }

    def _generate_examples(self, split, sentences, variants):
        split_id = 0 if split == "train" else 1
        jobs = []
        for index, sentence in enumerate(sentences):
            rng = np.random.default_rng([self._params.seed, split_id, index])
            accent = ACCENTS[rng.integers(len(ACCENTS))]
            variant = variants[rng.integers(len(variants))]
            jobs.append(
                {
                    "text": sentence,
                    "voice": f"{accent}+{variant}" if variant else accent,
                    "rate": int(rng.integers(self._params.min_rate, self._params.max_rate + 1)),
                    "pitch": int(rng.integers(self._params.min_pitch, self._params.max_pitch + 1)),
                    "pitch_range": int(rng.integers(20, 81)),
                }
            )
        # Fixed chunks, each in a fresh process: the samples depend only on
        # the seed, never on the machine's core count or on earlier synthesis.
        chunks = [jobs[i:i + SYNTHESIS_CHUNK] for i in range(0, len(jobs), SYNTHESIS_CHUNK)]
        with concurrent.futures.ThreadPoolExecutor(min(2, usable_cores())) as pool:
            results = pool.map(
                lambda item: synthesize_in_subprocess(item[1], seed=self._params.seed * 100003 + split_id * 1009 + item[0]),
                enumerate(chunks),
            )
            index = 0
            for pcms, rate in results:
                for pcm in pcms:
                    job = jobs[index]
                    pcm = _trim(pcm, rate)
                    if rate != self._params.sample_rate:
                        pcm = _to_pcm16(librosa.resample(
                            _to_float(pcm),
                            orig_sr=rate,
                            target_sr=self._params.sample_rate,
                            res_type="soxr_hq",
                        ))
                    if self._params.channel:
                        rng = np.random.default_rng([self._params.seed, split_id, index, 2])
                        channel = draw_channel(rng, self._params.sample_rate)
                        pcm = _to_pcm16(apply_channel(_to_float(pcm), self._params.sample_rate, channel, rng))
                    key = f"{split}-{index:06d}"
                    yield key, {
                        "id": key,
                        "pcm16": pcm.astype("<i2").tobytes(),
                        "sample_rate": self._params.sample_rate,
                        "text": job["text"],
                        "speaker": job["voice"],
                    }
                    index += 1

"""What the synthetic corpus holds (`SyntheticSpeechParams`) and its `--dataset
synthetic:...` options, without TensorFlow: `train.py` checks a spec with it
before importing the run. The corpus itself is `data.synthetic_speech`."""

import dataclasses
from dataclasses import dataclass, field

TEXTS = ("shakespeare", "digits")
MIN_SAMPLE_RATE = 8000  # Hz: telephone speech; lower rates lose the speech band


@dataclass(frozen=True)
class SyntheticSpeechParams:
    """What the synthetic corpus holds; every field is part of its identity.

    Args:
        seed: Seed of sentence, voice, rate and pitch choices.
        num_train: Training utterances (distinct sentences).
        num_validation: Held-out utterances: sentences and voice variants
            that never appear in training.
        min_words: Fewest words per sentence.
        max_words: Most words per sentence (about 0.4 s a word).
        min_word_count: Only words used at least this often in the text
            corpus, so that held-out sentences use words heard in training.
        sample_rate: Rate the audio is stored at, Hz (8000 gives the
            telephone band of recordings like FSDD).
        text: `"shakespeare"` (sentences of the shipped text corpus) or
            `"digits"` (sequences of the words "zero".."nine"; sentences may
            repeat, only the voices are held out).
        channel: 1 passes every utterance through a random recording channel
            (`data.recording_channel`: band limits, background noise, mains
            hum, noise-only lead-in and tail), drawn from the seed; 0 keeps
            espeak's clean output.
        min_rate, max_rate: Speaking rate of each utterance, drawn uniformly
            from this range, words a minute (espeak-ng: 80-450).
        min_pitch, max_pitch: Base pitch of each utterance, drawn uniformly
            from this range (espeak-ng's 0-99 scale; 50 is the voice's own).
    """

    seed: int = field(default=0, metadata={"help": "Seed of the synthetic corpus."})
    num_train: int = field(default=16000, metadata={"help": "Synthetic training utterances."})
    num_validation: int = field(default=300, metadata={"help": "Synthetic held-out utterances."})
    min_words: int = field(default=2, metadata={"help": "Fewest words per synthetic sentence."})
    max_words: int = field(default=5, metadata={"help": "Most words per synthetic sentence."})
    min_word_count: int = field(default=30, metadata={"help": "Only corpus words seen this often."})
    sample_rate: int = field(default=16000, metadata={"help": "Stored sample rate, Hz."})
    text: str = field(default="shakespeare", metadata={"help": "Sentence source.", "choices": TEXTS})
    channel: int = field(default=0, metadata={"help": "1: a random recording channel per utterance."})
    min_rate: int = field(default=140, metadata={"help": "Slowest speaking rate, words a minute."})
    max_rate: int = field(default=200, metadata={"help": "Fastest speaking rate, words a minute."})
    min_pitch: int = field(default=25, metadata={"help": "Lowest base pitch (espeak-ng's 0-99)."})
    max_pitch: int = field(default=75, metadata={"help": "Highest base pitch (espeak-ng's 0-99)."})

    def __post_init__(self):
        if self.text not in TEXTS:
            raise ValueError(
                f"Received an invalid value for synthetic speech field `text`, expected one of "
                f"{TEXTS}, got {self.text!r}."
            )
        for f in dataclasses.fields(self):
            if f.name in ("text", "channel") or f.name in _VOICE_RANGE_FIELDS:
                continue  # checked below, each against its own range
            value = getattr(self, f.name)
            minimum = {"seed": 0, "sample_rate": MIN_SAMPLE_RATE}.get(f.name, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                # Below 8000 Hz (telephone speech) the audio loses the speech band.
                unit = " (Hz, the telephone band's rate)" if f.name == "sample_rate" else ""
                raise ValueError(
                    f"Received an invalid value for synthetic speech field `{f.name}`, expected an "
                    f"integer >= {minimum}{unit}, got {value!r}."
                )
        if isinstance(self.channel, bool) or self.channel not in (0, 1):
            raise ValueError(
                f"Received an invalid value for synthetic speech field `channel`, expected 0 or 1, "
                f"got {self.channel!r}."
            )
        for name, (low, high) in _VOICE_RANGES.items():
            for end in ("min", "max"):
                value = getattr(self, f"{end}_{name}")
                if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                    raise ValueError(
                        f"Received an invalid value for synthetic speech field `{end}_{name}`, expected an "
                        f"integer in [{low}, {high}] (espeak-ng's range), got {value!r}."
                    )
            if getattr(self, f"min_{name}") > getattr(self, f"max_{name}"):
                raise ValueError(
                    f"Received an invalid value for synthetic speech field `min_{name}`, expected at most "
                    f"max_{name}={getattr(self, f'max_{name}')}, got {getattr(self, f'min_{name}')}."
                )
        if self.min_words > self.max_words:
            raise ValueError(
                f"Received an invalid value for synthetic speech field `min_words`, expected at most "
                f"max_words={self.max_words}, got {self.min_words}."
            )

    @classmethod
    def from_spec(cls, spec):
        """Parse `"synthetic"` or `"synthetic:num_train=2000,seed=3"`."""
        _, _, options = spec.partition(":")
        values = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for item in filter(None, (part.strip() for part in options.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if key in values:
                raise ValueError(
                    f"Received an invalid value for argument `dataset`: {spec!r}; the synthetic speech "
                    f"field `{key}` is given twice."
                )
            if not sep or key not in names:
                raise ValueError(
                    f"Received an invalid value for argument `dataset`: {spec!r}; expected "
                    f"'synthetic' or 'synthetic:key=value,...' with keys among {sorted(names)}, "
                    f"got {item!r}."
                )
            if key == "text":
                values[key] = value.strip()
                continue
            try:
                values[key] = int(value)
            except ValueError:
                raise ValueError(
                    f"Received an invalid value for synthetic speech field `{key}`, expected an "
                    f"integer, got {value!r}."
                ) from None
        return cls(**values)

    def config_name(self, corpus_digest):
        values = dataclasses.asdict(self)
        # Fields at their defaults stay out of the name: the names (and
        # caches) from before those fields existed stay valid.
        for name in ("channel", *sorted(_VOICE_RANGE_FIELDS)):
            if values[name] == _DEFAULTS[name]:
                del values[name]
        fields = "_".join(f"{k}{v}" for k, v in values.items())
        return f"{fields}_corpus{corpus_digest[:8]}".replace("-", "m")


_VOICE_RANGES = {"rate": (80, 450), "pitch": (0, 99)}  # espeak-ng's accepted values
_VOICE_RANGE_FIELDS = {f"{end}_{name}" for name in _VOICE_RANGES for end in ("min", "max")}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SyntheticSpeechParams)}

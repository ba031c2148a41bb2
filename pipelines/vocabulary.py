"""The one object that maps characters to ids, for both tasks."""

import json
import os
import re
import unicodedata

PAD = "<pad>"
UNK = "<unk>"


class Vocabulary:
    """Character vocabulary that owns the padding, CTC blank and unknown ids.

    Id 0 is both padding (language model inputs) and the CTC blank
    (transcription): neither is ever a real character, and Keras 3's CTC
    uses blank id 0. Id 1 is the unknown character. Real characters follow
    from id 2, in the order given. Every other part of the project (the loss,
    the decoders, the export) reads these ids from here, never from literals.

    Args:
        characters: The characters, each a single Unicode code point, no
            duplicates. Order defines the ids.

    Example:

    ```python
    vocab = Vocabulary.from_text("hello world")
    ids = vocab.encode("hello")      # [5, 4, 6, 6, 7]
    vocab.decode(ids)                # "hello"
    ```
    """

    pad_id = 0
    blank_id = 0
    unk_id = 1
    num_reserved = 2

    def __init__(self, characters):
        characters = list(characters)
        for char in characters:
            if not isinstance(char, str) or len(char) != 1:
                raise ValueError(
                    "Received an invalid value for argument `characters`, "
                    f"expected single characters, got {char!r}."
                )
        seen = set()
        duplicates = sorted({c for c in characters if c in seen or seen.add(c)})
        if duplicates:
            raise ValueError(
                "Received an invalid value for argument `characters`, "
                f"expected no duplicates, got {duplicates!r} more than once."
            )
        if not characters:
            raise ValueError(
                "Received an invalid value for argument `characters`, "
                "expected at least one character, got none."
            )
        self.characters = tuple(characters)
        self._ids = {c: i + self.num_reserved for i, c in enumerate(characters)}

    @classmethod
    def from_text(cls, text):
        """The vocabulary of every distinct character in `text`, sorted."""
        return cls(sorted(set(text)))

    @property
    def size(self):
        """Number of ids, reserved ones included (the logits' width)."""
        return len(self.characters) + self.num_reserved

    def __len__(self):
        return self.size

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and self.characters == other.characters

    def __repr__(self):
        return f"Vocabulary({''.join(self.characters)!r})"

    def tokens(self):
        """All tokens in id order: `[PAD, UNK, *characters]`."""
        return [PAD, UNK, *self.characters]

    def unknown_characters(self, text):
        """The sorted characters of `text` that have no id of their own."""
        return sorted(set(text) - self._ids.keys())

    def encode(self, text):
        """Ids of `text`; characters outside the vocabulary become `unk_id`."""
        return [self._ids.get(c, self.unk_id) for c in text]

    def decode(self, ids):
        """Text of `ids`, leaving out padding/blank; unknown ids become '?'."""
        chars = []
        for i in ids:
            i = int(i)
            if i == self.pad_id:
                continue
            index = i - self.num_reserved
            chars.append(self.characters[index] if 0 <= index < len(self.characters) else "?")
        return "".join(chars)

    def get_config(self):
        return {
            "characters": list(self.characters),
            "pad_id": self.pad_id,
            "blank_id": self.blank_id,
            "unk_id": self.unk_id,
        }

    @classmethod
    def from_config(cls, config):
        for key in ("pad_id", "blank_id", "unk_id"):
            if key in config and config[key] != getattr(cls, key):
                raise ValueError(
                    f"Vocabulary config field `{key}` is {config[key]!r}, but "
                    f"this version of the project uses {getattr(cls, key)}."
                )
        if "characters" not in config:
            raise ValueError(
                "Vocabulary config has no field `characters`; expected a list "
                f"of single characters, got keys {sorted(config)}."
            )
        return cls(config["characters"])

    def save(self, path):
        """Write the vocabulary as JSON to `path`."""
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.get_config(), f, ensure_ascii=False, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path):
        """Read a vocabulary written by `save`."""
        try:
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"Vocabulary file {path} does not exist.") from None
        except json.JSONDecodeError as error:
            raise ValueError(
                f"Vocabulary file {path} is not valid JSON: {error}."
            ) from None
        return cls.from_config(config)


_APOSTROPHES = str.maketrans("\u2019\u2018\u02bc", "'''")


def normalize_transcript(text):
    """Lowercase a-z, apostrophe and single spaces: the speech alphabet.

    Accents are stripped (é -> e), other punctuation becomes a space, runs of
    spaces collapse. The typographic apostrophes (’, ‘ and the modifier
    letter ʼ) become "'". Digits are kept so callers can detect and reject
    them: they have no single spelling.
    """
    # Lowercase again after NFKD: compatibility forms decompose to capitals (℃ -> °C, ℍ -> H).
    text = unicodedata.normalize("NFKD", text.lower()).lower()
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.translate(_APOSTROPHES)
    out = "".join(c if (c.isalnum() or c == "'") else " " for c in text)
    return " ".join(out.split())


SPEECH_ALPHABET = tuple(" '" + "abcdefghijklmnopqrstuvwxyz")

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
KEYPAD_WORDS = {"*": "star", "#": "pound"}
_REMARK = re.compile(r"\[[^\]]*\]|\([^)]*\)")
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


def spell_out_transcript(text):
    """The spoken form of a prompt-style transcript, normalised.

    For corpora whose transcripts are scripts rather than what was said
    (telephone prompts, say): bracketed and parenthesised remarks
    (`[beep]`, `(tone plays)`) are dropped, as they describe sounds, not
    words; a number of one digit becomes its word (`press 1` -> `press
    one`, `3D` -> `three d`); `*` and `#` become `star` and `pound`, their
    names on a US telephone keypad. Longer numbers (`dial 500`, `28.8`)
    have no single spoken form ("five hundred" or "five oh oh") and stay
    digits, which the speech pipeline refuses as out of vocabulary, naming
    the file. The result is `normalize_transcript`'s.

    Example: `spell_out_transcript("Press 1, or # to exit. (beep)")` is
    `"press one or pound to exit"`.
    """
    text = _REMARK.sub(" ", text)
    text = _NUMBER.sub(
        lambda m: f" {DIGIT_WORDS[int(m.group())]} " if len(m.group()) == 1 else m.group(), text
    )
    for symbol, word in KEYPAD_WORDS.items():
        text = text.replace(symbol, f" {word} ")
    return normalize_transcript(text)

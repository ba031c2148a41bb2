"""Turn a `--dataset` spec into the utterances of each split.

A spec is one of:
- `"synthetic"` (the default) or `"synthetic:num_train=2000,seed=1"`: the
  espeak-ng corpus (`data.synthetic_speech.SyntheticSpeech`), built once into
  the cache directory.
- a folder path: a `manifest.tsv` folder, an LJSpeech folder
  (`metadata.csv` + `wavs/`) or a LibriSpeech folder (`*.trans.txt` + flac),
  detected in that order, each indexed by its TFDS builder.
  `FOLDER:held_out_speakers=lucas;george` makes every utterance of those
  speakers (whatever split the folder gives them) the test split, never
  trained on nor used to choose the model: an unseen-speaker evaluation.
  Training and validation are the folder's splits without those speakers
  (validation = its validation split, else its test split).
  `FOLDER:validation_speakers=george` makes every training or validation
  utterance of those speakers the validation split (never trained on: the
  checkpoint is chosen on voices the model never heard, as the held-out
  speakers' will be); the split that validated before, no longer needed,
  joins training. Combines with `held_out_speakers`.
  `FOLDER:test_fraction=0.1` carves a test split out of the training split
  of a folder that has none, by transcript (a sentence is in one split
  only): prompts never trained on nor used to choose the model, e.g. for a
  one-speaker corpus.
  `FOLDER:text_column=text_raw` reads a manifest's transcripts from another
  column; `FOLDER:spell_out=true` replaces each transcript by its spoken
  form (`pipelines.vocabulary.spell_out_transcript`: remarks in brackets
  dropped, single digits and `*`/`#` as words), so prompts such as
  "Press 1 for help." become training rows instead of being refused.
  Options combine with commas.
- a TFDS catalog name, `librispeech`, `ljspeech` or `spoken_digit`, when
  already prepared in the TFDS data directory (never downloaded).
- several of these joined by `+`, e.g. `../shared/data/fsdd+synthetic:text=digits`:
  training uses every part's training split, validation (and test) the
  first part's only.
"""

import dataclasses
import glob
import os
import random
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import numpy as np

from data.split_assignment import choose_validation_groups, stable_hash
from data.synthetic_speech_params import SyntheticSpeechParams
from pipelines.vocabulary import DIGIT_WORDS, normalize_transcript

CATALOG = ("librispeech", "ljspeech", "spoken_digit")
CATALOG_VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class Utterance:
    """One utterance: its transcript and either a file or decoded samples.

    Args:
        key: Stable id within the dataset.
        text: Transcript as the data gives it (normalised later).
        speaker: Speaker name, `""` when unknown.
        path: Audio file, or `None` when `audio` is given.
        audio: `(samples,)` decoded samples, or `None`.
        sample_rate: Rate of `audio` in Hz.
    """

    key: str
    text: str
    speaker: str = ""
    path: str | None = None
    audio: np.ndarray | None = None
    sample_rate: int | None = None

    @property
    def source(self):
        """What error messages name: the file, else the dataset key."""
        return self.path or self.key


@dataclass(frozen=True)
class SpeechSource:
    """A resolved dataset: a name, a cache identity and split iterators.

    Args:
        name: Short name, e.g. `synthetic_speech` or the folder.
        identity: Stable string identifying exactly this data (cache key).
        description: One line for logs and metadata.
        splits: `"train"`, `"validation"` and optionally `"test"`, each a
            function returning a fresh iterator of `Utterance`s.
    """

    name: str
    identity: str
    description: str
    splits: Mapping[str, Callable[[], Iterator[Utterance]]]


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _prepare(make_builder):
    """Prepare a project builder once, even with concurrent processes.

    TFDS's `download_and_prepare` is not safe when two processes (say a
    training run and a tuning worker) prepare the same dataset at once: the
    second fails renaming its output. A lock file serialises them; the
    waiting process then finds the data prepared.
    """
    import tensorflow_datasets as tfds

    builder = make_builder()
    if builder.is_prepared():
        return builder
    lock_dir = os.path.dirname(os.fspath(builder.data_path))
    os.makedirs(lock_dir, exist_ok=True)
    with open(os.path.join(lock_dir, f".prepare-{builder.version}.lock"), "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no lock, as TFDS itself
            pass
        builder = make_builder()  # another process may have finished meanwhile
        if not builder.is_prepared():
            # TFDS names its temporary directory with Python's global `random`
            # (`incomplete.XXXXXX`): without the restore, the first run after
            # the cache is built (a new dataset, or a moved or touched folder)
            # would start from other initial weights and dropout seeds than
            # every later run with the same --seed (Keras draws its default
            # seeds from that stream after `keras.utils.set_random_seed`).
            state = random.getstate()
            try:
                builder.download_and_prepare(
                    download_config=tfds.download.DownloadConfig(try_download_gcs=False)
                )
            finally:
                random.setstate(state)
    return builder


def _builder_splits(builder, to_utterance):
    import tensorflow_datasets as tfds

    def reader(split):
        def read():
            # Every feature of the project's builders is a scalar, so batches
            # need no padding; reading 256 at a time avoids per-example
            # tf.data overhead (about 1 ms each).
            dataset = builder.as_dataset(split=split, shuffle_files=False).batch(256)
            for batch in tfds.as_numpy(dataset):
                for i in range(len(batch["id"])):
                    yield to_utterance({key: values[i] for key, values in batch.items()})

        return read

    return {name: reader(name) for name in builder.info.splits.keys()}


def _final_splits(splits, origin):
    """Map the data's splits onto train/validation(/test)."""
    if "train" not in splits:
        raise ValueError(f"{origin} has no training split; it has {sorted(splits)}.")
    out = {"train": splits["train"]}
    note = ""
    if "validation" in splits:
        out["validation"] = splits["validation"]
        if "test" in splits:
            out["test"] = splits["test"]
    elif "test" in splits:
        out["validation"] = splits["test"]
        note = " (validation = the data's test split)"
    else:
        raise ValueError(
            f"{origin} has no validation or test split; it has {sorted(splits)}. Where the data names no split, "
            "one is held out by speaker (two or more speakers) or else by transcript (two or more distinct "
            "transcripts); expected data with a validation or test split (a `split` column in manifest.tsv, "
            "a dev-* or test-* LibriSpeech subset) or enough speakers or transcripts to hold one out."
        )
    return out, note


def _folder_source(
    folder, cache_dir, held_out_speakers=(), validation_speakers=(), test_fraction=None, text_column=None,
    spell_out=False,
):
    from data.librispeech_folder import LibriSpeechFolder
    from data.ljspeech_folder import LjSpeechFolder
    from data.manifest_speech import MANIFEST, ManifestSpeech

    if os.path.isfile(os.path.join(folder, MANIFEST)):
        builder_cls = ManifestSpeech
    elif os.path.isfile(os.path.join(folder, "metadata.csv")) and os.path.isdir(os.path.join(folder, "wavs")):
        builder_cls = LjSpeechFolder
    elif glob.glob(os.path.join(folder, "*", "*", "*.trans.txt")) or glob.glob(
        os.path.join(folder, "*", "*", "*", "*.trans.txt")
    ):
        builder_cls = LibriSpeechFolder
    else:
        raise ValueError(
            f"Received an invalid value for argument `dataset`: the folder {folder!r} has no "
            "manifest.tsv, no LJSpeech metadata.csv + wavs/, and no LibriSpeech "
            "speaker/chapter/*.trans.txt files."
        )
    options = {"spell_out": spell_out}
    if text_column is not None:
        if builder_cls is not ManifestSpeech:
            raise ValueError(
                f"Received an invalid value for argument `dataset`: text_column={text_column} needs a "
                f"folder with a {MANIFEST}; {folder} is a {builder_cls.__name__} folder, whose "
                "transcripts have a fixed place."
            )
        options["text_column"] = text_column
    builder = _prepare(lambda: builder_cls(folder=folder, data_dir=os.path.join(cache_dir, "tfds"), **options))

    def to_utterance(example):
        return Utterance(
            key=_text(example["id"]),
            text=_text(example["text"]),
            speaker=_text(example["speaker"]),
            path=_text(example["path"]),
        )

    builder_splits = _builder_splits(builder, to_utterance)
    identity = f"{builder.name}/{builder.builder_config.name}/{builder.version}"
    sizes = ", ".join(f"{k} {builder.info.splits[k].num_examples}" for k in builder.info.splits.keys())
    if held_out_speakers:
        splits = _speaker_held_out_splits(
            builder_splits, held_out_speakers, folder, pooled=bool(validation_speakers)
        )
        speakers = ";".join(held_out_speakers)
        # Part of every feature-cache key: a change in what each split holds
        # must change it.
        identity += f"/held_out_speakers={speakers}/as_test"
        note = f"; test: every utterance of speakers {speakers}, never heard in training"
        if not validation_speakers:  # else the validation note below says what validates
            others = "validation" if "validation" in builder_splits else "test"
            note += f"; validation: the other speakers' {others} split"
    else:
        splits, note = _final_splits(builder_splits, folder)
        if validation_speakers:
            note = ""  # the validation note below replaces "(validation = the data's test split)"
    if validation_speakers:
        splits, validation_note = _speaker_validation_splits(splits, validation_speakers, held_out_speakers, folder)
        identity += f"/validation_speakers={';'.join(validation_speakers)}"  # part of the feature-cache key
        note += validation_note
    if test_fraction is not None:
        splits, test_note = _transcript_test_split(splits, test_fraction, folder)
        identity += f"/test_fraction={test_fraction}"  # part of the feature-cache key
        note += test_note
    return SpeechSource(
        name=os.path.basename(folder.rstrip(os.sep)),
        identity=identity,
        description=f"{builder_cls.__name__} folder {folder} ({sizes}){note}",
        splits=splits,
    )


def _speaker_held_out_splits(splits, speakers, folder, pooled=False):
    """Test: every utterance of `speakers`; train and validation: the others'.

    Unless `pooled` (validation_speakers then choose the validation from
    both), each of train and validation must keep an utterance: where the
    folder names no split, the one speaker held out for validation may be
    a held-out speaker, which would leave nothing to validate on.
    """
    held_out = set(speakers)
    if "train" not in splits:
        raise ValueError(f"{folder} has no training split; it has {sorted(splits)}.")
    others = "validation" if "validation" in splits else "test"
    if others not in splits:
        raise ValueError(
            f"{folder} has no validation or test split for the speakers that are not held out; "
            f"it has {sorted(splits)}."
        )

    def without(read):
        return lambda: (u for u in read() if u.speaker not in held_out)

    def test():
        for name in sorted(splits):
            yield from (u for u in splits[name]() if u.speaker in held_out)

    speakers_in = {name: {u.speaker for u in splits[name]()} for name in sorted(splits)}
    known = set().union(*speakers_in.values())
    missing = sorted(held_out - known)
    if missing:
        raise ValueError(
            f"Received an invalid value for argument `dataset`: held_out_speakers {missing} do not "
            f"occur in {folder}; its speakers are {sorted(known - {''})}."
        )
    for name, role in (("train", "train on"), (others, "validate on")):
        if not pooled and not speakers_in[name] - held_out:
            raise ValueError(
                f"Received an invalid value for argument `dataset`: held_out_speakers {sorted(held_out)} "
                f"leave nothing to {role} in {folder}: its {name} split holds only their utterances "
                f"(speakers {sorted(speakers_in[name] - {''})}). Add validation_speakers=NAME[;NAME...] "
                "to choose the speakers that validate among the others."
            )
    return {"train": without(splits["train"]), "validation": without(splits[others]), "test": test}


def _speaker_validation_splits(splits, speakers, held_out_speakers, folder):
    """`(splits, note)` whose validation split is every training or
    validation utterance of `speakers`; the rest of both splits trains.

    The test split is left as it is (the held-out speakers', or the
    folder's own), so test data stays out of both training and choosing.
    """
    chosen = set(speakers)
    clash = sorted(chosen & set(held_out_speakers))
    if clash:
        raise ValueError(
            f"Received an invalid value for argument `dataset`: speakers {clash} are both "
            "held_out_speakers and validation_speakers; a speaker is either the test or the validation."
        )
    train, validation = splits["train"], splits["validation"]
    known = {u.speaker for read in (train, validation) for u in read()}
    missing = sorted(chosen - known)
    if missing:
        raise ValueError(
            f"Received an invalid value for argument `dataset`: validation_speakers {missing} do not "
            f"occur in the training or validation split of {folder}; its speakers there are "
            f"{sorted(known - {''})}."
        )
    if not known - chosen:
        raise ValueError(
            f"Received an invalid value for argument `dataset`: validation_speakers {sorted(chosen)} "
            f"leave no speaker to train on in {folder}."
        )

    def both():
        yield from train()
        yield from validation()

    new_train, new_validation = _carve(both, lambda u: u.speaker, chosen)
    note = (
        f"; validation: every training or validation utterance of speakers {';'.join(speakers)}, "
        "never trained on (the other speakers' utterances of the split that validated before train)"
    )
    return {**splits, "train": new_train, "validation": new_validation}, note


def _transcript_test_split(splits, fraction, folder):
    """`(splits, note)` with a test split carved out of `splits["train"]`.

    A share `fraction` of the training transcripts (at least one) is chosen
    by a stable hash of the text, so the choice depends only on the data;
    every utterance of a chosen transcript is test, never training.
    Transcripts are compared as the speech pipeline reads them
    (`normalize_transcript`: "Goodbye." and "goodbye" are one transcript).
    """
    if "test" in splits:
        raise ValueError(
            f"Received an invalid value for argument `dataset`: {folder} already has a test split; "
            "test_fraction only carves one out of a folder that has none."
        )
    texts = sorted({normalize_transcript(u.text) for u in splits["train"]()} - {""})
    held_out = choose_validation_groups(texts, fraction)
    if not held_out:
        raise ValueError(
            f"Received an invalid value for argument `dataset`: {folder} has {len(texts)} distinct "
            "training transcript(s); test_fraction needs at least 2."
        )
    train, test = _carve(splits["train"], lambda u: normalize_transcript(u.text), held_out)
    note = (
        f"; test: the utterances of {len(held_out)} of {len(texts)} training transcripts "
        f"(test_fraction={fraction}), never trained on nor used to choose the model"
    )
    return {**splits, "train": train, "test": test}, note


def _folder_options(spec, options):
    """Parse `held_out_speakers=a;b`, `validation_speakers=a;b`,
    `test_fraction=F`, `text_column=NAME` and `spell_out=true|false` (joined
    by commas) into keyword arguments."""

    def fail(item):
        raise ValueError(
            f"Received an invalid value for argument `dataset`: {spec!r}; expected 'FOLDER' or "
            "'FOLDER:OPTION[,OPTION...]' with options held_out_speakers=NAME[;NAME...] or "
            "test_fraction=F (0 < F < 1, not both), validation_speakers=NAME[;NAME...], "
            "text_column=NAME, spell_out=true|false; "
            f"got {item!r}."
        )

    kwargs = {}
    for item in filter(None, (part.strip() for part in options.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key in kwargs:
            fail(item)
        if key in ("held_out_speakers", "validation_speakers"):
            names = tuple(name.strip() for name in value.split(";") if name.strip())
            if not names:
                fail(item)
            kwargs[key] = names
        elif key == "test_fraction":
            try:
                fraction = float(value)
            except ValueError:
                fail(item)
            if not 0.0 < fraction < 1.0:
                fail(item)
            kwargs[key] = fraction
        elif key == "text_column":
            if not value:
                fail(item)
            kwargs[key] = value
        elif key == "spell_out":
            if value.lower() not in ("true", "false"):
                fail(item)
            kwargs[key] = value.lower() == "true"
        else:
            fail(item)
    if "held_out_speakers" in kwargs and "test_fraction" in kwargs:
        fail(options)  # held-out speakers already make the test split
    return kwargs


def _is_synthetic(part):
    """Whether one spec (no `+`) names the synthetic corpus."""
    return part == "synthetic" or part.startswith("synthetic:")


def is_synthetic_spec(spec):
    """Whether every part of a `--dataset` spec is the synthetic corpus."""
    if not isinstance(spec, str) or not spec.strip():
        return False
    return all(_is_synthetic(part.strip()) for part in spec.strip().split("+"))


def _synthetic_source(spec, cache_dir):
    from data.synthetic_speech import SyntheticSpeech

    params = SyntheticSpeechParams.from_spec(spec)
    builder = _prepare(lambda: SyntheticSpeech(params=params, data_dir=os.path.join(cache_dir, "tfds")))
    def to_utterance(example):
        return Utterance(
            key=_text(example["id"]),
            text=_text(example["text"]),
            speaker=_text(example["speaker"]),
            audio=np.frombuffer(example["pcm16"], dtype="<i2"),
            sample_rate=int(example["sample_rate"]),
        )

    splits, _ = _final_splits(_builder_splits(builder, to_utterance), "synthetic speech")
    fields = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(params).items())
    held_out = "voice variants" if params.text == "digits" else "sentences and voice variants"
    return SpeechSource(
        name="synthetic_speech",
        identity=f"{builder.name}/{builder.builder_config.name}/{builder.version}",
        description=f"synthetic espeak-ng speech ({fields}); validation {held_out} never heard in training",
        splits=splits,
    )


def _carve(read, group_of, held_out):
    def train():
        return (u for u in read() if group_of(u) not in held_out)

    def validation():
        return (u for u in read() if group_of(u) in held_out)

    return train, validation


def _catalog_source(name, data_dir):
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise ValueError(
            f"Received an invalid value for argument `dataset`: the TFDS dataset {name!r} is not "
            f"prepared in {builder.data_dir!r} and this project never downloads. Prepare it first, "
            f"e.g. `tfds build {name} --data_dir={data_dir or '~/tensorflow_datasets'}` (or "
            f"`tfds.builder({name!r}, data_dir=...).download_and_prepare()`), then pass the same "
            "data_dir; or give a local folder instead."
        )
    available = set(builder.info.splits.keys())
    identity = f"tfds:{builder.name}/{builder.builder_config.name if builder.builder_config else ''}/{builder.version}@{builder.data_dir}"

    def reader(split, convert, decoders=None):
        def read():
            dataset = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
            for example in tfds.as_numpy(dataset):
                yield convert(example)

        return read

    if name == "librispeech":
        def convert(example):
            return Utterance(
                key=_text(example["id"]), text=_text(example["text"]),
                speaker=str(int(example["speaker_id"])), audio=example["speech"], sample_rate=16000,
            )

        wanted = {"train": "train_clean100", "validation": "dev_clean", "test": "test_clean"}
        missing = sorted(v for v in wanted.values() if v not in available)
        if missing:
            raise ValueError(f"TFDS librispeech in {builder.data_dir} lacks splits {missing}.")
        splits = {k: reader(v, convert) for k, v in wanted.items()}
        note = "train_clean100 / dev_clean / test_clean"
    elif name == "ljspeech":
        def convert(example):
            return Utterance(
                key=_text(example["id"]), text=_text(example["text_normalized"]) or _text(example["text"]),
                speaker="LJ", audio=example["speech"], sample_rate=22050,
            )

        def group_of(utterance):
            return utterance.key

        held_out = _HashShare(CATALOG_VALIDATION_FRACTION)
        train, validation = _carve(reader("train", convert), group_of, held_out)
        splits = {"train": train, "validation": validation}
        note = f"train split, {CATALOG_VALIDATION_FRACTION:.0%} of utterances held out by id hash"
    else:  # spoken_digit
        def convert(example):
            filename = os.path.basename(_text(example["audio/filename"]))
            return Utterance(
                key=filename, text=DIGIT_WORDS[int(example["label"])],
                speaker=filename.split("_")[1] if filename.count("_") >= 2 else "",
                audio=example["audio"].astype(np.int16), sample_rate=8000,  # int16 values stored as int64
            )

        skip = {"audio": tfds.decode.SkipDecoding()}
        speakers = {
            _speaker_of_filename(_text(example["audio/filename"]))
            for example in tfds.as_numpy(builder.as_dataset(split="train", decoders=skip))
        }
        held_out = choose_validation_groups(speakers, CATALOG_VALIDATION_FRACTION)

        def group_of(utterance):
            return utterance.speaker

        train, validation = _carve(reader("train", convert), group_of, held_out)
        splits = {"train": train, "validation": validation}
        note = f"train split, speakers {sorted(held_out)} held out for validation"
    return SpeechSource(
        name=name, identity=identity, description=f"TFDS {name} from {builder.data_dir} ({note})", splits=splits
    )


def _speaker_of_filename(filename):
    parts = os.path.basename(filename).split("_")
    return parts[1] if len(parts) >= 3 else ""


class _HashShare:
    """Set-like: a group belongs when its stable hash falls in the first share."""

    def __init__(self, fraction):
        self._threshold = int(fraction * 10000)

    def __contains__(self, group):
        return int(stable_hash(group)[:8], 16) % 10000 < self._threshold


def _combined_source(sources):
    """Train on every source's training split; validate (and test) on the first's."""
    first = sources[0]
    parts = [source.splits["train"] for source in sources]

    def train():
        for read in parts:
            yield from read()

    splits = dict(first.splits)
    splits["train"] = train
    return SpeechSource(
        name="+".join(source.name for source in sources),
        identity="+".join(source.identity for source in sources),
        description=(
            f"training data: {'; plus '.join(source.description for source in sources)}. "
            f"Validation{' and test' if 'test' in splits else ''} from the first only."
        ),
        splits=splits,
    )


def spec_parts(spec):
    """The specs `spec` joins with '+' (stripped), or `[spec]` when it is one (a
    folder whose name holds '+' included)."""
    spec = spec.strip()
    if "+" in spec and not os.path.isdir(os.path.expanduser(spec)):
        return [part.strip() for part in spec.split("+")]
    return [spec]


def spec_folder(part):
    """The absolute folder one spec (`FOLDER` or `FOLDER:OPTIONS`) reads, or None
    for the synthetic corpus, a catalog name or a folder that does not exist."""
    if _is_synthetic(part):
        return None
    for folder in (part, part.rpartition(":")[0]):
        if folder and os.path.isdir(os.path.expanduser(folder)):
            return os.path.abspath(os.path.expanduser(folder))
    return None


def check_speech_spec(spec, argument="dataset"):
    """Refuse a spec that names no corpus, reading no data (and importing no
    TensorFlow: `train.py` checks its flags with it before the run starts).

    Raises the ValueError `resolve_speech_source` would for the spec's form:
    an empty spec or part, synthetic or folder options it does not take, a part
    that is neither the synthetic corpus, an existing folder nor a catalog name.
    Whether a folder holds a corpus, or a catalog dataset is prepared, is left
    to `resolve_speech_source`. `argument`: the config field the spec came
    from, named in the message (`"mix_dataset"`: `--mix-dataset`).
    """
    try:
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(
                f"Received an invalid value for argument `dataset`, expected 'synthetic', a folder "
                f"or one of {CATALOG}, got {spec!r}."
            )
        parts = spec_parts(spec)
        if len(parts) > 1 and not all(parts):
            raise ValueError(
                f"Received an invalid value for argument `dataset`: {spec.strip()!r} has an empty part; "
                "expected specs joined by '+', e.g. '../fsdd+synthetic:text=digits'."
            )
        for part in parts:
            if _is_synthetic(part):
                SyntheticSpeechParams.from_spec(part)
            elif spec_folder(part) is not None:
                if not os.path.isdir(os.path.expanduser(part)):
                    _folder_options(part, part.rpartition(":")[2])
            elif part not in CATALOG:
                raise ValueError(
                    f"Received an invalid value for argument `dataset`, expected 'synthetic', an existing "
                    f"folder or one of the TFDS names {CATALOG}, got {part!r} (no such folder)."
                )
    except ValueError as error:
        raise ValueError(naming_argument(str(error), argument)) from None


def naming_argument(message, argument):
    """`message`, an error about a `dataset` spec, naming `argument` instead
    (`"mix_dataset"`: "argument `mix_dataset` (--mix-dataset)")."""
    if argument == "dataset":
        return message
    flag = "--" + argument.replace("_", "-")
    return message.replace("argument `dataset`", f"argument `{argument}` ({flag})")


def resolve_speech_source(spec, *, cache_dir, data_dir=None):
    """The `SpeechSource` for a `--dataset` spec (see the module docstring).

    Args:
        spec: `"synthetic[:options]"`, a folder path, or a TFDS catalog name.
        cache_dir: Where the project's own TFDS builders are prepared
            (`<cache_dir>/tfds`).
        data_dir: The user's TFDS data directory for catalog names
            (`None`: TFDS's default, `~/tensorflow_datasets`).

    Returns:
        A `SpeechSource`.
    """
    check_speech_spec(spec)
    spec = spec.strip()
    parts = spec_parts(spec)
    if len(parts) > 1:
        return _combined_source([resolve_speech_source(p, cache_dir=cache_dir, data_dir=data_dir) for p in parts])
    if _is_synthetic(spec):
        return _synthetic_source(spec, cache_dir)
    folder = spec_folder(spec)
    if folder is not None:
        if os.path.isdir(os.path.expanduser(spec)):
            return _folder_source(folder, cache_dir)
        return _folder_source(folder, cache_dir, **_folder_options(spec, spec.rpartition(":")[2]))
    return _catalog_source(spec, data_dir)  # a catalog name (check_speech_spec)

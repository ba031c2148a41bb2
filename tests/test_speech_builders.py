"""The speech TFDS builders on dummy corpora, split rules and spec resolution."""

import os
import random
import re

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from data.librispeech_folder import LibriSpeechFolder
from data.ljspeech_folder import LjSpeechFolder
from data.manifest_speech import ManifestSpeech
from data.speech_sources import check_speech_spec, resolve_speech_source
from data.split_assignment import assign_splits, choose_validation_groups
from data.synthetic_speech import (
    TRAIN_VARIANTS,
    VALIDATION_VARIANTS,
    SyntheticSpeech,
    SyntheticSpeechParams,
    choose_sentences,
)


def _wav(path, seconds=0.3, rate=16000, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate, format=fmt)


def _examples(builder, split):
    return sorted(
        (
            {k: (v.decode() if isinstance(v, bytes) and k != "pcm16" else v) for k, v in example.items()}
            for example in tfds.as_numpy(builder.as_dataset(split=split))
        ),
        key=lambda e: e["id"],
    )


def _prepare(builder):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def _manifest(folder, rows):
    os.makedirs(folder, exist_ok=True)
    lines = ["path\tspeaker\tsplit\ttext"] + ["\t".join(row) for row in rows]
    (folder / "manifest.tsv").write_text("\n".join(lines) + "\n")
    for path, *_ in rows:
        _wav(str(folder / path))


def test_manifest_keeps_the_datas_splits(tmp_path):
    folder = tmp_path / "corpus"
    _manifest(folder, [
        ("a/1.wav", "ann", "train", "hello there"),
        ("a/2.wav", "bob", "train", ""),
        ("b/3.wav", "ann", "dev", "good night"),
        ("b/4.wav", "cy", "test", "yes"),
    ])
    builder = _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds"))
    assert set(builder.info.splits.keys()) == {"train", "validation", "test"}
    train = _examples(builder, "train")
    assert [(e["id"], e["text"], e["speaker"]) for e in train] == [
        ("a/1.wav", "hello there", "ann"), ("a/2.wav", "", "bob")
    ]
    assert train[0]["path"] == str(folder / "a" / "1.wav")
    assert [e["id"] for e in _examples(builder, "validation")] == ["b/3.wav"]
    assert [e["text"] for e in _examples(builder, "test")] == ["yes"]


def test_manifest_without_splits_keeps_speakers_apart(tmp_path):
    folder = tmp_path / "corpus"
    rows = [(f"{s}_{i}.wav", s, "", f"word {i}") for s in ("ann", "bob", "cy", "dee") for i in range(2)]
    _manifest(folder, rows)
    builder = _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds"))
    train = {e["speaker"] for e in _examples(builder, "train")}
    validation = {e["speaker"] for e in _examples(builder, "validation")}
    assert len(validation) == 1 and len(train) == 3 and not train & validation
    assert len(_examples(builder, "validation")) == 2


def test_manifest_errors(tmp_path):
    folder = tmp_path / "corpus"
    os.makedirs(folder)
    (folder / "manifest.tsv").write_text("file\ttranscript\nx.wav\thi\n")
    with pytest.raises(ValueError, match=r"manifest.tsv: missing columns \['path', 'text'\]"):
        _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds"))
    (folder / "manifest.tsv").write_text("path\ttext\tsplit\nx.wav\thi\tholdout\n")
    with pytest.raises(ValueError, match="line 2: unknown split 'holdout'"):
        _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds2"))
    with pytest.raises(ValueError, match="expected an existing directory"):
        ManifestSpeech(folder=tmp_path / "nowhere", data_dir=tmp_path / "tfds")
    # A recording listed twice (here once as written, once through "./"): named with both lines.
    (folder / "manifest.tsv").write_text("path\ttext\nx.wav\thi\ny.wav\tyes\n./x.wav\thello\n")
    with pytest.raises(ValueError, match=r"manifest.tsv, line 4: `path` './x.wav' is already listed on line 2"):
        _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds3"))
    # A blank line does not shift the line numbers.
    (folder / "manifest.tsv").write_text("path\ttext\nx.wav\thi\n\n./x.wav\thello\n")
    with pytest.raises(ValueError, match=r"manifest.tsv, line 4: `path` './x.wav' is already listed on line 2"):
        _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds4"))
    # More cells than the header has columns (a tab in a transcript): not cut in silence.
    (folder / "manifest.tsv").write_text("path\ttext\nx.wav\thi\ny.wav\tsix\tseven\n")
    with pytest.raises(ValueError, match=r"manifest.tsv, line 3: 3 tab-separated cells, expected at most 2 "
                                         r"\(the header's columns\); a tab inside a cell would cut it: got extra "
                                         r"cells \['seven'\]\."):
        _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds5"))
    # Not UTF-8: the file, line and column, and how to convert it.
    (folder / "manifest.tsv").write_bytes("path\ttext\nx.wav\tcaf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"manifest.tsv, line 2: expected UTF-8 text, got byte 0xe9 at column 10\. "
                                         r"Convert it first, e.g. `iconv -f latin1 -t utf-8`\."):
        _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds6"))


def test_manifest_header_naming_a_column_twice_is_refused(tmp_path):
    # csv.DictReader keeps the last of two same-named columns: every transcript
    # came from the second `text` (here empty), each row later skipped as empty.
    folder = tmp_path / "corpus"
    os.makedirs(folder)
    (folder / "manifest.tsv").write_text("path\ttext\tspeaker\ttext\nx.wav\thello\tann\t\n")
    with pytest.raises(ValueError, match=r"manifest.tsv, line 1: column `text` is in the header 2 times \(columns "
                                         r"2, 4\); expected each column once, got \['path', 'text', 'speaker', "
                                         r"'text'\]\.$"):
        _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds"))
    # A column the reader does not use may repeat.
    (folder / "manifest.tsv").write_text("path\ttext\tnotes\tnotes\nx.wav\thello\ta\tb\n")
    rows = ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds")._read_rows()
    assert [(r["id"], r["text"]) for r in rows] == [("x.wav", "hello")]


def test_manifest_recording_listed_by_relative_and_absolute_path_is_refused(tmp_path):
    folder = tmp_path / "corpus"
    os.makedirs(folder)
    absolute = str(folder / "a" / "x.wav")
    (folder / "manifest.tsv").write_text(f"path\ttext\na/x.wav\thi\ny.wav\tyes\n{absolute}\thello\n")
    with pytest.raises(ValueError, match=rf"manifest.tsv, line 4: `path` {re.escape(repr(absolute))} is already "
                                         r"listed on line 2; expected each recording once \(one transcript per "
                                         r"file\)\.$"):
        _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds"))


def test_a_manifest_saved_with_a_byte_order_mark_reads_as_without(tmp_path):
    folder = tmp_path / "corpus"
    os.makedirs(folder)
    _wav(str(folder / "x.wav"))
    (folder / "manifest.tsv").write_bytes("\ufeffpath\ttext\tsplit\nx.wav\thi\ttrain\n".encode("utf-8"))
    builder = _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds"))
    assert [(e["id"], e["text"]) for e in _examples(builder, "train")] == [("x.wav", "hi")]


def test_manifest_text_column_and_spelled_out_prompts(tmp_path):
    folder = tmp_path / "prompts"
    os.makedirs(folder)
    rows = [
        ("1.wav", "", "Press 1 for help."),
        ("2.wav", "hello", "Hello!"),
        ("3.wav", "", "[beep tone]"),
        ("4.wav", "", "Dial 500 now."),
        ("5.wav", "after the tone", "After the tone. (tone plays)"),
    ]
    lines = ["path\tsplit\ttext\ttext_raw"] + [f"{p}\ttrain\t{t}\t{r}" for p, t, r in rows]
    (folder / "manifest.tsv").write_text("\n".join(lines) + "\n")
    for path, *_ in rows:
        _wav(str(folder / path))
    texts = lambda builder: [e["text"] for e in _examples(builder, "train")]  # noqa: E731

    plain = _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds"))
    assert texts(plain) == ["", "hello", "", "", "after the tone"]
    raw = _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds", text_column="text_raw"))
    assert texts(raw) == [r for _, _, r in rows]  # as written
    spoken = _prepare(
        ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds", text_column="text_raw", spell_out=True)
    )
    assert texts(spoken) == ["press one for help", "hello", "", "dial 500 now", "after the tone"]
    # Each option set is its own prepared index.
    names = {b.builder_config.name for b in (plain, raw, spoken)}
    assert len(names) == 3 and plain.builder_config.name == ManifestSpeech(folder=folder).builder_config.name

    with pytest.raises(ValueError, match=r"manifest.tsv: missing columns \['words'\]; expected a header with at least `path` and `words`"):
        _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds", text_column="words"))
    with pytest.raises(TypeError, match="argument `spell_out`, expected a bool, got 'yes'"):
        ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds", spell_out="yes")


def test_manifest_edit_builds_fresh_dataset(tmp_path):
    folder = tmp_path / "corpus"
    _manifest(folder, [("1.wav", "", "train", "one"), ("2.wav", "", "test", "two")])
    first = ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds")
    _manifest(folder, [("1.wav", "", "train", "uno"), ("2.wav", "", "test", "two")])
    os.utime(folder / "manifest.tsv", ns=(1, 1))
    second = _prepare(ManifestSpeech(folder=folder, data_dir=tmp_path / "tfds"))
    assert first.builder_config.name != second.builder_config.name
    assert _examples(second, "train")[0]["text"] == "uno"


def test_ljspeech_folder(tmp_path):
    folder = tmp_path / "LJSpeech-1.1"
    rows = [
        "LJ001-0001|Printing, in the 1st sense|Printing, in the first sense",
        "LJ001-0002|in being comparatively modern.|in being comparatively modern.",
        "LJ001-0003|Mr. Smith|",
    ]
    os.makedirs(folder / "wavs")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    for row in rows:
        _wav(str(folder / "wavs" / f"{row.split('|')[0]}.wav"), rate=22050)
    builder = _prepare(LjSpeechFolder(folder=folder, data_dir=tmp_path / "tfds"))
    examples = {e["id"]: e for split in builder.info.splits.keys() for e in _examples(builder, split)}
    assert examples["LJ001-0001"]["text"] == "Printing, in the first sense"  # normalized column
    assert examples["LJ001-0003"]["text"] == "Mr. Smith"  # raw when normalized is empty
    assert examples["LJ001-0002"]["path"] == str(folder / "wavs" / "LJ001-0002.wav")
    assert builder.info.splits["train"].num_examples == 2
    assert builder.info.splits["validation"].num_examples == 1
    # The same id twice: a clear error naming it and the file, not TFDS' "same hashed key".
    (folder / "metadata.csv").write_text("\n".join(rows + [rows[0]]) + "\n")
    with pytest.raises(ValueError, match=r"utterance 'LJ001-0001' is listed twice in metadata.csv"):
        _prepare(LjSpeechFolder(folder=folder, data_dir=tmp_path / "tfds2"))


def _librispeech(root, subset, speakers):
    for speaker in speakers:
        chapter = root / subset / speaker / "10" if subset else root / speaker / "10"
        os.makedirs(chapter)
        lines = []
        for i in range(2):
            key = f"{speaker}-10-{i:04d}"
            _wav(str(chapter / f"{key}.flac"), fmt="FLAC")
            lines.append(f"{key} HELLO WORLD {i}" if i == 0 else f"{key} GOOD DAY")
        (chapter / f"{speaker}-10.trans.txt").write_text("\n".join(lines) + "\n")


def test_librispeech_root_with_subsets(tmp_path):
    root = tmp_path / "LibriSpeech"
    _librispeech(root, "train-clean-100", ["19", "26"])
    _librispeech(root, "dev-clean", ["84"])
    _librispeech(root, "test-clean", ["61"])
    builder = _prepare(LibriSpeechFolder(folder=root, data_dir=tmp_path / "tfds"))
    train = _examples(builder, "train")
    assert [e["id"] for e in train] == ["19-10-0000", "19-10-0001", "26-10-0000", "26-10-0001"]
    assert train[0]["text"] == "HELLO WORLD 0" and train[0]["speaker"] == "19"
    assert train[0]["path"] == str(root / "train-clean-100" / "19" / "10" / "19-10-0000.flac")
    assert {e["speaker"] for e in _examples(builder, "validation")} == {"84"}
    assert {e["speaker"] for e in _examples(builder, "test")} == {"61"}
    # A key repeated in a transcript file: named, with the count of index files (four here).
    trans = root / "dev-clean" / "84" / "10" / "84-10.trans.txt"
    trans.write_text(trans.read_text() + "84-10-0000 HELLO AGAIN\n")
    with pytest.raises(ValueError, match=r"utterance '84-10-0000' is listed twice in dev-clean/84/10/84-10.trans.txt, line 1 and dev-clean/84/10/84-10.trans.txt, line 3"):
        _prepare(LibriSpeechFolder(folder=root, data_dir=tmp_path / "tfds2"))


def test_librispeech_single_subset_split_by_speaker(tmp_path):
    root = tmp_path / "train-clean-5"
    _librispeech(root, None, ["1", "2", "3"])
    builder = _prepare(LibriSpeechFolder(folder=root, data_dir=tmp_path / "tfds"))
    train = {e["speaker"] for e in _examples(builder, "train")}
    validation = {e["speaker"] for e in _examples(builder, "validation")}
    assert len(validation) == 1 and train | validation == {"1", "2", "3"} and not train & validation


def test_assign_splits_rules():
    rows = [{"path": f"p{i}", "text": f"t{i % 5}", "speaker": "", "split": ""} for i in range(40)]
    splits = assign_splits(rows, validation_fraction=0.2)
    train_texts = {r["text"] for r in splits["train"]}
    validation_texts = {r["text"] for r in splits["validation"]}
    assert len(validation_texts) == 1 and not train_texts & validation_texts
    assert assign_splits(rows, validation_fraction=0.2) == splits  # deterministic
    assert choose_validation_groups(["only"], 0.5) == set()
    assert len(choose_validation_groups([str(i) for i in range(100)], 0.1)) == 10


def test_transcripts_differing_in_case_or_punctuation_stay_in_one_split(tmp_path):
    # A script as written ("Goodbye." beside "goodbye", asterisk_en's text_raw):
    # the speech pipeline reads both as "goodbye", so they are one sentence
    # and must not be trained on and then validated or tested.
    rows = [
        {"path": f"{i}{v}.wav", "text": text, "speaker": "", "split": ""}
        for i in range(10)
        for v, text in (("a", f"Prompt number {i}."), ("b", f"prompt number {i}"), ("c", f"...PROMPT number {i}!"))
    ]
    splits = assign_splits(rows, validation_fraction=0.2)
    assert [r["path"] for r in splits["validation"]] == ["1a.wav", "1b.wav", "1c.wav", "4a.wav", "4b.wav", "4c.wav"]
    assert len(splits["train"]) == 24
    # Nothing left once normalised ("...") is no transcript: it takes no validation group.
    rows.append({"path": "dots.wav", "text": "...", "speaker": "", "split": ""})
    assert [r["path"] for r in assign_splits(rows, validation_fraction=0.14)["validation"]] == [
        "4a.wav", "4b.wav", "4c.wav"
    ]

    # test_fraction carves the test split by the same rule.
    folder = tmp_path / "prompts"
    _manifest(folder, [(r["path"], "", "", r["text"]) for r in rows[:30]])
    source = resolve_speech_source(f"{folder}:test_fraction=0.2", cache_dir=str(tmp_path / "cache"))
    ids = {split: sorted(u.key for u in read()) for split, read in source.splits.items()}
    assert ids["validation"] == ["4a.wav", "4b.wav", "4c.wav"]
    assert ids["test"] == ["6a.wav", "6b.wav", "6c.wav", "7a.wav", "7b.wav", "7c.wav"]
    assert len(ids["train"]) == 21
    assert "test: the utterances of 2 of 9 training transcripts" in source.description


def test_synthetic_sentences_disjoint_and_deterministic():
    text = "\n".join(["First Citizen:", "we know the way to go home now", "the way we go is home"] * 20)
    params = SyntheticSpeechParams(num_train=10, num_validation=4, min_words=2, max_words=4, min_word_count=5)
    train, validation = choose_sentences(text, params)
    assert len(train) == 10 and len(set(train)) == 10 and len(validation) == 4
    assert not set(train) & set(validation)
    assert all(2 <= len(s.split()) <= 4 and "citizen" not in s for s in train + validation)
    assert (train, validation) == choose_sentences(text, params)
    assert choose_sentences(text, SyntheticSpeechParams(seed=1, **{
        k: getattr(params, k) for k in ("num_train", "num_validation", "min_words", "max_words", "min_word_count")
    })) != (train, validation)
    with pytest.raises(ValueError, match="only .* distinct sentences"):
        choose_sentences(text, SyntheticSpeechParams(num_train=5000, min_word_count=5))


def test_synthetic_builder(tmp_path):
    params = SyntheticSpeechParams(num_train=8, num_validation=4)
    builder = _prepare(SyntheticSpeech(params=params, data_dir=tmp_path / "a"))
    train, validation = _examples(builder, "train"), _examples(builder, "validation")
    assert len(train) == 8 and len(validation) == 4
    assert not {e["text"] for e in train} & {e["text"] for e in validation}
    variant = lambda e: e["speaker"].partition("+")[2]  # noqa: E731
    assert {variant(e) for e in train} <= set(TRAIN_VARIANTS)
    assert {variant(e) for e in validation} <= set(VALIDATION_VARIANTS)
    assert not set(TRAIN_VARIANTS) & set(VALIDATION_VARIANTS)
    for e in train + validation:
        e["audio"] = np.frombuffer(e["pcm16"], "<i2")
        assert e["sample_rate"] == 16000 and 0.2 < len(e["audio"]) / 16000 < 6.0
        assert np.abs(e["audio"]).max() > 1000
        assert e["text"] == " ".join(e["text"].split()) and set(e["text"]) <= set("abcdefghijklmnopqrstuvwxyz' ")
    again = _prepare(SyntheticSpeech(params=params, data_dir=tmp_path / "b"))
    for e, f in zip(train, _examples(again, "train")):
        assert e["text"] == f["text"] and e["speaker"] == f["speaker"]
        assert e["pcm16"] == f["pcm16"]


def test_synthetic_spec_parsing():
    assert SyntheticSpeechParams.from_spec("synthetic") == SyntheticSpeechParams()
    assert SyntheticSpeechParams.from_spec("synthetic:num_train=20, seed=3") == SyntheticSpeechParams(
        num_train=20, seed=3
    )
    with pytest.raises(ValueError, match="keys among"):
        SyntheticSpeechParams.from_spec("synthetic:voices=3")
    with pytest.raises(ValueError, match="field `num_train`, expected an integer, got 'many'"):
        SyntheticSpeechParams.from_spec("synthetic:num_train=many")
    with pytest.raises(ValueError, match="field `min_words`, expected at most max_words=2"):
        SyntheticSpeechParams(min_words=3, max_words=2)


def test_a_spec_is_checked_without_reading_its_data(tmp_path):
    # What train.py checks before importing TensorFlow: the spec's form, its folders and options.
    folder = tmp_path / "fsdd"
    folder.mkdir()  # no manifest: whether a folder holds a corpus is the builders' to find
    for spec in ("synthetic", "synthetic:text=digits,sample_rate=8000", str(folder),
                 f" {folder}:held_out_speakers=lucas;george,validation_speakers=jackson ",
                 "spoken_digit", f"{folder}:test_fraction=0.1+synthetic:text=digits+librispeech"):
        assert check_speech_spec(spec) is None
    assert os.listdir(tmp_path) == ["fsdd"] and not os.listdir(folder)
    for spec, message in (
        ("", "expected 'synthetic', a folder or one of ('librispeech', 'ljspeech', 'spoken_digit'), got ''"),
        (f"{folder}+", f"{str(folder)+'+'!r} has an empty part"),
        (str(tmp_path / "nope"), f"got {str(tmp_path / 'nope')!r} (no such folder)"),
        (f"synthetic+{tmp_path / 'nope'}:held_out_speakers=a", "(no such folder)"),
        ("synthetic:voices=3", "'synthetic:voices=3'; expected 'synthetic' or 'synthetic:key=value,...'"),
        ("synthetic:sample_rate=4000", "field `sample_rate`, expected an integer >= 8000"),
        (f"{folder}:held=1", "got 'held=1'"),
        (f"{folder}:held_out_speakers=a,test_fraction=0.1", "(0 < F < 1, not both)"),
    ):
        for argument, named in (("dataset", "argument `dataset`"),
                                ("mix_dataset", "argument `mix_dataset` (--mix-dataset)")):
            with pytest.raises(ValueError) as error:
                check_speech_spec(spec, argument)
            assert message in str(error.value)
            if "argument `" in str(error.value):
                assert named in str(error.value)
            # The run refuses it with the same message.
            if argument == "dataset":
                with pytest.raises(ValueError) as refused:
                    resolve_speech_source(spec, cache_dir=str(tmp_path / "cache"))
                assert str(refused.value) == str(error.value)
    assert sorted(os.listdir(tmp_path)) == ["fsdd"]


def test_building_a_dataset_leaves_the_seeded_random_stream_alone(tmp_path):
    # TFDS draws its temporary directory's name from Python's global `random`;
    # Keras draws default seeds (initial weights, dropout) from the same stream,
    # so a run that builds the cache must leave it where a run that reads it does.
    manifest = tmp_path / "m"
    _manifest(manifest, [("1.wav", "", "train", "one"), ("2.wav", "", "test", "two")])
    random.seed(1234)
    state = random.getstate()
    source = resolve_speech_source(str(manifest), cache_dir=str(tmp_path / "cache"))
    assert os.listdir(tmp_path / "cache" / "tfds" / "manifest_speech")  # built now, not read
    assert random.getstate() == state
    assert [u.text for u in source.splits["train"]()] == ["one"]


def test_resolve_folders_and_errors(tmp_path):
    manifest = tmp_path / "m"
    _manifest(manifest, [("1.wav", "", "train", "one"), ("2.wav", "", "test", "two")])
    source = resolve_speech_source(str(manifest), cache_dir=str(tmp_path / "cache"))
    assert set(source.splits) == {"train", "validation"}  # the test split validates
    assert "validation = the data's test split" in source.description
    [utterance] = list(source.splits["validation"]())
    assert (utterance.text, utterance.path) == ("two", str(manifest / "2.wav"))
    assert source.identity.startswith("manifest_speech/m_")

    librispeech = tmp_path / "ls"
    _librispeech(librispeech, None, ["1", "2"])
    assert resolve_speech_source(str(librispeech), cache_dir=str(tmp_path / "cache")).identity.startswith(
        "libri_speech_folder/"
    )
    # One speaker and one transcript: nothing to hold out, and the message says why.
    single = tmp_path / "single"
    _manifest(single, [("1.wav", "ann", "", "one"), ("2.wav", "ann", "", "one")])
    with pytest.raises(ValueError, match=r"single has no validation or test split; it has \['train'\]\. Where the "
                                         r"data names no split, one is held out by speaker \(two or more speakers\) "
                                         r"or else by transcript"):
        resolve_speech_source(str(single), cache_dir=str(tmp_path / "cache"))
    os.makedirs(tmp_path / "plain")
    (tmp_path / "plain" / "x.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="has no manifest.tsv, no LJSpeech"):
        resolve_speech_source(str(tmp_path / "plain"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="got 'nothing_here' \\(no such folder\\)"):
        resolve_speech_source("nothing_here", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError) as info:
        resolve_speech_source("spoken_digit", cache_dir=str(tmp_path / "cache"), data_dir=str(tmp_path / "tfds_home"))
    message = str(info.value)
    assert "not prepared in" in message and str(tmp_path / "tfds_home") in message
    assert "tfds build spoken_digit" in message and "never downloads" in message


def test_held_out_speaker_that_the_folder_validated_with_is_refused_not_an_empty_validation(tmp_path):
    # No split column: one of the three speakers (ann, by the stable hash) validates;
    # holding ann out as the test used to leave an empty validation split, found
    # only after every training feature was computed ("No usable utterances left").
    folder = tmp_path / "voices"
    _manifest(folder, [(f"{s}{i}.wav", s, "", f"word {i}") for s in ("ann", "bob", "cy") for i in range(2)])
    cache = str(tmp_path / "cache")
    source = resolve_speech_source(f"{folder}:held_out_speakers=bob", cache_dir=cache)
    assert {split: sorted(u.key for u in read()) for split, read in source.splits.items()} == {
        "train": ["cy0.wav", "cy1.wav"], "validation": ["ann0.wav", "ann1.wav"], "test": ["bob0.wav", "bob1.wav"]
    }
    with pytest.raises(ValueError, match=(
        r"^Received an invalid value for argument `dataset`: held_out_speakers \['ann'\] leave nothing to "
        rf"validate on in {re.escape(str(folder))}: its validation split holds only their utterances "
        r"\(speakers \['ann'\]\)\. Add validation_speakers=NAME\[;NAME\.\.\.\] to choose the speakers that "
        r"validate among the others\.$"
    )):
        resolve_speech_source(f"{folder}:held_out_speakers=ann", cache_dir=cache)
    with pytest.raises(ValueError, match=r"held_out_speakers \['bob', 'cy'\] leave nothing to train on in .*: its "
                                         r"train split holds only their utterances \(speakers \['bob', 'cy'\]\)\."):
        resolve_speech_source(f"{folder}:held_out_speakers=bob;cy", cache_dir=cache)
    # Choosing who validates among the others works.
    source = resolve_speech_source(f"{folder}:held_out_speakers=ann,validation_speakers=bob", cache_dir=cache)
    assert {split: sorted(u.key for u in read()) for split, read in source.splits.items()} == {
        "train": ["cy0.wav", "cy1.wav"], "validation": ["bob0.wav", "bob1.wav"], "test": ["ann0.wav", "ann1.wav"]
    }


def _fake_catalog_builder(base, name, splits):
    """A prepared stand-in for a TFDS catalog dataset, with the real schema."""

    class Fake(base, skip_registration=True):
        @tfds.core.utils.classproperty
        @classmethod
        def url_infos(cls):
            return None

        @classmethod
        def get_metadata(cls):
            return base.get_metadata()

        def _split_generators(self, dl_manager):
            return {split: iter(examples) for split, examples in splits.items()}

    Fake.name = name
    return Fake


def test_catalog_names_when_prepared(tmp_path):
    from tensorflow_datasets.datasets.librispeech import librispeech_dataset_builder
    from tensorflow_datasets.datasets.ljspeech import ljspeech_dataset_builder
    from tensorflow_datasets.datasets.spoken_digit import spoken_digit_dataset_builder

    def tone(n, dtype):
        return (np.sin(np.arange(n) / 3.0) * 8000).astype(dtype)

    digits = [
        (f"{d}_{s}_0.wav", {"audio": tone(4000, np.int64), "audio/filename": f"{d}_{s}_0.wav", "label": d})
        for s in ("jackson", "theo", "nicolas") for d in range(2)
    ]
    lj = [
        (f"LJ{i:03d}", {"id": f"LJ{i:03d}", "speech": tone(2205, np.int16), "text": "Mr. X", "text_normalized": "Mister X"})
        for i in range(30)
    ]

    def libri(prefix):
        return [
            (f"{prefix}{i}", {"id": f"{prefix}{i}", "speech": tone(1600, np.int16), "text": "HELLO", "speaker_id": i, "chapter_id": 1})
            for i in range(2)
        ]

    data_dir = str(tmp_path / "tensorflow_datasets")
    for base, name, splits in [
        (spoken_digit_dataset_builder.Builder, "spoken_digit", {"train": digits}),
        (ljspeech_dataset_builder.Builder, "ljspeech", {"train": lj}),
        (librispeech_dataset_builder.Builder, "librispeech",
         {"train_clean100": libri("t"), "dev_clean": libri("d"), "test_clean": libri("e")}),
    ]:
        _prepare(_fake_catalog_builder(base, name, splits)(data_dir=data_dir))

    source = resolve_speech_source("spoken_digit", cache_dir=str(tmp_path / "cache"), data_dir=data_dir)
    train, validation = list(source.splits["train"]()), list(source.splits["validation"]())
    assert len(train) == 4 and len(validation) == 2
    assert len({u.speaker for u in validation}) == 1 and not {u.speaker for u in train} & {u.speaker for u in validation}
    assert {(u.text, u.sample_rate, u.audio.dtype.name) for u in validation} == {
        ("zero", 8000, "int16"), ("one", 8000, "int16")
    }

    source = resolve_speech_source("ljspeech", cache_dir=str(tmp_path / "cache"), data_dir=data_dir)
    train, validation = list(source.splits["train"]()), list(source.splits["validation"]())
    assert len(train) + len(validation) == 30 and validation and not {u.key for u in train} & {u.key for u in validation}
    assert {(u.text, u.sample_rate) for u in train} == {("Mister X", 22050)}

    source = resolve_speech_source("librispeech", cache_dir=str(tmp_path / "cache"), data_dir=data_dir)
    assert set(source.splits) == {"train", "validation", "test"}
    assert sorted(u.key for u in source.splits["validation"]()) == ["d0", "d1"]
    assert sorted(u.key for u in source.splits["test"]()) == ["e0", "e1"]
    assert {(u.text, u.speaker, u.sample_rate) for u in source.splits["train"]()} == {
        ("HELLO", "0", 16000), ("HELLO", "1", 16000)
    }


def test_digit_sentences_and_combined_spec(tmp_path):
    params = SyntheticSpeechParams(num_train=50, num_validation=5, min_words=1, max_words=2, text="digits")
    train, validation = choose_sentences("", params)
    words = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    assert len(train) == 50 and len(validation) == 5
    assert all(1 <= len(s.split()) <= 2 and set(s.split()) <= words for s in train + validation)
    assert SyntheticSpeechParams.from_spec("synthetic:text=digits,sample_rate=8000") == SyntheticSpeechParams(
        text="digits", sample_rate=8000
    )
    with pytest.raises(ValueError, match="field `text`, expected one of"):
        SyntheticSpeechParams(text="poems")

    manifest = tmp_path / "m"
    _manifest(manifest, [("1.wav", "", "train", "one"), ("2.wav", "", "test", "two")])
    spec = f"{manifest}+synthetic:text=digits,num_train=3,num_validation=2,max_words=2,sample_rate=8000"
    source = resolve_speech_source(spec, cache_dir=str(tmp_path / "cache"))
    train = list(source.splits["train"]())
    assert [u.text for u in train[:1]] == ["one"] and len(train) == 4
    assert {u.sample_rate for u in train[1:]} == {8000}
    assert [u.text for u in source.splits["validation"]()] == ["two"]  # the first part's only
    assert source.identity.startswith("manifest_speech/") and "+synthetic_speech/" in source.identity
    with pytest.raises(ValueError, match="has an empty part"):
        resolve_speech_source(f"{manifest}+", cache_dir=str(tmp_path / "cache"))


def test_synthetic_channel_option(tmp_path):
    clean = SyntheticSpeechParams(num_train=3, num_validation=2, text="digits", sample_rate=8000)
    noisy = SyntheticSpeechParams(num_train=3, num_validation=2, text="digits", sample_rate=8000, channel=1)
    assert SyntheticSpeechParams.from_spec("synthetic:text=digits,sample_rate=8000,num_train=3,num_validation=2,channel=1") == noisy
    assert "channel" not in clean.config_name("0" * 8)  # existing corpora keep their names
    assert noisy.config_name("0" * 8) == clean.config_name("0" * 8).replace("_corpus", "_channel1_corpus")
    with pytest.raises(ValueError, match="field `channel`, expected 0 or 1, got 2"):
        SyntheticSpeechParams(channel=2)
    a = _examples(_prepare(SyntheticSpeech(params=clean, data_dir=tmp_path / "a")), "train")
    b = _examples(_prepare(SyntheticSpeech(params=noisy, data_dir=tmp_path / "b")), "train")
    again = _examples(_prepare(SyntheticSpeech(params=noisy, data_dir=tmp_path / "c")), "train")
    assert [e["pcm16"] for e in b] == [e["pcm16"] for e in again]  # deterministic from the seed
    for e, f in zip(a, b):
        assert (e["text"], e["speaker"]) == (f["text"], f["speaker"])
        x, y = np.frombuffer(e["pcm16"], "<i2"), np.frombuffer(f["pcm16"], "<i2")
        assert len(y) >= len(x) and not np.array_equal(x[: len(y)], y[: len(x)])
        assert np.abs(y).max() == round(0.9 * 32767)  # rescaled to the channel's peak


def test_synthetic_rate_and_pitch_ranges_reach_espeak(tmp_path):
    common = dict(num_train=4, num_validation=2, text="digits", min_words=3, max_words=3, sample_rate=8000)
    slow = SyntheticSpeechParams(min_rate=80, max_rate=80, **common)
    fast = SyntheticSpeechParams(min_rate=450, max_rate=450, **common)
    low = SyntheticSpeechParams(min_rate=80, max_rate=80, min_pitch=0, max_pitch=0, **common)
    slow_e, fast_e, low_e = (
        _examples(_prepare(SyntheticSpeech(params=p, data_dir=tmp_path / name)), "train")
        for p, name in ((slow, "slow"), (fast, "fast"), (low, "low"))
    )
    for s, f, lo in zip(slow_e, fast_e, low_e):
        assert s["text"] == f["text"] == lo["text"] and s["speaker"] == f["speaker"] == lo["speaker"]
        # The same three digits by the same voice: far longer at 80 words a minute than at 450.
        assert len(s["pcm16"]) > 2 * len(f["pcm16"])
        assert s["pcm16"] != lo["pcm16"]  # the pitch reaches the synthesiser too

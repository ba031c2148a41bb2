"""`python -m data.word_splice`: training recordings cut between words and joined in new orders."""

import argparse
import csv
import json
import os

import numpy as np
import pytest
import soundfile as sf

from data import word_splice
from data.word_splice import AlignedRecording, align_recordings, splice_utterances, word_cuts
from pipelines.audio_features import FeatureConfig
from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary
from tests.fresh_process import exits_before_tensorflow

FEATURES = FeatureConfig(n_mels=16)  # 16 kHz, n_fft 400, hop 160


def test_word_cuts_fall_halfway_between_words():
    # Frame stacking 3, hop 160, n_fft 400: output frame j starts its features at sample 480 j and
    # the boundary before it is at 480 j + 120. Word 0 ends on frame 2 and word 1 starts on frame 6:
    # the cut is at frame 4.5 -> 2280; word 1 ends on 8 and word 2 starts on 10: 9.5 -> 4680.
    spans = [(0, 2), (6, 8), (10, 10)]
    assert word_cuts(spans, num_samples=6000, first_frame=0, frame_stack=3, hop_length=160, n_fft=400) == (
        0, 2280, 4680, 6000)
    # Five feature frames trimmed at the start move every cut by 5 * 160 samples.
    assert word_cuts(spans, num_samples=6000, first_frame=5, frame_stack=3, hop_length=160, n_fft=400) == (
        0, 3080, 5480, 6000)
    assert word_cuts([(0, 3)], num_samples=999, first_frame=0, frame_stack=1, hop_length=160, n_fft=400) == (0, 999)


def _recordings():
    """Three recordings whose samples say where they come from: recording r's sample i is r * 1e4 + i."""
    texts = ["one two three", "four five", "six seven eight nine"]
    recordings = []
    for r, text in enumerate(texts):
        words = tuple(text.split())
        waveform = (r * 10_000 + np.arange(100 * len(words))).astype(np.float32)
        cuts = tuple(range(0, 100 * len(words) + 1, 100))
        recordings.append(AlignedRecording(f"rec{r}.wav", "anna" if r < 2 else "bob", words, waveform, cuts))
    return recordings


def test_spliced_utterances_are_the_pieces_they_list():
    recordings = _recordings()
    by_source = {r.source: r for r in recordings}
    made = splice_utterances(recordings, count=40, max_words=2, seed=3)
    assert len(made) == 40
    assert {u.split for u in made} == {"train"}
    spans = set()
    for utterance in made:
        expected_audio, expected_words = [], []
        for source, begin, end in utterance.pieces:
            recording = by_source[source]
            first, last = recording.cuts.index(begin), recording.cuts.index(end)
            assert 1 <= last - first <= 2  # whole words, at most --max-words of them
            spans.add(last - first)
            expected_audio.append(recording.waveform[begin:end])
            expected_words.extend(recording.words[first:last])
        np.testing.assert_array_equal(utterance.waveform, np.concatenate(expected_audio))
        assert utterance.text == " ".join(expected_words)
        assert len(expected_words) in (2, 3, 4)  # as many words as a recording has
        speakers = {by_source[source].speaker for source, _, _ in utterance.pieces}
        assert utterance.speaker == "+".join(sorted(speakers))
    assert spans == {1, 2}
    assert len({u.text for u in made}) > 25  # new orders, not the three recordings again
    # The same seed gives the same utterances, another seed others.
    again = splice_utterances(recordings, count=40, max_words=2, seed=3)
    assert [u.text for u in again] == [u.text for u in made]
    assert [u.text for u in splice_utterances(recordings, count=40, max_words=2, seed=4)] != [u.text for u in made]


def test_length_limit_word_counts_and_fades():
    recordings = _recordings()
    made = splice_utterances(recordings, count=30, seed=0, word_counts=[6], max_samples=350)
    for utterance in made:  # stops before a piece would pass 350 samples, however many words it wanted
        assert len(utterance.waveform) <= 350 or len(utterance.pieces) == 1
        assert len(utterance.text.split()) <= 6
    assert max(len(u.text.split()) for u in made) > 1
    unlimited = splice_utterances(recordings, count=30, seed=0, word_counts=[6])
    assert {len(u.text.split()) for u in unlimited} == {6}
    # Fades at edges cut inside a recording, none at a recording's own start or end.
    ones = [AlignedRecording("r.wav", "", ("a", "b", "c"), np.ones(300, np.float32), (0, 100, 200, 300))]
    for utterance in splice_utterances(ones, count=20, seed=1, max_words=1, word_counts=[1], fade_samples=10):
        (_, begin, end), = utterance.pieces
        wave = utterance.waveform
        assert (wave[0] < 0.1) == (begin > 0) and (wave[-1] < 0.1) == (end < 300)
        np.testing.assert_array_equal(wave[10:-10], 1.0)
        if begin > 0:
            np.testing.assert_allclose(wave[:10], 0.5 - 0.5 * np.cos(np.pi * (np.arange(10) + 0.5) / 10))
    with pytest.raises(ValueError, match="at least one aligned recording"):
        splice_utterances([], count=1)
    with pytest.raises(ValueError, match="`max_words`, expected a positive integer, got 0"):
        splice_utterances(recordings, count=1, max_words=0)


class _Utterance:
    def __init__(self, source, speaker=""):
        self.source, self.speaker = source, speaker


def _fake_transcriber(words_at, vocabulary, frames, hypotheses=None):
    """A `transcribe` whose log-probabilities put each character of row r's words on the frames
    `words_at[r]` lists (one (first, last) span per word; the space right after each word), r counting
    the rows of every call."""
    served = []

    def transcribe(waveform, waveform_length):
        log_probs = np.full((len(waveform), frames, vocabulary.size), -20.0)
        log_probs[:, :, vocabulary.blank_id] = 0.0
        texts = []
        for row in range(len(waveform)):
            spans = words_at[len(served)]
            served.append(row)
            text = []
            for word, (first, last) in spans:
                ids = vocabulary.encode(word)
                for frame, char in zip(range(first, last + 1), ids + ids[-1:] * (last - first + 1 - len(ids))):
                    log_probs[row, frame, :] = -20.0
                    log_probs[row, frame, char] = 0.0
                log_probs[row, last + 1, :] = -20.0
                log_probs[row, last + 1, vocabulary.encode(" ")[0]] = 0.0
                text.append(word)
            texts.append(" ".join(text) if hypotheses is None else hypotheses[len(served) - 1])
        frame_length = np.full(len(waveform), frames, np.int32)
        return log_probs, frame_length, texts

    return transcribe


def test_align_recordings_cuts_where_the_transcriber_hears_the_words():
    vocabulary = Vocabulary(SPEECH_ALPHABET)
    config = FeatureConfig(n_mels=16)
    # 20 output frames at stacking 3: 60 feature frames, 400 + 59 * 160 = 9840 samples.
    waveform = np.random.default_rng(0).normal(scale=0.1, size=9840).astype(np.float32)
    words_at = [[("go", (2, 4)), ("on", (9, 11))], [("no", (1, 2)), ("go", (12, 14))]]
    usable = [(_Utterance("a.wav", "x"), "go on", waveform), (_Utterance("b.wav"), "no go", waveform)]
    recordings, rows, reasons = align_recordings(
        usable, _fake_transcriber(words_at, vocabulary, 20), vocabulary=vocabulary, feature_config=config)
    assert not reasons
    # "go" ends on frame 4 (its space on 5), "on" starts on 9: the cut at frame 7 -> 7 * 480 + 120;
    # "no" ends on 2 and "go" starts on 12: 7.5 -> 3720.
    assert [r.cuts for r in recordings] == [(0, 3480, 9840), (0, 3720, 9840)]
    assert [r.words for r in recordings] == [("go", "on"), ("no", "go")]
    assert [r.speaker for r in recordings] == ["x", ""]
    assert rows[1]["words"] == "no@0.000-0.233 go@0.233-0.615" and rows[0]["used"] and rows[0]["cer"] == 0
    # A recording the transcriber reads badly is left out, and counted.
    recordings, rows, reasons = align_recordings(
        usable, _fake_transcriber(words_at, vocabulary, 20, hypotheses=["go on", "xx yy zz"]),
        vocabulary=vocabulary, feature_config=config, max_cer=0.5)
    assert [r.source for r in recordings] == ["a.wav"] and reasons == {"transcribed_with_cer_over_max_cer": 1}
    assert [row["used"] for row in rows] == [True, False] and rows[1]["words"] == ""
    # Outputs that do not follow the features frame by frame are refused, naming the file.
    with pytest.raises(ValueError, match=r"b.wav: 40 feature frames gave 20 output frames, expected ceil\(40 / 3\)"):
        align_recordings([usable[0], (usable[1][0], "no go", waveform[: 400 + 160 * 39])],
                         _fake_transcriber(words_at, vocabulary, 20), vocabulary=vocabulary, feature_config=config,
                         batch_size=1)
    # A frame stacking given (the export's metadata) is checked from the first utterance on.
    with pytest.raises(ValueError, match=r"a.wav: 60 feature frames gave 20 output frames, expected ceil\(60 / 2\)"):
        align_recordings(usable, _fake_transcriber(words_at, vocabulary, 20), vocabulary=vocabulary,
                         feature_config=config, frame_stack=2)
    assert len(align_recordings(usable, _fake_transcriber(words_at, vocabulary, 20), vocabulary=vocabulary,
                                feature_config=config, frame_stack=3)[0]) == 2


def _random_export(tmp_path):
    """The export of an untrained transcriber (random weights: any alignment is one)."""
    import keras

    from models.transcription import build_transcription_model
    from serving.export_run import export_run
    from training.cli import write_json

    vocabulary = Vocabulary(SPEECH_ALPHABET)
    keras.utils.set_random_seed(1)
    model = build_transcription_model(num_features=FEATURES.n_features, vocabulary_size=vocabulary.size,
                                      hidden_size=8, num_layers=1, dropout=0.0)
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    vocabulary.save(run / "vocabulary.json")
    write_json(str(run / "feature_config.json"), FEATURES.to_dict())
    return export_run(str(run))


def _corpus(tmp_path):
    """A manifest folder of noise recordings: four for training, one for validation, one for test."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = [("t0.wav", "red green blue", "train"), ("t1.wav", "one two", "train"),
            ("t2.wav", "up down left right", "train"), ("t3.wav", "Yes!", "train"),
            ("v0.wav", "held out words", "validation"), ("x0.wav", "test only", "test")]
    rng = np.random.default_rng(5)
    lines = ["path\ttext\tspeaker\tsplit"]
    for path, text, split in rows:
        sf.write(folder / path, rng.normal(scale=0.1, size=int(0.3 * 16000 * len(text.split()))), 16000)
        lines.append(f"{path}\t{text}\tanna\t{split}")
    (folder / "manifest.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_the_command_writes_a_manifest_folder_of_training_words(tmp_path, capsys):
    from data.speech_sources import resolve_speech_source

    export = _random_export(tmp_path)
    corpus = _corpus(tmp_path)
    out_dir = tmp_path / "spliced"
    flags = ["--export", export, "--dataset", str(corpus), "--output-dir", str(out_dir), "--count", "12",
             "--validation-count", "3", "--seed", "7", "--max-cer", "100", "--cache-dir", str(tmp_path / "cache")]
    capsys.readouterr()  # what the export printed
    assert word_splice.main(flags) == 0
    out = capsys.readouterr().out  # after TFDS's "Downloading and preparing dataset" line
    summary = json.loads(out[out.index("{\n") : out.index("\nNext:")])
    assert f"Next: python train.py --task transcription --dataset '{corpus}' --mix-dataset {out_dir}" in out
    assert summary["recordings_read"] == 4 and summary["recordings_used"] == 4 and summary["recordings_left_out"] == 0
    assert summary["words_used"] == 10 and summary["distinct_words"] == 10
    with open(out_dir / "manifest.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert [row["split"] for row in rows] == ["train"] * 12 + ["validation"] * 3
    training_words = {"red", "green", "blue", "one", "two", "up", "down", "left", "right", "yes"}
    for row in rows:
        assert set(row["text"].split()) <= training_words
        assert 3 <= len(row["text"].split()) <= 8  # --words-per-utterance's default
        assert row["speaker"] == "anna"
        sources = [piece.rpartition("@")[0] for piece in row["pieces"].split("; ")]
        assert all(os.path.basename(source).startswith("t") for source in sources)  # never v0 or x0
        audio, rate = sf.read(out_dir / row["path"])
        assert rate == 16000
        seconds = sum(float(end) - float(begin) for begin, end in
                      (piece.rpartition("@")[2].split("-") for piece in row["pieces"].split("; ")))
        assert len(audio) / rate == pytest.approx(seconds, abs=0.002 * len(sources))
    assert summary["minutes"]["train"] == pytest.approx(
        sum(sf.info(out_dir / r["path"]).duration for r in rows[:12]) / 60, abs=0.01)
    with open(out_dir / "alignments.tsv", encoding="utf-8") as f:
        aligned = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert sorted(os.path.basename(a["path"]) for a in aligned) == ["t0.wav", "t1.wav", "t2.wav", "t3.wav"]
    assert [len(a["words"].split()) for a in aligned] == [len(a["text"].split()) for a in aligned]
    # The folder is a dataset: its splits read back through the project's manifest builder.
    source = resolve_speech_source(str(out_dir), cache_dir=str(tmp_path / "cache"))
    assert sorted(source.splits) == ["train", "validation"]
    assert len(list(source.splits["train"]())) == 12 and len(list(source.splits["validation"]())) == 3

    # An existing folder is not replaced without --overwrite; with it, the new one replaces it whole.
    (out_dir / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit):
        word_splice.main(flags)
    assert "exists and is not empty; nothing was written: give --overwrite" in capsys.readouterr().err
    with pytest.raises(ValueError, match="exists and is not empty; nothing was written"):  # the function too
        word_splice.write_folder(str(out_dir), [], [], {}, sample_rate=16000)
    assert (out_dir / "mine.txt").read_text() == "keep"
    assert word_splice.main([*flags, "--overwrite", "--count", "5", "--seed", "8", "--words-per-utterance", "2-3"]) == 0
    assert not (out_dir / "mine.txt").exists()
    lines = (out_dir / "manifest.tsv").read_text().splitlines()
    assert len(lines) == 1 + 5 + 3
    assert {len(line.split("\t")[1].split()) for line in lines[1:]} <= {2, 3}  # none of 1 or 4 words
    assert [p for p in os.listdir(tmp_path) if p.startswith(".spliced")] == []  # no staging left behind

    # A transcriber that reads none of them well enough leaves nothing to cut: said, and nothing written.
    assert word_splice.main([*flags[:-4], "--cache-dir", str(tmp_path / "cache"), "--output-dir",
                             str(tmp_path / "none"), "--max-cer", "0"]) == 2
    err = capsys.readouterr().err
    assert "No recording of the training split" in err and "'transcribed_with_cer_over_max_cer': 4" in err
    assert not (tmp_path / "none").exists()


def test_words_per_utterance_values():
    assert word_splice._word_range("3-8") == (3, 8)
    assert word_splice._word_range("4") == (4, 4)
    assert word_splice._word_range("corpus") is None  # as many words as a random recording
    for bad in ("0-2", "5-2", "x", "3-", "-3"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected MIN-MAX"):
            word_splice._word_range(bad)


def test_bad_arguments_answer_before_tensorflow_is_imported(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = tmp_path / "run"
    (run / "export" / "transcriber" / "3").mkdir(parents=True)
    (run / "export" / "transcriber" / "3" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.wav").write_bytes(b"")
    base = ["--dataset", "synthetic", "--output-dir", str(tmp_path / "out")]
    codes, stderr, imported = exits_before_tensorflow("data.word_splice", [
        ["--help"],
        ["--export", str(run), *base],
        ["--export", str(tmp_path / "nowhere"), *base],
        ["--export", str(run / "export" / "transcriber" / "3"), *base, "--count", "0"],
        ["--export", str(run / "export" / "transcriber" / "3"), *base, "--max-words", "-1"],
        ["--export", str(run / "export" / "transcriber" / "3"), *base, "--validation-count", "0"],
        ["--export", str(run / "export" / "transcriber" / "3"), *base, "--max-recordings", "-1"],
        ["--export", str(run / "export" / "transcriber" / "3"), *base, "--max-cer", "nan"],
        ["--export", str(run / "export" / "transcriber" / "3"), *base, "--fade-ms", "500"],
        ["--export", str(run / "export" / "transcriber" / "3"), *base, "--words-per-utterance", "5-2"],
        ["--export", str(run / "export" / "transcriber" / "3"), *base, "--output-dir", str(tmp_path / "full")],
        ["--export", str(run / "export" / "transcriber" / "3"), *base,
         "--output-dir", str(tmp_path / "full" / "x.wav")],
    ], cwd=root)
    assert codes == [0] + [2] * 11
    assert imported == []
    for needle in (
        f"--export '{run}' is not a SavedModel version directory (no saved_model.pb); use --export "
        f"{run / 'export' / 'transcriber' / '3'}.",
        f"--export '{tmp_path / 'nowhere'}' is not a SavedModel version directory (no saved_model.pb).",
        "--count must be a positive integer, got 0.",
        "--max-words must be a positive integer, got -1.",
        "--validation-count must be a positive integer (a folder without a validation split is not a dataset "
        "--mix-dataset can read), got 0.",
        "--max-recordings must be 0 (all) or a positive integer, got -1.",
        "--max-cer must be a number >= 0, got nan.",
        "--fade-ms must be between 0 and 100 milliseconds, got 500.0.",
        "argument --words-per-utterance: expected MIN-MAX with 1 <= MIN <= MAX, got '5-2'",
        f"--output-dir {tmp_path / 'full'} exists and is not empty; nothing was written: give --overwrite",
        f"--output-dir {tmp_path / 'full' / 'x.wav'} is a file: expected a directory for the spliced folder's files.",
    ):
        assert needle in stderr

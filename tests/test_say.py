"""`python -m data.say`: a WAV file of speech to try a model on."""

import math

import numpy as np
import pytest
import soundfile as sf

from data.say import main
from pipelines.audio_loading import load_audio


def test_says_a_text_into_a_wav_file_the_models_read(tmp_path, capsys):
    path = tmp_path / "speech.wav"
    assert main(["set an alarm for seven", str(path)]) == 0
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (22050, 1, "PCM_16", "WAV")
    assert 1.0 < info.duration < 3.0  # five words at 175 words per minute
    assert capsys.readouterr().out == f"{path}: {info.duration:.2f} s at 22050 Hz\n"
    # As training and transcribe.py read audio: a file they accept, at the model's rate.
    waveform = load_audio(str(path), 16000)
    assert waveform.dtype == np.float32 and abs(waveform.shape[0] - round(info.duration * 16000)) <= 1
    assert np.max(np.abs(waveform)) > 0.1

    # Another rate (resampled), and the same text and voice give the same speech.
    other = tmp_path / "speech_8k.wav"
    assert main(["set an alarm for seven", str(other), "--sample-rate", "8000"]) == 0
    samples, rate = sf.read(other, dtype="int16")
    assert rate == 8000 and samples.shape[0] == math.ceil(info.frames * 8000 / 22050)  # librosa's length
    again = tmp_path / "again.wav"
    main(["set an alarm for seven", str(again)])
    assert again.read_bytes() == path.read_bytes()


def _usage_error(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_bad_arguments_are_named_and_an_existing_file_is_kept(tmp_path, capsys):
    kept = tmp_path / "kept.wav"
    kept.write_bytes(b"keep me")
    assert "output: " + str(kept) + " exists; give --overwrite" in _usage_error(capsys, "hello", kept)
    assert kept.read_bytes() == b"keep me"
    assert "text: expected words to speak" in _usage_error(capsys, "  ", tmp_path / "a.wav")
    assert "is a directory" in _usage_error(capsys, "hello", tmp_path)
    assert "--rate: expected 80-450" in _usage_error(capsys, "hello", tmp_path / "a.wav", "--rate", "20")
    message = _usage_error(capsys, "hello", tmp_path / "a.wav", "--voice", "en+nosuchvariant")
    assert "nosuchvariant" in message
    # An unknown voice, refused inside the synthesis process: its message, not a traceback.
    assert "expected an espeak-ng voice such as 'en-us+m3', got 'nosuch'" in _usage_error(
        capsys, "hello", tmp_path / "a.wav", "--voice", "nosuch")
    assert "is not a directory" in _usage_error(capsys, "hello", tmp_path / "missing" / "a.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.wav"]
    # With --overwrite the file is replaced.
    assert main(["hello", str(kept), "--overwrite"]) == 0
    assert sf.info(kept).samplerate == 22050

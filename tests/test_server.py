"""The REST server: TF Serving's API, :transcribe, errors, versions, a real process."""

import asyncio
import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import keras
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from fastapi.testclient import TestClient

from models.language_model import build_language_model
from models.transcription import build_transcription_model
from pipelines.audio_features import FeatureConfig
from pipelines.audio_loading import prepare_waveform
from pipelines.vocabulary import SPEECH_ALPHABET, Vocabulary
from serving.batcher import Batcher, QueueFull
from serving.language_model_export import export_language_model
from serving.server import create_app
from serving.transcription_export import export_transcriber
from tests.test_log_mel import synthetic_utterance

CONFIG = FeatureConfig(n_mels=40)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """`{"lm": version dir, "asr": version dir}` of two small exports."""
    base = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(11)
    text_vocabulary = Vocabulary.from_text("abcdefgh ijk\n")
    lm = build_language_model(vocabulary_size=text_vocabulary.size, embedding_dim=8, hidden_size=16)
    speech_vocabulary = Vocabulary(SPEECH_ALPHABET)
    asr = build_transcription_model(num_features=40, vocabulary_size=speech_vocabulary.size,
                                    hidden_size=16, num_layers=1)
    return {
        "lm": export_language_model(lm, text_vocabulary, base, trained_on="t", metrics={}),
        "asr": export_transcriber(asr, speech_vocabulary, CONFIG, base, trained_on="t", metrics={}),
    }


@pytest.fixture(scope="module")
def lm_client(exports):
    app = create_app("lm", os.path.dirname(exports["lm"]), max_request_bytes=200_000,
                     max_new_chars=100, max_text_chars=1000)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def asr_client(exports):
    app = create_app("asr", os.path.dirname(exports["asr"]), max_audio_seconds=3.0,
                     max_request_bytes=2_000_000)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def lm_saved(exports):
    return tf.saved_model.load(exports["lm"])


@pytest.fixture(scope="module")
def asr_saved(exports):
    return tf.saved_model.load(exports["asr"])


def _wav_bytes(samples, rate, subtype="PCM_16", format="WAV"):
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, subtype=subtype, format=format)
    return buffer.getvalue()


def _transcribed_alone(asr_saved, waveform):
    """The export's own `text` for one 16 kHz waveform, called directly."""
    return asr_saved.signatures["serving_default"](
        waveform=tf.constant(waveform[None]), waveform_length=tf.constant([len(waveform)])
    )["text"].numpy()[0].decode()


def _post_concurrently(app, path, requests):
    """POST each request's keyword arguments to `path` at once (in-process,
    through the app's lifespan); the responses in order."""
    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await asyncio.gather(*(client.post(path, **request) for request in requests))

    return asyncio.run(main())


def _upload(waveform):
    return {"files": {"file": ("a.wav", _wav_bytes(waveform, 16000, subtype="FLOAT"))}}


def test_model_status(lm_client):
    expected = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert lm_client.get("/v1/models/lm").json() == expected
    assert lm_client.get("/v1/models/lm/versions/1").json() == expected


def test_model_metadata_is_tf_servings(lm_client):
    body = lm_client.get("/v1/models/lm/metadata").json()
    assert body["model_spec"] == {"name": "lm", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "generate_seeded", "score"} <= set(signatures)
    assert signatures["generate_seeded"]["inputs"]["seed"]["dtype"] == "DT_INT64"
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["prompt"]["dtype"] == "DT_STRING"
    assert default["inputs"]["prompt"]["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert default["inputs"]["max_new_chars"]["tensor_shape"] == {"dim": [], "unknown_rank": False}
    assert default["inputs"]["temperature"]["dtype"] == "DT_FLOAT"
    assert default["outputs"]["text"]["dtype"] == "DT_STRING"
    assert signatures["score"]["outputs"]["nll"]["dtype"] == "DT_FLOAT"


def test_predict_columnar_generation(lm_client, lm_saved):
    request = {"inputs": {"prompt": ["abc", "k"], "max_new_chars": 12, "temperature": 0.0}}
    response = lm_client.post("/v1/models/lm:predict", json=request)
    assert response.status_code == 200
    expected = lm_saved.signatures["serving_default"](
        prompt=tf.constant(["abc", "k"]), max_new_chars=tf.constant(12), temperature=tf.constant(0.0))
    assert response.json() == {"outputs": [t.decode() for t in expected["text"].numpy()]}
    versioned = lm_client.post("/v1/models/lm/versions/1:predict", json=request)
    assert versioned.json() == response.json()


def test_predict_row_and_columnar_scores(lm_client, lm_saved):
    expected = lm_saved.signatures["score"](text=tf.constant(["abc", "hi j"]))
    nll = expected["nll"].numpy().tolist()
    rows = lm_client.post("/v1/models/lm:predict", json={
        "signature_name": "score", "instances": [{"text": "abc"}, {"text": {"b64": base64.b64encode(b"hi j").decode()}}]})
    assert rows.status_code == 200
    predictions = rows.json()["predictions"]
    assert [p["char_count"] for p in predictions] == [2, 3]
    np.testing.assert_allclose([p["nll"] for p in predictions], nll, rtol=1e-6)
    bare = lm_client.post("/v1/models/lm:predict", json={"signature_name": "score", "instances": ["abc", "hi j"]})
    assert bare.json() == rows.json()
    columns = lm_client.post("/v1/models/lm:predict", json={"signature_name": "score", "inputs": ["abc", "hi j"]})
    assert columns.json()["outputs"]["char_count"] == [2, 3]
    np.testing.assert_allclose(columns.json()["outputs"]["nll"], nll, rtol=1e-6)


def test_predict_takes_an_empty_signature_name_as_the_default(lm_client, lm_saved):
    # TF Serving reads "signature_name": "" as serving_default (the metadata's
    # model_spec shows it so).
    expected = lm_saved.signatures["serving_default"](
        prompt=tf.constant(["abc"]), max_new_chars=tf.constant(7), temperature=tf.constant(0.0))
    response = lm_client.post("/v1/models/lm:predict", json={
        "signature_name": "", "inputs": {"prompt": ["abc"], "max_new_chars": 7, "temperature": 0.0}})
    assert response.status_code == 200
    assert response.json() == {"outputs": [expected["text"].numpy()[0].decode()]}


def test_predict_reads_base64_as_tf_serving_does(lm_client, lm_saved):
    # absl::Base64Unescape, TF Serving's decoder: the padding is optional and
    # whitespace is skipped (the line breaks of `base64` or encodebytes()).
    text = "abc hij abc hij abc hij abc hij abc hij abc hij abc hij abc hij abc hij"
    wrapped = base64.encodebytes(text.encode()).decode()
    assert "\n" in wrapped.rstrip("\n")
    expected = lm_saved.signatures["score"](text=tf.constant([text, "ab", "abc"]))
    response = lm_client.post("/v1/models/lm:predict", json={"signature_name": "score", "inputs": [
        {"b64": wrapped}, {"b64": "YWI"}, {"b64": "YWJj"}]})
    assert response.status_code == 200
    assert response.json()["outputs"]["char_count"] == expected["char_count"].numpy().tolist() == [70, 1, 2]
    np.testing.assert_allclose(response.json()["outputs"]["nll"], expected["nll"].numpy(), rtol=1e-6)
    for bad in ("YWJjZ", "YQ=", "YW=I", "YW-_"):  # still refused: a stray character, wrong padding, web-safe
        response = lm_client.post("/v1/models/lm:predict", json={"signature_name": "score", "inputs": [{"b64": bad}]})
        assert response.status_code == 400
        assert response.json() == {"error": 'Input "text" holds an invalid base64 value in {"b64": ...}.'}


def test_a_version_that_is_not_an_ascii_number_is_400_not_a_crash(exports, tmp_path):
    base = tmp_path / "lm"
    shutil.copytree(exports["lm"], base / "1")
    shutil.copytree(exports["lm"], base / "\u00b2")  # "²".isdigit(), but int("²") fails: not a version
    app = create_app("lm", base, poll_seconds=3600)
    with TestClient(app) as client:
        assert client.get("/v1/models/lm").json()["model_version_status"][0]["version"] == "1"
        for url in ("/v1/models/lm/versions/\u00b2", "/v1/models/lm/versions/\u0661"):
            response = client.get(url)
            assert response.status_code == 400
            assert response.json() == {"error": f"Version must be a non-negative integer, got {url[-1]!r}."}


def test_predict_transcriber_row_format(asr_client, asr_saved):
    waveforms = [synthetic_utterance(1, 16000, 0.5), synthetic_utterance(2, 16000, 0.3)]
    width = max(map(len, waveforms))
    instances = [{"waveform": np.pad(w, (0, width - len(w))).tolist(), "waveform_length": len(w)}
                 for w in waveforms]
    response = asr_client.post("/v1/models/asr:predict", json={"instances": instances})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert sorted(predictions[0]) == ["frame_length", "log_probs", "text"]
    expected = asr_saved.signatures["serving_default"](
        waveform=tf.constant([i["waveform"] for i in instances], tf.float32),
        waveform_length=tf.constant([len(w) for w in waveforms]))
    assert [p["text"] for p in predictions] == [t.decode() for t in expected["text"].numpy()]
    assert [p["frame_length"] for p in predictions] == expected["frame_length"].numpy().tolist()
    np.testing.assert_allclose(predictions[1]["log_probs"], expected["log_probs"].numpy()[1], rtol=1e-6)


BAD_PREDICTS = [
    ('{"instances": [1, 2', 400, "Malformed JSON"),
    ("[1, 2]", 400, "must be a JSON object"),
    ('{"instances": ["a"], "inputs": ["a"], "signature_name": "score"}', 400, "exactly one of"),
    ('{"signature_name": "score"}', 400, "exactly one of"),
    ('{"signature_name": "score", "instances": []}', 400, "empty"),
    ('{"signature_name": "score", "inputs": [1, 2]}', 400, 'Input "text" must hold strings'),
    ('{"signature_name": "score", "inputs": [["a"], ["b", "c"]]}', 400, "ragged"),
    ('{"signature_name": "score", "inputs": [["a"], ["b"]]}', 400, "must have shape (batch,)"),
    ('{"signature_name": "score", "inputs": [{"b64": "***"}]}', 400, "invalid base64"),
    ('{"signature_name": "nope", "inputs": ["a"]}', 400, '"nope" not found'),
    ('{"signature_name": 3, "inputs": ["a"]}', 400, "must be a string"),
    ('{"inputs": {"prompt": ["a"], "max_new_chars": 5}}', 400, "missing input(s) ['temperature']"),
    ('{"inputs": {"prompt": ["a"], "max_new_chars": 5, "temperature": 0, "seed": 1}}', 400, "unknown input(s) ['seed']"),
    ('{"inputs": {"prompt": ["a"], "max_new_chars": 2.5, "temperature": 0}}', 400, "DT_INT32"),
    ('{"inputs": {"prompt": ["a"], "max_new_chars": "5", "temperature": 0}}', 400, "DT_INT32"),
    ('{"inputs": {"prompt": ["a"], "max_new_chars": 99999999999, "temperature": 0}}', 400, "outside the range"),
    ('{"inputs": {"prompt": ["a"], "max_new_chars": [5], "temperature": 0}}', 400, "shape ()"),
    # Beyond 64 bits: out of range too, not "mixed or nested values".
    ('{"signature_name": "generate_seeded", "inputs": {"prompt": ["a"], "max_new_chars": 5, "temperature": 0, '
     '"seed": 99999999999999999999}}', 400, '{"error":"Input \\"seed\\" holds integers outside the range of DT_INT64."}'),
    ('{"signature_name": "generate_seeded", "inputs": {"prompt": ["a"], "max_new_chars": 5, "temperature": 0, '
     '"seed": -9223372036854775809}}', 400, '{"error":"Input \\"seed\\" holds integers outside the range of DT_INT64."}'),
    ('{"instances": [{"prompt": "a", "max_new_chars": 5, "temperature": 0}]}', 400, "columnar"),
    ('{"inputs": {"prompt": ["a", ""], "max_new_chars": 5, "temperature": 0}}', 400, "at least one character"),
    ('{"inputs": {"prompt": ["a", "a\u00e9"], "max_new_chars": 5, "temperature": 0}}', 400,
     "every `prompt` character must be in the vocabulary of the model: `prompt`[1] holds characters "
     "\u00e9 (U+00E9) the model was not trained on; expected characters of its vocabulary"),
    ('{"inputs": {"prompt": ["a"], "max_new_chars": 5, "temperature": -1}}', 400, "temperature"),
    ('{"inputs": {"prompt": ["a"], "max_new_chars": 5, "temperature": NaN}}', 400,
     "`temperature` must be a finite number >= 0 (0 is greedy), got nan"),
    ('{"inputs": {"prompt": ["a"], "max_new_chars": 5, "temperature": 1e999}}', 400,
     "`temperature` must be a finite number >= 0 (0 is greedy), got inf"),
    ('{"signature_name": "generate_seeded", "inputs": {"prompt": ["a"], "max_new_chars": 5, "seed": 1, '
     '"temperature": Infinity}}', 400, "`temperature` must be a finite number >= 0 (0 is greedy), got inf"),
    ('{"inputs": {"prompt": ["a"], "max_new_chars": 101, "temperature": 0}}', 413, "limit of 100"),
    # Texts the model would read one character a step: bounded, in characters (not bytes).
    ('{"inputs": {"prompt": ["a", "' + "\u00e9" * 1001 + '"], "max_new_chars": 1, "temperature": 0}}', 413,
     '{"error":"A `prompt` of 1001 characters is longer than the limit of 1000 (--max_text_chars)."}'),
    ('{"signature_name": "score", "inputs": ["' + "a" * 1001 + '"]}', 413,
     '{"error":"A `text` of 1001 characters is longer than the limit of 1000 (--max_text_chars)."}'),
    ('{"signature_name": "score", "inputs": ["' + "\u00e9" * 1000 + '", "a"]}', 400, "the model was not trained on"),
    # The assertion's own values, and no padding or escapes from TensorFlow's formatting.
    ('{"inputs": {"prompt": ["a"], "max_new_chars": -5, "temperature": 0}}', 400,
     '{"error":"`max_new_chars` must be >= 0 (got -5)"}'),
    ('{"inputs": ["a"]}', 400, "3 inputs"),
    ('{"signature_name": "score", "inputs": []}', 400, "empty batch"),
    ('{"signature_name": "score", "inputs": ["a\u00e9"]}', 400, "every `text` character must be in the vocabulary"),
    # A "]" in the message does not cut it short.
    ('{"signature_name": "score", "inputs": ["a", "[a]"]}', 400,
     "`text`[1] holds characters [ (U+005B), ] (U+005D) the model was not trained on; expected characters of "
     "its vocabulary (the characters of its training text, listed in assets/metadata.json of the export)"),
    ('{"signature_name": "score", "inputs": ["\\ud800"]}', 400, "not valid Unicode"),
    ('{"signature_name": "score", "inputs": ' + "[" * 5000 + "]" * 5000 + "}", 400, "nested too deeply"),
    ('{"inputs": {"prompt": [null], "max_new_chars": 1, "temperature": 0}}', 400, "must hold strings"),
    ('{"inputs": {"prompt": ["a"], "max_new_chars": true, "temperature": 0}}', 400, "got booleans"),
]


@pytest.mark.parametrize("body, status, message", BAD_PREDICTS)
def test_bad_predict_requests_are_4xx_with_a_message(lm_client, body, status, message):
    response = lm_client.post("/v1/models/lm:predict", content=body)
    assert response.status_code == status
    if message.startswith('{"error"'):
        assert response.text == message
    else:
        assert message in response.json()["error"]


def test_urls_and_methods_are_answered_as_tf_serving_does(lm_client):
    # TF Serving's http_rest_api_handler: a path or method its URL patterns do not
    # match is InvalidArgument "Malformed request: METHOD PATH" (HTTP 400), whatever
    # is wrong (a trailing slash, a verb on GET, no verb on POST, an unknown verb,
    # another method); 404 is for models and versions that are not served, and a
    # label that is not configured is InvalidArgument (400).
    malformed = [
        ("GET", "/v1/models/lm/"), ("GET", "/v1/models/lm/metadata/"), ("GET", "/v1/models/lm:predict"),
        ("POST", "/v1/models/lm"), ("POST", "/v1/models/lm/metadata"), ("POST", "/v1/models/lm:foo"),
        ("POST", "/v1/models/lm:predict/"), ("PUT", "/v1/models/lm"), ("DELETE", "/v1/models/lm:predict"),
        ("GET", "/v1/foo"), ("POST", "/v1/models"), ("GET", "/v1/models/lm/versions/1/labels/x"),
    ]
    cases = [(method, url, 400, f"Malformed request: {method} {url}") for method, url in malformed] + [
        ("GET", "/v1/models", 400, "Missing model name in request."),
        ("GET", "/v1/models/lm/versions/99999999999999999999", 400,
         "Failed to convert version: 99999999999999999999 to numeric."),
        ("GET", "/v1/models/lm/versions/x", 400, "Version must be a non-negative integer, got 'x'."),
        ("POST", "/v1/models/lm/labels/stable:predict", 400, "Unrecognized servable version label: stable"),
        ("GET", "/v1/models/lm/labels/stable", 400, "Unrecognized servable version label: stable"),
        ("GET", "/v1/models/lm/labels/stable/metadata", 400, "Unrecognized servable version label: stable"),
        # The status API's own words (get_model_status_impl), the others' ServerCore's.
        ("GET", "/v1/models/other", 404, "Could not find any versions of model other"),
        ("GET", "/v1/models/lm/versions/2", 404, "Could not find version 2 of model lm"),
        ("GET", "/v1/models/other/versions/1", 404, "Could not find version 1 of model other"),
        ("GET", "/v1/models/other/metadata", 404, "Servable not found for request: Latest(other)"),
        ("GET", "/v1/models/lm/versions/2/metadata", 404, "Servable not found for request: Specific(lm, 2)"),
        ("POST", "/v1/models/other:predict", 404, "Servable not found for request: Latest(other)"),
        ("POST", "/v1/models/lm/versions/2:predict", 404, "Servable not found for request: Specific(lm, 2)"),
        ("GET", "/v2/anything", 404, "Not Found"),
    ]
    for method, url, status, message in cases:
        response = lm_client.request(method, url)
        assert response.status_code == status, (method, url)
        assert response.json()["error"].startswith(message), (method, url, response.json())
    assert lm_client.get("/v1/models/lm/versions/1/metadata").json()["model_spec"]["version"] == "1"


def test_classify_and_regress_are_refused_as_tf_serving_refuses_a_predict_signature(lm_client):
    # TF Serving runs :classify and :regress on a signature of that method; these
    # exports' signatures are all tensorflow/serving/predict, so it answers 400.
    body = {"examples": [{"text": "abc"}]}
    for verb, kind in (("classify", "classification"), ("regress", "regression")):
        response = lm_client.post(f"/v1/models/lm:{verb}", json=body)
        assert response.status_code == 400, verb
        assert response.json()["error"].startswith(
            f"Expected {kind} signature method_name to be tensorflow/serving/{verb}. "
            "Was: tensorflow/serving/predict"), response.json()
        response = lm_client.post(f"/v1/models/lm:{verb}", json={**body, "signature_name": "nope"})
        assert response.status_code == 400
        assert response.json()["error"].startswith("No signature was found with the name: nope")
        assert lm_client.post(f"/v1/models/other:{verb}", json=body).json() == {
            "error": "Servable not found for request: Latest(other)"}


def test_unknown_request_fields_are_ignored_as_in_tf_serving(lm_client, lm_saved):
    # json_tensor.cc reads signature_name, instances and inputs and nothing else,
    # so a client may send more (e.g. Vertex AI's "parameters").
    expected = lm_saved.signatures["score"](text=tf.constant(["abc"]))["char_count"].numpy().tolist()
    for extra in ({"parameters": {"x": 1}}, {"model_spec": {"name": "lm"}, "id": 7}):
        for rows in (False, True):
            request = {"signature_name": "score", **extra, **({"instances": ["abc"]} if rows else {"inputs": ["abc"]})}
            response = lm_client.post("/v1/models/lm:predict", json=request)
            assert response.status_code == 200, response.text
            if rows:
                assert [p["char_count"] for p in response.json()["predictions"]] == expected
            else:
                assert response.json()["outputs"]["char_count"] == expected


def test_request_body_limit(lm_client):
    body = json.dumps({"signature_name": "score", "inputs": ["a" * 250_000]})
    response = lm_client.post("/v1/models/lm:predict", content=body)
    assert response.status_code == 413
    assert "limit of 200000 bytes" in response.json()["error"]

    def chunks():  # no Content-Length: the limit still holds
        for _ in range(30):
            yield b" " * 10_000

    response = lm_client.post("/v1/models/lm:predict", content=chunks())
    assert response.status_code == 413


def test_predict_with_a_length_per_row_mismatch_is_400(asr_client):
    waveform = synthetic_utterance(3, 16000, 0.3).tolist()
    for inputs, message in (
        ({"waveform": [waveform], "waveform_length": [len(waveform)] * 3},
         "`waveform_length` has 3 rows but `waveform` has 1: expected one length per waveform row"),
        ({"waveform": [waveform, waveform], "waveform_length": [len(waveform)]},
         "`waveform_length` has 1 row but `waveform` has 2: expected one length per waveform row"),
        ({"features": [[[0.0] * 40] * 5], "feature_length": [5, 5, 5]},
         "`feature_length` has 3 rows but `features` has 1: expected one length per features row"),
    ):
        signature = "from_features" if "features" in inputs else "serving_default"
        response = asr_client.post("/v1/models/asr:predict", json={"signature_name": signature, "inputs": inputs})
        assert response.status_code == 400
        assert response.json() == {"error": message}


def test_json_booleans_among_numbers_are_400_as_in_tf_serving(asr_client):
    # numpy would read [0.5, true] as [0.5, 1.0]; TF Serving's json_tensor refuses a JSON
    # true/false for a float or int tensor ("... is not of expected type: float").
    waveform = [0.0] * 500
    cases = [
        ({"inputs": {"waveform": [[True] + waveform], "waveform_length": [501]}}, "waveform", "DT_FLOAT"),
        ({"inputs": {"waveform": [waveform, waveform[:-1] + [False]], "waveform_length": [500, 500]}},
         "waveform", "DT_FLOAT"),
        ({"inputs": {"waveform": [waveform], "waveform_length": [True]}}, "waveform_length", "DT_INT32"),
        ({"inputs": {"waveform": [waveform] * 2, "waveform_length": [500, True]}}, "waveform_length", "DT_INT32"),
        ({"instances": [{"waveform": waveform, "waveform_length": 500},
                        {"waveform": waveform, "waveform_length": False}]}, "waveform_length", "DT_INT32"),
        ({"signature_name": "from_features",
          "inputs": {"features": [[[0.0] * 39 + [True]] * 5], "feature_length": [5]}}, "features", "DT_FLOAT"),
    ]
    for body, name, dtype in cases:
        response = asr_client.post("/v1/models/asr:predict", json=body)
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert error.startswith(f'Input "{name}" must be a {dtype} of shape'), error
        assert "boolean" in error, error

def test_requests_with_rows_that_disagree_are_never_merged(exports, asr_saved):
    from serving.model_store import Signature
    from serving.server import _batch_key

    signature = Signature("serving_default", asr_saved.signatures["serving_default"])
    waveforms = np.zeros((2, 8000), np.float32)
    one_and_two = {"waveform": waveforms[:1], "waveform_length": np.array([8000, 8000], np.int32)}
    two_and_one = {"waveform": waveforms, "waveform_length": np.array([8000], np.int32)}
    # Concatenated, these two would be three rows of each and pass the export's check.
    assert _batch_key(signature, one_and_two) is None and _batch_key(signature, two_and_one) is None
    assert _batch_key(signature, {"waveform": waveforms, "waveform_length": np.array([8000, 8000], np.int32)})

    app = create_app("asr", os.path.dirname(exports["asr"]), batch_timeout_s=0.05)
    speech = synthetic_utterance(5, 16000, 0.5)
    good = {"waveform": [speech.tolist()], "waveform_length": [len(speech)]}
    bad = [{"waveform": [speech.tolist()], "waveform_length": [len(speech)] * 2},
           {"waveform": [speech.tolist()] * 2, "waveform_length": [len(speech)]}]
    expected = _transcribed_alone(asr_saved, speech)

    responses = _post_concurrently(app, "/v1/models/asr:predict", [{"json": {"inputs": i}} for i in [*bad, good]])
    assert [r.status_code for r in responses] == [400, 400, 200]
    assert "`waveform_length` has 2 rows but `waveform` has 1" in responses[0].json()["error"]
    assert "`waveform_length` has 1 row but `waveform` has 2" in responses[1].json()["error"]
    assert responses[2].json()["outputs"]["text"] == [expected]


def test_a_base_path_without_versions_is_logged_and_waited_on(exports, tmp_path, caplog):
    from serving.model_store import ModelStore

    version_dir = exports["lm"]
    parent = os.path.dirname(version_dir)
    with caplog.at_level("WARNING", logger="serving"):
        store = ModelStore("lm", version_dir, warn_seconds=3600)
        assert store.refresh() is False
        assert store.refresh() is False  # within warn_seconds: logged once
    expected = (
        f"No servable version of model 'lm' under --model_base_path {version_dir}: expected "
        f"{version_dir}/<N>/saved_model.pb with N a number (e.g. {version_dir}/1/saved_model.pb); "
        f"{version_dir} holds saved_model.pb itself: it is a version directory, so serve its parent: "
        f"--model_base_path={parent}. Requests get 404 until a version appears."
    )
    assert [r.getMessage() for r in caplog.records] == [expected]
    caplog.clear()
    store.warn_seconds = 0
    with caplog.at_level("WARNING", logger="serving"):
        store.refresh()
    assert [r.getMessage() for r in caplog.records] == ["still waiting: " + expected]

    # An empty folder is waited on: the version is served once it appears, and the warnings stop.
    base = tmp_path / "lm"
    base.mkdir()
    app = create_app("lm", base, poll_seconds=0.1)
    with caplog.at_level("WARNING", logger="serving"), TestClient(app) as client:
        assert client.get("/v1/models/lm").json() == {"error": "Could not find any versions of model lm"}
        assert f"under --model_base_path {base}: expected {base}/<N>/saved_model.pb with N a number" in caplog.text
        assert "it is empty." in caplog.text
        shutil.copytree(version_dir, base / "3")
        deadline = time.monotonic() + 60
        while client.get("/v1/models/lm").status_code != 200:
            assert time.monotonic() < deadline, "version 3 was not picked up"
            time.sleep(0.1)
        caplog.clear()
        app.state.store.warn_seconds = 0  # a scan with nothing served would warn again at once
        app.state.store.refresh()
        assert "No servable version" not in caplog.text and "still waiting" not in caplog.text


def test_exports_carry_tf_servings_warmup_requests_and_the_server_runs_them(exports, tmp_path, caplog):
    # Each export holds one warmup request per signature in TF Serving's file
    # (assets.extra/tf_serving_warmup_requests, PredictionLog records), which
    # the export itself answers; the server runs them at load, each
    # `warmup_iterations` times, so the first user request finds the
    # signatures prepared.
    from serving.warmup import WARMUP_PATH, read_warmup_requests, replay_warmup_requests

    # The language model's generation signatures take scalars, which TF
    # Serving's batching refuses (their warmup would fail the load there).
    for task, names in (("lm", ["score"]), ("asr", ["serving_default", "from_features"])):
        requests = read_warmup_requests(exports[task])
        assert [name for name, _ in requests] == names, task
        loaded = tf.saved_model.load(exports[task])
        calls = []

        def counting(function):
            return lambda **tensors: calls.append(1) or function(**tensors)

        signatures = {name: counting(function) for name, function in loaded.signatures.items()}
        assert replay_warmup_requests(exports[task], signatures, iterations=3) == len(names)
        assert len(calls) == 3 * len(names), task
    with caplog.at_level("INFO", logger="serving"), TestClient(create_app("asr", os.path.dirname(exports["asr"]),
                                                                          poll_seconds=0)) as client:
        assert client.app.state.store.current.warmup_requests == 2
    assert "warmed up asr version 1: 2 request(s) x 1" in caplog.text
    with TestClient(create_app("asr", os.path.dirname(exports["asr"]), poll_seconds=0,
                               warmup_iterations=0)) as client:
        assert client.app.state.store.current.warmup_requests == 0

    # A version whose warmup fails is not served, as in TF Serving, and the
    # log names the file, the request and why; a version without the file is.
    base = tmp_path / "lm"
    shutil.copytree(exports["lm"], base / "1")
    shutil.copytree(exports["lm"], base / "2")
    from serving.warmup import write_warmup_requests

    write_warmup_requests(base / "2", "lm", [("score", {"text": np.array([b"ab"], object)}),
                                             ("score", {"text": np.array([b"xyz"], object)})])
    os.remove(base / "1" / WARMUP_PATH)
    with pytest.raises(ValueError, match=r"Warmup request for 'serving_default' has scalar inputs "
                                         r"\['max_new_chars', 'temperature'\]"):
        write_warmup_requests(base / "2", "lm", [("serving_default", {
            "prompt": np.array([b"ab"], object), "max_new_chars": np.int32(1), "temperature": np.float32(0)})])
    caplog.clear()
    with caplog.at_level("INFO", logger="serving"), TestClient(create_app("lm", base, poll_seconds=0)) as client:
        statuses = client.get("/v1/models/lm").json()["model_version_status"]
        failed = client.get("/v1/models/lm/versions/2").json()["model_version_status"]
    # As TF Serving's GetModelStatus: newest first, the failed load END with its error.
    assert [(s["version"], s["state"], s["status"]["error_code"]) for s in statuses] == [
        ("2", "END", "INVALID_ARGUMENT"), ("1", "AVAILABLE", "OK")]
    assert failed == statuses[:1]
    message = failed[0]["status"]["error_message"]
    assert message.startswith(f"Warmup request 2 of {base / '2' / WARMUP_PATH} (score) failed: "), message
    # The export's own words, not TensorFlow's "Graph execution error:".
    assert "holds characters x (U+0078), y (U+0079), z (U+007A) the model was not trained on" in message, message
    assert (f"could not load lm version 2 from {base / '2'}: Warmup request 2 of {base / '2' / WARMUP_PATH} "
            "(score) failed: ") in caplog.text
    assert "warmed up lm version 1" not in caplog.text  # it has no warmup file
    with open(base / "2" / WARMUP_PATH, "wb") as f:
        f.write(b"not a tfrecord file at all")
    with pytest.raises(ValueError, match=f"Warmup file {base / '2' / WARMUP_PATH} is not in TFRecord format"):
        read_warmup_requests(base / "2")


def test_a_transcriber_server_warms_its_audio_decoder_before_serving(exports, monkeypatch):
    # The first upload's resampling took over a second (librosa loads its
    # resampler on first use): a transcriber's server resamples a short
    # generated file once when the first version loads; a language model's
    # does not, nor one run without warmup.
    import serving.server

    decoded = []
    real_decode = serving.server._decode_audio

    def recording_decode(data, name, rate, *args):
        decoded.append((name, sf.info(io.BytesIO(data)).samplerate, rate))
        return real_decode(data, name, rate, *args)

    monkeypatch.setattr(serving.server, "_decode_audio", recording_decode)
    for name, warmup_iterations, expected in (("asr", 1, [("warmup.wav", 8000, 16000)]), ("asr", 0, []),
                                              ("lm", 1, [])):
        decoded.clear()
        with TestClient(create_app(name, os.path.dirname(exports[name]), poll_seconds=0,
                                   warmup_iterations=warmup_iterations)):
            assert decoded == expected, (name, warmup_iterations)


def test_command_line_refuses_a_version_directory_as_base_path(exports, capsys, monkeypatch):
    import uvicorn

    from serving.__main__ import main

    def run(*args, **kwargs):
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", run)
    version_dir = exports["lm"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name=lm", f"--model_base_path={version_dir}", "--rest_api_port=1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (f"python -m serving: error: No servable version of model 'lm' under --model_base_path {version_dir}: "
            f"expected {version_dir}/<N>/saved_model.pb with N a number") in err
    assert f"serve its parent: --model_base_path={os.path.dirname(version_dir)}" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name=lm", f"--model_base_path={os.path.dirname(version_dir)}", "--rest_api_port=99999"])
    assert exit_info.value.code == 2
    assert "--rest_api_port must be a port number in 1..65535, got 99999" in capsys.readouterr().err


def test_transcribe_uploads_of_any_rate_and_channels(asr_client, asr_saved):
    def expected(data):
        decoded, rate = sf.read(io.BytesIO(data), dtype="float32")
        waveform = prepare_waveform(decoded, rate, 16000)  # the project's loader
        out = asr_saved.signatures["serving_default"](
            waveform=tf.constant(waveform[None]), waveform_length=tf.constant([len(waveform)]))
        return {"text": out["text"].numpy()[0].decode(), "model_version": "1",
                "duration_seconds": round(len(waveform) / 16000, 3)}

    speech = synthetic_utterance(4, 22050, 1.2)
    stereo = _wav_bytes(np.stack([speech, 0.5 * speech], axis=1), 22050)
    flac = _wav_bytes(speech, 11025, format="FLAC")  # 2.4 s at this rate
    for name, data in (("speech.wav", stereo), ("speech.flac", flac)):
        response = asr_client.post("/v1/models/asr:transcribe", files={"audio": (name, data)})
        assert response.status_code == 200
        assert response.json() == expected(data)
    silence = _wav_bytes(np.zeros(8000, np.float32), 8000)
    response = asr_client.post("/v1/models/asr:transcribe", files={"file": ("s.wav", silence)})
    assert response.status_code == 200 and response.json()["text"] == ""  # silence says nothing


def test_bad_uploads_are_4xx_with_a_message(asr_client, lm_client):
    too_long = _wav_bytes(np.full(8000 * 4, 0.1, np.float32), 8000)
    speech = _wav_bytes(synthetic_utterance(1, 16000, 1.0), 16000)
    cases = [
        # libsndfile's reason without its "Error opening <_io.BytesIO object at ...>" prefix.
        ({"file": ("a.wav", b"RIFF not really a wave file")}, 400,
         "a.wav: unreadable: not a readable audio file (wav, flac, ogg): Format not recognised."),
        ({"file": ("a.wav", b"")}, 400, "0 bytes"),
        ({"file": ("a.wav", _wav_bytes(np.full(100, 0.1, np.float32), 16000))}, 400, "too_short"),
        ({"file": ("a.wav", too_long)}, 413, "a.wav: too_long: 4.0 s is longer than --max_audio_seconds=3"),
        ({"file": ("a.wav", too_long), "other": ("b.wav", too_long)}, 400, "exactly one"),
        # Two files under one field name: neither is dropped in silence.
        ([("file", ("a.wav", speech)), ("file", ("b.wav", speech))], 400, "exactly one uploaded audio file "
         "in the form, got 2"),
        # Cut short, as in training: the data chunk is shorter than its header says.
        ({"file": ("cut.wav", speech[: len(speech) // 2])}, 400, "cut.wav: truncated: WAV data chunk is"),
        ({"file": ("nan.wav", _wav_bytes(np.full(8000, np.nan, np.float32), 8000, "FLOAT"))}, 400,
         "nan.wav: unreadable: samples contain NaN or infinity"),
        ({}, 400, "exactly one uploaded audio file"),
    ]
    for files, status, message in cases:
        response = asr_client.post("/v1/models/asr:transcribe", files=files or None,
                                   data=None if files else {"x": "1"})
        assert response.status_code == status, message
        assert message in response.json()["error"], response.json()
    response = asr_client.post("/v1/models/asr:transcribe", content=b"{}",
                               headers={"content-type": "multipart/form-data; boundary=zz"})
    assert response.status_code == 400
    response = asr_client.post("/v1/models/asr:predict",
                               json={"inputs": {"waveform": [[0.1] * 800], "waveform_length": [900]}})
    assert response.status_code == 400
    assert response.json()["error"] == "`waveform_length` must not exceed the waveform's padded length (got 900 against 800)"
    samples = ", ".join(["0.1"] * 400 + ["NaN"] + ["0.1"] * 399)  # TF Serving's JSON allows NaN
    nan_waveform = '{"inputs": {"waveform": [[' + samples + ']], "waveform_length": [800]}}'
    response = asr_client.post("/v1/models/asr:predict", content=nan_waveform)
    assert response.status_code == 400
    assert "every `waveform` sample must be finite (no NaN or infinity); row 0 is not" in response.json()["error"]
    long_waveform = {"inputs": {"waveform": [[0.0] * 64_000], "waveform_length": [64_000]}}
    response = asr_client.post("/v1/models/asr:predict", json=long_waveform)
    assert response.status_code == 413 and "limit of 3 s" in response.json()["error"]
    response = lm_client.post("/v1/models/lm:transcribe", files={"file": ("a.wav", too_long)})
    assert response.status_code == 400 and "needs a transcription export" in response.json()["error"]


def test_batcher_groups_concurrent_requests_and_propagates_errors():
    sizes = []

    def run_batch(items):
        sizes.append(len(items))
        time.sleep(0.05)
        if "bad" in items:
            raise ValueError("bad item")
        return [item * 2 for item in items]

    async def main():
        batcher = Batcher(run_batch, max_batch_size=8, timeout_s=0.01, max_concurrent_batches=1)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        failed = await asyncio.gather(batcher.submit("bad"), return_exceptions=True)

        batcher.close()
        await asyncio.sleep(0.01)
        closed = not batcher.running
        reopened = await batcher.submit(5)  # a late request still gets served
        return results, failed, closed, reopened

    results, failed, closed, reopened = asyncio.run(main())
    assert closed and reopened == 10
    assert results == [2 * i for i in range(20)]
    assert sum(sizes[:-2]) == 20 and max(sizes) <= 8 and len(sizes) - 2 <= 4  # then "bad", 5
    assert isinstance(failed[0], ValueError)


def test_requests_queued_behind_a_close_are_still_run_and_the_batcher_stops():
    # A new version replaces the old one (close()) while the old batcher's
    # collector waits for a free slot; a request that got the old version just
    # before is queued behind the close and must be answered, not left waiting.
    def run_batch(items):
        time.sleep(0.2)
        return [item * 2 for item in items]

    async def main():
        batcher = Batcher(run_batch, max_batch_size=8, max_concurrent_batches=1)
        first = asyncio.ensure_future(batcher.submit(1))  # holds the only slot
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(batcher.submit(2))  # the collector waits for the slot with it
        await asyncio.sleep(0.01)
        batcher.close()
        await asyncio.sleep(0.01)
        third = asyncio.ensure_future(batcher.submit(3))  # queued behind the close
        results = await asyncio.wait_for(asyncio.gather(first, second, third), 10)
        await asyncio.sleep(0.01)
        stopped = not batcher.running
        late = await asyncio.wait_for(batcher.submit(4), 10)  # after the collector stopped
        await asyncio.sleep(0.01)
        # It is run, and the collector it started stops again: left running,
        # it would hold the replaced version's model for good.
        return results, stopped, late, batcher.running

    results, stopped, late, running = asyncio.run(main())
    assert results == [2, 4, 6] and late == 8
    assert stopped and not running


@pytest.mark.parametrize("body, message", [
    ("max_batch_size { value: 16 }\nallowed_batch_sizes: 8\n", "allowed_batch_sizes is not implemented"),
    ("enable_large_batch_splitting: true\n", "enable_large_batch_splitting is not implemented"),
    ("max_execution_batch_size { value: 8 }\n", "max_execution_batch_size is not implemented"),
    ("max_batch_size { value: 0 }\n", "max_batch_size { value: 0 }; expected a value of at least 1"),
    ("num_batch_threads { value: -1 }\n", "num_batch_threads { value: -1 }; expected a value of at least 1"),
    ("max_batch_size: 16\n", "is not a text-format BatchingParameters this server reads"),
    ("low_priority_max_batch_size { value: 1 }\n", 'has no field named "low_priority_max_batch_size"'),
])
def test_batching_parameters_this_server_cannot_honour_are_refused(tmp_path, body, message):
    from serving.batching_config import BatchingConfigError, read_batching_parameters

    _assert_config_file_refused(tmp_path / "batching.config", body, read_batching_parameters, BatchingConfigError,
                                "--batching_parameters_file", message)


def _assert_config_file_refused(path, body, read, error_class, flag, message):
    """`read(path)` of a file holding `body` raises `error_class` naming `flag`, the file and `message`."""
    path.write_text(body)
    with pytest.raises(error_class) as error:
        read(path)
    assert str(error.value).startswith(f"{flag} {path}") and message in str(error.value), str(error.value)


def test_a_full_batch_queue_refuses_requests_with_503(exports, monkeypatch):
    # TF Serving answers UNAVAILABLE (503) when max_enqueued_batches batches
    # already wait; the batcher refuses a request finding that many
    # batches' worth of requests queued, and runs the others.
    async def main():
        batcher = Batcher(lambda items: [time.sleep(0.3) or item for item in items], max_batch_size=1,
                          max_concurrent_batches=1, max_queued=2)
        running = asyncio.ensure_future(batcher.submit(0))  # taken by the collector
        await asyncio.sleep(0.05)
        # 1 waits with the collector for the slot; 2 and 3 fill the queue; 4 is refused.
        waiting = [asyncio.ensure_future(batcher.submit(1))]
        await asyncio.sleep(0.05)
        waiting += [asyncio.ensure_future(batcher.submit(item)) for item in (2, 3)]
        await asyncio.sleep(0.05)
        refused = await asyncio.gather(batcher.submit(4), return_exceptions=True)
        return await asyncio.gather(running, *waiting), refused[0]

    results, refused = asyncio.run(main())
    assert results == [0, 1, 2, 3]
    assert isinstance(refused, QueueFull) and "queue to which this task was submitted is full" in str(refused)

    # The server answers QueueFull with TF Serving's 503 and its JSON error,
    # and gives each of its batchers the limit: max_enqueued_batches batches.
    limits = []
    real_init = Batcher.__init__

    def recording_init(self, run_batch, **kwargs):
        limits.append((kwargs["max_queued"], kwargs["max_concurrent_batches"]))
        real_init(self, run_batch, **kwargs)

    async def full(self, item):
        raise QueueFull("The batch scheduling queue to which this task was submitted is full (8 requests waiting; "
                        "max_enqueued_batches).")

    monkeypatch.setattr(Batcher, "__init__", recording_init)
    monkeypatch.setattr(Batcher, "submit", full)
    app = create_app("lm", os.path.dirname(exports["lm"]), poll_seconds=0, max_batch_size=4,
                     max_concurrent_batches=3, max_enqueued_batches=2)
    with TestClient(app) as client:
        response = client.post("/v1/models/lm:predict", json={"signature_name": "score", "inputs": ["abc"]})
    assert response.status_code == 503 and limits == [(8, 3)]
    assert response.json()["error"].startswith("The batch scheduling queue to which this task was submitted is full")


def test_requests_whose_callers_gave_up_are_never_run():
    # A request past its deadline stops waiting (its task is cancelled): if it
    # is still queued, its item must not take a place in a model call.
    ran = []

    def run_batch(items):
        ran.extend(items)
        time.sleep(0.2)
        return [item * 2 for item in items]

    async def main():
        batcher = Batcher(run_batch, max_batch_size=8, max_concurrent_batches=1)
        first = asyncio.ensure_future(batcher.submit(1))  # runs, holding the only slot
        await asyncio.sleep(0.05)
        # 2 is taken by the collector, which waits for the slot; 4 stays queued.
        waiting = [asyncio.ensure_future(batcher.submit(item)) for item in (2, 3, 4)]
        await asyncio.sleep(0.01)
        waiting[0].cancel()
        waiting[2].cancel()
        results = await asyncio.wait_for(asyncio.gather(first, waiting[1]), 10)
        return results, waiting[0].cancelled() and waiting[2].cancelled()

    results, cancelled = asyncio.run(main())
    assert results == [2, 6] and cancelled
    assert ran == [1, 3]


@pytest.mark.parametrize("max_batch_size", [32, 1])
def test_a_request_past_its_deadline_is_504_and_the_server_goes_on(exports, asr_saved, monkeypatch, max_batch_size):
    # TF Serving runs a request's model call with RunOptions.timeout_in_ms
    # (--rest_api_timeout_in_ms, 30 s by default) and answers DEADLINE_EXCEEDED
    # with 504; batched (the Batcher) or not, this server answers at the
    # deadline, without waiting for the slow call, and serves the next request.
    import serving.server

    real_call = serving.server._call
    slow = [True]
    ended = threading.Event()

    def slow_call(signature, arrays):
        outputs = real_call(signature, arrays)  # (the first call of a signature is slower)
        if slow[0]:
            time.sleep(1.5)
        ended.set()
        return outputs

    monkeypatch.setattr(serving.server, "_call", slow_call)
    waveform = synthetic_utterance(3, 16000, 0.4)
    app = create_app("asr", os.path.dirname(exports["asr"]), poll_seconds=3600,
                     max_batch_size=max_batch_size, rest_api_timeout_s=0.25)
    predict = {"inputs": {"waveform": [waveform.tolist()], "waveform_length": [len(waveform)]}}
    with TestClient(app) as client:
        for path, request in (("/v1/models/asr:predict", {"json": predict}),
                              ("/v1/models/asr:transcribe", _upload(waveform))):
            slow[0] = True
            ended.clear()
            started = time.monotonic()
            response = client.post(path, **request)
            waited = time.monotonic() - started
            assert response.status_code == 504, (path, response.text)
            assert response.json() == {"error": "Deadline exceeded: the request took longer than 250 ms "
                                                "(--rest_api_timeout_in_ms)."}
            assert waited < 1.2, (path, waited)
            slow[0] = False
            assert ended.wait(60)  # the abandoned call ends in its thread
            response = client.post(path, **request)
            assert response.status_code == 200, (path, response.text)
    assert response.json()["text"] == _transcribed_alone(asr_saved, waveform)


def test_concurrent_transcriptions_are_batched_and_correct(exports, asr_saved):
    # The batch closes once all six are queued (however slowly a loaded
    # machine decodes the uploads), never on the timeout.
    app = create_app("asr", os.path.dirname(exports["asr"]), max_batch_size=6, batch_timeout_s=60)
    waveforms = [synthetic_utterance(20 + i, 16000, 0.3 + 0.1 * i) for i in range(6)]
    expected = [_transcribed_alone(asr_saved, w) for w in waveforms]

    responses = _post_concurrently(app, "/v1/models/asr:transcribe", [_upload(w) for w in waveforms])
    batcher = app.state.store.current.extras["batcher"]
    assert [r.status_code for r in responses] == [200] * 6
    assert [r.json()["text"] for r in responses] == expected
    assert batcher.items_run == 6 and batcher.batches_run == 1  # one call for all six


def test_a_failed_merged_transcription_is_run_again_alone(exports, asr_saved, monkeypatch):
    # A merged :transcribe call that fails (here: a model call holding the
    # marked upload, as an out-of-memory batch would) is run again upload by
    # upload, so only the marked upload fails and the others are transcribed.
    import serving.server

    marker = np.float32(0.4375)
    waveforms = [synthetic_utterance(40 + i, 16000, 0.3 + 0.1 * i) for i in range(5)]
    assert not any(np.any(w == marker) for w in waveforms)
    poisoned = waveforms[2].copy()
    poisoned[100] = marker
    expected = [_transcribed_alone(asr_saved, w) for w in waveforms]
    calls = []
    real_call = serving.server._call

    def failing_call(signature, arrays):
        calls.append(arrays["waveform"].shape[0])
        if np.any(arrays["waveform"] == marker):
            raise tf.errors.InvalidArgumentError(None, None, "the marked upload")
        return real_call(signature, arrays)

    monkeypatch.setattr(serving.server, "_call", failing_call)
    app = create_app("asr", os.path.dirname(exports["asr"]), max_batch_size=5, batch_timeout_s=60)
    uploads = [*waveforms[:2], poisoned, *waveforms[3:]]

    responses = _post_concurrently(app, "/v1/models/asr:transcribe", [_upload(w) for w in uploads])
    assert calls == [5, 1, 1, 1, 1, 1]  # the merged call failed, then each upload ran alone
    for index, response in enumerate(responses):
        if index == 2:
            assert response.status_code == 400 and "the marked upload" in response.json()["error"]
        else:
            assert response.status_code == 200 and response.json()["text"] == expected[index]


def test_concurrent_predicts_are_merged_and_a_bad_one_fails_alone(exports, lm_saved):
    app = create_app("lm", os.path.dirname(exports["lm"]), max_batch_size=6, batch_timeout_s=60)
    prompts = ["abc", "k", "hij", "", "ga", "ab\nc"]
    expected = {p: lm_saved.signatures["serving_default"](
        prompt=tf.constant([p]), max_new_chars=tf.constant(9), temperature=tf.constant(0.0)
    )["text"].numpy()[0].decode() for p in prompts if p}

    responses = _post_concurrently(app, "/v1/models/lm:predict", [
        {"json": {"inputs": {"prompt": [p], "max_new_chars": 9, "temperature": 0.0}}} for p in prompts])
    batchers = app.state.store.current.extras["predict_batchers"]
    for prompt, response in zip(prompts, responses):
        if prompt:
            assert response.status_code == 200 and response.json() == {"outputs": [expected[prompt]]}
        else:
            assert response.status_code == 400 and "at least one character" in response.json()["error"]
    (batcher,) = batchers.values()
    assert batcher.items_run == 6 and batcher.batches_run == 1


def test_seeded_generation_repeats_and_is_never_merged(exports, lm_saved):
    # generate_seeded samples a request's rows as one batch: merged with other
    # requests, its rows would get other random numbers than the seed promises.
    app = create_app("lm", os.path.dirname(exports["lm"]), batch_timeout_s=0.05)
    requests = [{"signature_name": "generate_seeded", "inputs": {
        "prompt": ["ab", "ab"], "max_new_chars": 15, "temperature": 1.0, "seed": seed}} for seed in (4, 4, 4, 9)]
    alone = [t.decode() for t in lm_saved.signatures["generate_seeded"](
        prompt=tf.constant(["ab", "ab"]), max_new_chars=tf.constant(15), temperature=tf.constant(1.0),
        seed=tf.constant(4, tf.int64))["text"].numpy()]

    responses = _post_concurrently(app, "/v1/models/lm:predict", [{"json": r} for r in requests])
    batchers = app.state.store.current.extras.get("predict_batchers", {})
    outputs = [response.json()["outputs"] for response in responses]
    assert outputs[0] == outputs[1] == outputs[2] == alone
    assert alone[0] != alone[1] and outputs[3] != alone
    assert batchers == {}


def test_model_errors_are_json_with_tf_servings_status_codes(exports, monkeypatch):
    # http_server.cc maps every error code to an HTTP status and always answers
    # {"error": ...}; a client reading response.json()["error"] must not get a
    # text/plain "Internal Server Error" instead.
    import serving.server

    errors = [
        (tf.errors.InternalError(None, None, "kernel broke"), 500),
        (tf.errors.UnimplementedError(None, None, "no kernel"), 501),
        (tf.errors.ResourceExhaustedError(None, None, "OOM when allocating"), 429),
        (tf.errors.FailedPreconditionError(None, None, "not initialized"), 400),
        (tf.errors.DeadlineExceededError(None, None, "too slow"), 504),
        (tf.errors.UnavailableError(None, None, "later"), 503),
        (RuntimeError("a bug"), 500),
    ]
    raised = []

    def failing_call(signature, arrays):
        raise raised[-1]

    monkeypatch.setattr(serving.server, "_call", failing_call)
    app = create_app("lm", os.path.dirname(exports["lm"]), poll_seconds=3600)
    with TestClient(app, raise_server_exceptions=False) as client:
        for error, status in errors:
            raised.append(error)
            response = client.post("/v1/models/lm:predict", json={"signature_name": "score", "inputs": ["abc"]})
            assert response.status_code == status, error
            assert response.headers["content-type"] == "application/json", error
            message = response.json()["error"]
            assert (error.message if isinstance(error, tf.errors.OpError) else str(error)) in message, message


def test_cors_headers_are_tf_servings_with_the_flag(exports):
    # --rest_api_enable_cors_support: TF Serving's three headers on every
    # answer (errors too, even the body limit's 413), and a 200 to a browser's
    # preflight, which fails on any other status. Without it: no headers, and
    # OPTIONS is a malformed request (400), as in TF Serving.
    base = os.path.dirname(exports["lm"])
    with TestClient(create_app("lm", base, poll_seconds=3600)) as client:
        plain = client.get("/v1/models/lm")
        assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
        assert client.options("/v1/models/lm:predict").status_code == 400
    with TestClient(create_app("lm", base, poll_seconds=3600, max_request_bytes=1000, cors=True)) as client:
        responses = [
            client.get("/v1/models/lm"),
            client.post("/v1/models/lm:predict", json={"signature_name": "score", "inputs": ["abc"]}),
            client.get("/v1/models/nosuch"),
            client.post("/v1/models/lm:predict", content=b"x" * 2000),
            client.options("/v1/models/lm:predict", headers={
                "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type"}),
        ]
    assert [response.status_code for response in responses] == [200, 200, 404, 413, 200]
    for response in responses:
        assert response.headers["access-control-allow-origin"] == "*", response
        assert response.headers["access-control-allow-methods"] == "POST, GET", response
        assert response.headers["access-control-allow-headers"] == "Content-Type", response
        assert response.headers.get_list("access-control-allow-origin") == ["*"], response


def test_poll_wait_zero_scans_once_as_in_tf_serving(exports, tmp_path):
    # tensorflow_model_server --file_system_poll_wait_seconds=0 polls once (and a
    # negative value never); a 0 s wait between scans would scan without pause.
    from serving.model_store import ModelStore

    base = tmp_path / "lm"
    shutil.copytree(exports["lm"], base / "1")
    for seconds in (0, -1):
        store = ModelStore("lm", base, poll_seconds=seconds)
        scans = []
        store.refresh = lambda: scans.append(1)
        store.start()
        time.sleep(0.3)
        store.stop()
        assert scans == [], seconds
    app = create_app("lm", base, poll_seconds=0)
    with TestClient(app) as client:  # the one scan at start serves version 1
        assert client.get("/v1/models/lm").json()["model_version_status"][0]["version"] == "1"
        shutil.copytree(exports["lm"], base / "2")
        time.sleep(0.3)
        assert client.get("/v1/models/lm").json()["model_version_status"][0]["version"] == "1"


def test_command_line_takes_tf_servings_deployment_flags(exports, capsys, monkeypatch, tmp_path):
    # The flags of TF Serving's Docker entrypoint (--port, --rest_api_port,
    # --model_name, --model_base_path) start this server; --enable_batching is
    # accepted; its flags this server does not implement are refused, named.
    import uvicorn

    import serving.server
    from serving.__main__ import main

    started = {}
    real_create_app = serving.server.create_app

    def create_app_spy(*args, **kwargs):
        started["create_app"] = (args, kwargs)
        return real_create_app(*args, **kwargs)

    monkeypatch.setattr(serving.server, "create_app", create_app_spy)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.setdefault("run", kwargs))
    base = os.path.dirname(exports["lm"])
    entrypoint = ["--port=8500", "--rest_api_port=8501", "--model_name=lm", f"--model_base_path={base}"]
    assert main(entrypoint) == 0
    assert started["run"]["port"] == 8501
    assert "--port=8500 is tensorflow_model_server's gRPC port; this server has no gRPC API" in capsys.readouterr().err
    for flag, batch_size in (("--enable_batching", 32), ("--enable_batching=true", 32), ("--enable_batching=false", 1)):
        started.clear()
        assert main([*entrypoint[1:], flag]) == 0
        assert started["create_app"][1]["max_batch_size"] == batch_size, flag
    for flags, cors in (([], False), (["--rest_api_enable_cors_support"], True),
                        (["--rest_api_enable_cors_support=false"], False)):
        started.clear()
        assert main([*entrypoint[1:], *flags]) == 0
        assert started["create_app"][1]["cors"] is cors, flags
    for flags, iterations in (([], 1), (["--enable_model_warmup=false"], 0), (["--enable_model_warmup"], 1),
                              (["--num_request_iterations_for_warmup=3"], 3),
                              (["--num_request_iterations_for_warmup=0"], 1)):
        started.clear()
        assert main([*entrypoint[1:], *flags]) == 0
        assert started["create_app"][1]["warmup_iterations"] == iterations, flags
    # TensorFlow's thread pools, as tensorflow_model_server sets them (set here
    # before any op runs; this test process's are long set, so recorded).
    pools = []
    monkeypatch.setattr(tf.config.threading, "set_intra_op_parallelism_threads", lambda n: pools.append(("intra", n)))
    monkeypatch.setattr(tf.config.threading, "set_inter_op_parallelism_threads", lambda n: pools.append(("inter", n)))
    for flags, expected in (([], []), (["--tensorflow_session_parallelism=2"], [("intra", 2), ("inter", 2)]),
                            (["--tensorflow_intra_op_parallelism=1"], [("intra", 1)]),
                            (["--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=3"],
                             [("intra", 1), ("inter", 3)])):
        pools.clear()
        assert main([*entrypoint[1:], *flags]) == 0
        assert pools == expected, flags
    with pytest.raises(SystemExit):
        main([*entrypoint[1:], "--tensorflow_session_parallelism=2", "--tensorflow_intra_op_parallelism=1"])
    assert "you cannot configure all" in capsys.readouterr().err
    # --batching_parameters_file: TF Serving's BatchingParameters set the batcher.
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"
                        "max_enqueued_batches { value: 4 }\nnum_batch_threads { value: 3 }\n"
                        'thread_pool_name { value: "batch_threads" }\npad_variable_length_inputs: true\n')
    started.clear()
    assert main([*entrypoint[1:], "--enable_batching", f"--batching_parameters_file={batching}"]) == 0
    assert {key: started["create_app"][1][key] for key in (
        "max_batch_size", "batch_timeout_s", "max_concurrent_batches", "max_enqueued_batches")} == {
        "max_batch_size": 16, "batch_timeout_s": 0.002, "max_concurrent_batches": 3, "max_enqueued_batches": 4}
    started.clear()
    assert main([*entrypoint[1:], "--enable_batching=false", f"--batching_parameters_file={batching}"]) == 0
    assert started["create_app"][1]["max_batch_size"] == 1
    assert "ignored: --enable_batching=false turns batching off" in capsys.readouterr().err
    for flags, message in (
        ([f"--batching_parameters_file={batching}", "--max_batch_size=8"],
         "--max_batch_size with --batching_parameters_file: set the batching in one place"),
    ):
        with pytest.raises(SystemExit):
            main([*entrypoint[1:], *flags])
        assert message in capsys.readouterr().err, flags
    # --rest_api_timeout_in_ms as tensorflow_model_server's: 30 s by default, none at 0.
    for flags, seconds in (([], 30.0), (["--rest_api_timeout_in_ms=5000"], 5.0),
                           (["--rest_api_timeout_in_ms", "0"], None)):
        started.clear()
        assert main([*entrypoint[1:], *flags]) == 0
        assert started["create_app"][1]["rest_api_timeout_s"] == seconds, flags
    for flag, reason in (
        ("--model_config_file=/models/models.config", "/models/models.config: cannot be read (No such file"),
        ("--model_config_file_poll_wait_seconds=60", "reads --model_config_file once at start"),
        ("--batching_parameters_file=/b.txt", "--batching_parameters_file /b.txt: cannot be read"),
        ("--enable_batching=maybe", "true or false"),
        ("--monitoring_config_file=/m.txt", "flag that this server does not implement: no Prometheus metrics"),
    ):
        started.clear()
        with pytest.raises(SystemExit) as exit_info:
            main([*entrypoint[1:], flag])
        assert exit_info.value.code == 2 and not started, flag
        err = capsys.readouterr().err
        assert "python -m serving: error: " in err and flag.split("=")[0] in err and reason in err, err


def test_a_model_config_file_serves_several_models(exports, tmp_path, capsys, monkeypatch):
    # tensorflow_model_server --model_config_file: a text ModelServerConfig
    # listing models; each is served under its own name, as by the
    # single-model flags, which it makes ignored (a warning says so).
    import uvicorn

    import serving.server
    from serving.__main__ import main

    config = tmp_path / "models.config"
    config.write_text(f"""model_config_list {{
      config {{ name: "speech" base_path: "{os.path.dirname(exports['asr'])}" model_platform: "tensorflow" }}
      config {{ name: "text" base_path: "{os.path.dirname(exports['lm'])}" }}
    }}""")
    started = {}
    monkeypatch.setattr(serving.server, "create_app", lambda *a, **k: started.setdefault("kwargs", k))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    assert main([f"--model_config_file={config}", "--model_name=x", "--rest_api_port=8501"]) == 0
    assert started["kwargs"]["models"] == {"speech": os.path.dirname(exports["asr"]),
                                           "text": os.path.dirname(exports["lm"])}
    assert "--model_name ignored: the models are those of --model_config_file" in capsys.readouterr().err
    missing = tmp_path / "missing.config"
    missing.write_text('model_config_list { config { name: "a" base_path: "/no/such/dir" } }')
    for argv, message in (([f"--model_config_file={missing}"],
                           f"base_path /no/such/dir of model 'a' in --model_config_file {missing} is not a directory"),
                          ([f"--model_base_path={tmp_path}"], "the following arguments are required: --model_name "
                                                              "(or --model_config_file for several models)")):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err, argv

    app = create_app(models=started["kwargs"]["models"], poll_seconds=0)
    waveform = synthetic_utterance(5, 16000, 0.5)
    with TestClient(app) as client:
        for name in ("speech", "text"):
            assert client.get(f"/v1/models/{name}").json()["model_version_status"][0]["state"] == "AVAILABLE"
            assert client.get(f"/v1/models/{name}/metadata").json()["model_spec"]["name"] == name
        speech = client.post("/v1/models/speech:transcribe", **_upload(waveform))
        text = client.post("/v1/models/text:predict", json={"signature_name": "score", "inputs": ["abc"]})
        refused = client.post("/v1/models/text:transcribe", **_upload(waveform))
        unknown = client.get("/v1/models/transcriber")
    assert speech.status_code == 200 and text.status_code == 200, (speech.text, text.text)
    assert set(text.json()["outputs"]) == {"nll", "char_count"}
    assert refused.status_code == 400 and "Model text version 1 is a 'language_model' model" in refused.json()["error"]
    assert unknown.status_code == 404 and unknown.json() == {"error": "Could not find any versions of model transcriber"}


@pytest.mark.parametrize("body, message", [
    ('model_config_list { config { name: "a" base_path: "B" model_version_policy { all {} } } }',
     "config 1 (a): model_version_policy all; this server serves the highest version only"),
    ('model_config_list { config { name: "a" base_path: "B" model_version_policy { latest { num_versions: 2 } } } }',
     "config 1 (a): model_version_policy latest { num_versions: 2 }"),
    ('model_config_list { config { name: "a" base_path: "B" version_labels { key: "stable" value: 1 } } }',
     "config 1 (a): version_labels {'stable': 1}; this server has no version labels"),
    ('model_config_list { config { name: "a" base_path: "B" } config { name: "a" base_path: "C" } }',
     "config 2 (a): the name 'a' is used twice"),
    ('model_config_list { config { name: "a" base_path: "B" model_platform: "tflite" } }',
     "config 1 (a): model_platform 'tflite'; this server serves TensorFlow SavedModels only"),
    ('model_config_list { config { base_path: "B" } }', "config 1: `name` is empty"),
    ('model_config_list { config { name: "a" } }', "config 1 (a): `base_path` is empty"),
    ("model_config_list { }", "lists no model"),
    ("model_config_list { config { name: 'a' base_path: 'B' }", "is not a text-format ModelServerConfig"),
])
def test_model_config_files_this_server_cannot_honour_are_refused(tmp_path, body, message):
    from serving.model_config import ModelConfigError, read_model_config

    _assert_config_file_refused(tmp_path / "models.config", body, read_model_config, ModelConfigError,
                                "--model_config_file", message)


def test_new_versions_are_picked_up_without_restart(exports, tmp_path):
    base = tmp_path / "lm"
    shutil.copytree(exports["lm"], base / "1")
    app = create_app("lm", base, poll_seconds=0.1)
    with TestClient(app) as client:
        assert client.get("/v1/models/lm").json()["model_version_status"][0]["version"] == "1"
        client.post("/v1/models/lm:predict", json={"signature_name": "score", "inputs": ["abc"]})
        first = app.state.store.current
        (old_batcher,) = first.extras["predict_batchers"].values()
        assert old_batcher.running
        shutil.copytree(exports["lm"], base / ".staging")
        os.rename(base / ".staging", base / "2")  # what serving.export does
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = client.get("/v1/models/lm").json()
            if status["model_version_status"][0]["version"] == "2":
                break
            time.sleep(0.1)
        assert status["model_version_status"][0]["version"] == "2"
        assert client.get("/v1/models/lm/versions/1").status_code == 404
        deadline = time.monotonic() + 60
        while old_batcher.running and time.monotonic() < deadline:  # stopped, so version 1 can be freed
            time.sleep(0.05)
        assert not old_batcher.running
        response = client.post("/v1/models/lm/versions/2:predict",
                               json={"signature_name": "score", "inputs": ["abc"]})
        assert response.status_code == 200
        os.makedirs(base / "3")  # incomplete (no saved_model.pb): ignored
        assert app.state.store.refresh() is False
        assert client.get("/v1/models/lm").json()["model_version_status"][0]["version"] == "2"


def test_removing_the_served_version_rolls_back_to_the_highest_remaining(exports, tmp_path, caplog):
    # TF Serving's latest policy: the served version is the highest one on
    # disk, so deleting a bad version serves the previous one again, and
    # deleting every version serves none.
    base = tmp_path / "lm"
    shutil.copytree(exports["lm"], base / "1")
    shutil.copytree(exports["lm"], base / "2")
    app = create_app("lm", base, poll_seconds=3600)
    with TestClient(app) as client:
        assert client.get("/v1/models/lm").json()["model_version_status"][0]["version"] == "2"
        client.post("/v1/models/lm:predict", json={"signature_name": "score", "inputs": ["abc"]})
        (old_batcher,) = app.state.store.current.extras["predict_batchers"].values()
        shutil.rmtree(base / "2")
        assert app.state.store.refresh() is True
        assert client.get("/v1/models/lm").json()["model_version_status"][0]["version"] == "1"
        assert client.get("/v1/models/lm/versions/2").json() == {
            "error": "Could not find version 2 of model lm"}
        response = client.post("/v1/models/lm/versions/1:predict", json={"signature_name": "score", "inputs": ["abc"]})
        assert response.status_code == 200 and response.json()["outputs"]["char_count"] == [2]
        deadline = time.monotonic() + 60
        while old_batcher.running and time.monotonic() < deadline:  # version 2 can be freed
            time.sleep(0.05)
        assert not old_batcher.running
        shutil.rmtree(base / "1")
        with caplog.at_level("WARNING", logger="serving"):
            assert app.state.store.refresh() is False
        assert f"version 1 of lm was removed from {base} and no other version could be loaded; nothing is served" \
            in caplog.text
        assert client.get("/v1/models/lm").json() == {"error": "Could not find any versions of model lm"}
        shutil.copytree(exports["lm"], base / "1")  # and a version that appears again is served
        assert app.state.store.refresh() is True
        assert client.get("/v1/models/lm").json()["model_version_status"][0]["version"] == "1"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_process_on_localhost(exports, asr_saved):
    port = _free_port()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model_name=asr",
         f"--model_base_path={os.path.dirname(exports['asr'])}", f"--rest_api_port={port}"],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/asr"
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stderr.read()[-3000:]
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.5)
        assert httpx.get(url).json()["model_version_status"][0]["state"] == "AVAILABLE"
        speech = synthetic_utterance(9, 16000, 0.8)
        expected = _transcribed_alone(asr_saved, speech)
        response = httpx.post(url + ":transcribe", timeout=60, **_upload(speech))
        assert response.json()["text"] == expected
        response = httpx.post(url + ":predict", timeout=60, json={
            "signature_name": "serving_default",
            "inputs": {"waveform": [speech.tolist()], "waveform_length": [len(speech)]}})
        assert response.json()["outputs"]["text"] == [expected]
        assert httpx.post(url + ":predict", content=b"{").status_code == 400
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

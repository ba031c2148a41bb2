"""The local model server: TF Serving's REST API on FastAPI, plus `:transcribe`."""

import contextlib
import io
import logging
import re

import anyio
import anyio.to_thread
import numpy as np
import soundfile as sf
import tensorflow as tf
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.audio_loading import TOO_LONG, AudioError, load_audio
from serving.batcher import Batcher, QueueFull
from serving.model_store import ModelStore, NotFoundError
from serving.op_errors import op_error_message
from serving.warmup import warmup_waveform
from serving.rest_json import RequestError, dumps, format_predict_response, parse_json_body, parse_predict_request

logger = logging.getLogger("serving")

# TF Serving's URL patterns (http_rest_api_util.cc), after "/v1/models/": a
# version or a label, then `/metadata` (GET) or `:verb` (POST). Versions that
# are not numbers get a message of their own.
_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[^/:]+))?$"
)
_VERBS = ("predict", "classify", "regress", "transcribe")
_MAX_VERSION = 2**63 - 1  # an int64, as TF Serving parses it

# TF Serving's HTTP status for each TensorFlow error code (http_server.cc).
_HTTP_STATUS = {
    tf.errors.CANCELLED: 499, tf.errors.UNKNOWN: 500, tf.errors.INVALID_ARGUMENT: 400,
    tf.errors.DEADLINE_EXCEEDED: 504, tf.errors.NOT_FOUND: 404, tf.errors.ALREADY_EXISTS: 409,
    tf.errors.PERMISSION_DENIED: 403, tf.errors.RESOURCE_EXHAUSTED: 429,
    tf.errors.FAILED_PRECONDITION: 400, tf.errors.ABORTED: 409, tf.errors.OUT_OF_RANGE: 400,
    tf.errors.UNIMPLEMENTED: 501, tf.errors.INTERNAL: 500, tf.errors.UNAVAILABLE: 503,
    tf.errors.DATA_LOSS: 500, tf.errors.UNAUTHENTICATED: 401,
}


class JSONResponse(Response):
    """JSON that may hold NaN/Infinity tokens, as TF Serving's responses may."""

    media_type = "application/json"

    def render(self, content):
        return dumps(content).encode("utf-8")


class _DeadlineExceeded(Exception):
    """A request ran past `rest_api_timeout_s` (answered 504)."""


def _error(status, message):
    return JSONResponse({"error": message}, status_code=status)


class _BodyLimit:
    """ASGI middleware: answer 413 to bodies above `max_bytes`, streamed or not."""

    def __init__(self, app, max_bytes):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = _error(
            413, f"Request body is larger than the limit of {self.max_bytes} bytes "
            "(--max_request_bytes)."
        )
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await too_large(scope, receive, send)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                return await too_large(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


# TF Serving's CORS headers (http_rest_api_util.cc, AddCORSHeaders), sent with
# --rest_api_enable_cors_support.
_CORS_HEADERS = [(b"access-control-allow-origin", b"*"), (b"access-control-allow-methods", b"POST, GET"),
                 (b"access-control-allow-headers", b"Content-Type")]


class _Cors:
    """ASGI middleware: TF Serving's CORS headers on every response, and a
    200 to a browser's preflight (OPTIONS), which passes only with a 2xx."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "OPTIONS":
            response = Response(status_code=200)
            response.raw_headers.extend(_CORS_HEADERS)
            return await response(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_CORS_HEADERS]}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def _to_tensors(arrays, signature):
    return {
        name: tf.constant(value, dtype=signature.inputs[name].dtype)
        for name, value in arrays.items()
    }


def _call(signature, arrays):
    outputs = signature(**_to_tensors(arrays, signature))
    return {name: value.numpy() for name, value in outputs.items()}


# Most distinct batching groups kept per version (each is one small queue).
_MAX_BATCH_GROUPS = 256


def _batch_key(signature, arrays):
    """Requests with equal keys can share a model call, or None if this one
    cannot: every batched input needs a batch axis, the same number of rows
    as the request's other batched inputs (else the signature's own check
    answers it alone) and the same trailing shape; scalar inputs (e.g.
    `temperature`) must be equal. A seeded call
    (an input named `seed`, e.g. the language model's `generate_seeded`) is
    never merged: its rows are sampled as one batch, so merging would change
    the text the seed promises."""
    if "seed" in signature.inputs:
        return None
    key = [signature.name]
    rows = set()
    for name in sorted(arrays):
        array = arrays[name]
        if signature.inputs[name].shape.rank == 0:
            key.append((name, "scalar", array.tobytes() if array.dtype != object else repr(array.item())))
        elif array.ndim == 0 or array.shape[0] == 0:
            return None
        else:
            rows.add(array.shape[0])
            key.append((name, array.dtype.str, array.shape[1:]))
    # Requests of one waveform and two lengths, and of two waveforms and one
    # length, would pass as three of each once concatenated.
    if len(rows) > 1:
        return None
    return tuple(key)


def _call_merged(signature, requests):
    """One model call for several requests' inputs (TF Serving's batching:
    concatenate along the batch axis, split the outputs by rows). If the
    merged call fails, each request is run alone, so a bad request fails
    alone."""
    if len(requests) > 1:
        rows = [len(next(a for n, a in r.items() if signature.inputs[n].shape.rank)) for r in requests]
        merged = {
            name: (requests[0][name] if signature.inputs[name].shape.rank == 0
                   else np.concatenate([r[name] for r in requests]))
            for name in requests[0]
        }
        try:
            outputs = _call(signature, merged)
        except Exception:
            outputs = None
        if outputs is not None and all(v.ndim and v.shape[0] == sum(rows) for v in outputs.values()):
            bounds = np.cumsum([0, *rows])
            return [{n: v[bounds[i]:bounds[i + 1]] for n, v in outputs.items()}
                    for i in range(len(requests))]
    return _each_alone(lambda arrays: _call(signature, arrays), requests)


def _each_alone(call, items):
    """`call(item)` for each item, an exception standing as that item's
    result (the `Batcher` raises it to that item's caller alone)."""
    results = []
    for item in items:
        try:
            results.append(call(item))
        except Exception as error:
            results.append(error)
    return results


def create_app(
    model_name=None,
    model_base_path=None,
    *,
    models=None,
    poll_seconds=1.0,
    max_request_bytes=32 * 1024 * 1024,
    max_audio_seconds=60.0,
    max_new_chars=2000,
    max_text_chars=10000,
    max_batch_size=32,
    batch_timeout_s=0.0,
    max_concurrent_batches=2,
    max_enqueued_batches=None,
    rest_api_timeout_s=30.0,
    cors=False,
    warmup_iterations=1,
):
    """The FastAPI app serving a model (or several) with TF Serving's REST API.

    Routes (the `/versions/N` part is optional; only the served, highest
    version exists, TF Serving's default policy):

    - `GET /v1/models/NAME[/versions/N]`: `{"model_version_status": [{"version",
      "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}`
      for the served version, and state "END" with the error for each
      version whose load failed, newest first.
    - `GET /v1/models/NAME[/versions/N]/metadata`: `{"model_spec": {...},
      "metadata": {"signature_def": {"signature_def": {...}}}}`.
    - `POST /v1/models/NAME[/versions/N]:predict`: see `serving.rest_json`.
    - `POST /v1/models/NAME[/versions/N]:transcribe`: multipart upload of one
      audio file (wav, flac, ogg; any rate, any channels; resampled with the
      project's loader) -> `{"text", "model_version", "duration_seconds"}`.
      Concurrent uploads are batched into one call of the model's
      `serving_default` signature, and so are compatible `:predict` requests.

    `POST .../:classify` and `:regress` get TF Serving's answer for these
    exports, whose signatures are all of method tensorflow/serving/predict
    (400). Version labels (`/labels/L`) are not configurable: 400, as TF
    Serving answers an unknown label.

    Every error is `{"error": message}` with TF Serving's status: 400 for
    malformed requests (a URL or method outside the routes above, JSON, dtype,
    shape, missing inputs, unknown signature, unreadable audio), 404 for
    models and versions that are not served, 413 above the body, duration,
    `max_new_chars` or text length limits, and TF Serving's status for each
    other TensorFlow error (e.g. 429 for ResourceExhausted, 500 for Internal).

    Args:
        model_name: The NAME in the URLs.
        model_base_path: Directory of integer version directories.
        models: Instead of `model_name` and `model_base_path`, several
            models, `{NAME: base path}` (`--model_config_file`), each
            served from its own directory, with the same limits.
        poll_seconds: Seconds between scans for new versions.
        max_request_bytes: Largest request body accepted.
        max_audio_seconds: Longest audio accepted by `:transcribe` and by
            `:predict` on a transcriber's waveform signature.
        max_new_chars: Largest `max_new_chars` accepted by a language
            model's generation signature.
        max_text_chars: Longest `prompt` (generation) or `text` (`score`)
            accepted by a language model, in characters: the model reads
            them one character a step, so a long one holds the model.
        max_batch_size: Most requests merged into one model call (1 turns
            batching off). `:predict` requests are merged as TF Serving's
            batcher does: same signature, same trailing input shapes, equal
            scalar inputs, concatenated along the batch axis. `:transcribe`
            uploads of any length are padded into one batch.
        batch_timeout_s: Longest wait for a batch to fill. The default, 0,
            adds no latency: a batch takes the requests that queued while
            the model was busy (two batches run at once), which is when
            batching pays.
        max_concurrent_batches: Batches of one model (and one kind of
            request) run at once (TF Serving's `num_batch_threads`).
        max_enqueued_batches: With it, a request finding that many
            batches' worth of requests (times `max_batch_size`) already
            waiting is refused with 503, as TF Serving refuses one when its
            batch queue is full. None: no limit.
        rest_api_timeout_s: A `:predict` or `:transcribe` request's deadline
            in seconds (TF Serving's `--rest_api_timeout_in_ms`, default
            30 s): past it the answer is 504 {"error": "Deadline exceeded:
            ..."}. A request still queued for a batch is then never run;
            a model call already running cannot be stopped from Python and
            finishes in its thread, its result dropped. None or 0: no
            deadline.
        cors: Send TF Serving's CORS headers (`--rest_api_enable_cors_support`:
            any origin, methods POST and GET, header Content-Type) with
            every response, and answer a browser's preflight `OPTIONS` with
            200 and those headers.
        warmup_iterations: Times each warmup request of a version
            (`assets.extra/tf_serving_warmup_requests`, which the exports
            write) runs when the version loads, before it is served, as TF
            Serving does; 0: no warmup. A failing one fails the load.
    """
    if (models is None) == (model_name is None or model_base_path is None):
        raise ValueError("Expected `model_name` and `model_base_path`, or `models` ({NAME: base path}), not both.")
    if models is None:
        models = {model_name: model_base_path}
    if not models:
        raise ValueError("Expected at least one model in `models`.")
    batcher_options = {
        "max_batch_size": max_batch_size, "timeout_s": batch_timeout_s,
        "max_concurrent_batches": max_concurrent_batches,
        "max_queued": None if max_enqueued_batches is None else max_enqueued_batches * max_batch_size,
    }
    stores = {name: ModelStore(name, base, poll_seconds=poll_seconds, warmup_iterations=warmup_iterations)
              for name, base in models.items()}

    def close_batchers(old):
        # The batchers' tasks hold the old version; let them end so it is freed.
        with old.lock:
            batchers = [old.extras.get("batcher"), *old.extras.get("predict_batchers", {}).values()]
        for batcher in batchers:
            if batcher is not None:
                batcher.close()

    for store in stores.values():
        store.on_unload.append(close_batchers)

    def warm_audio_decoder(loaded):
        # The first upload's resampling took 1.1-1.3 s (librosa loads its
        # resampling modules on first use) against under 1 ms after: done
        # once, before the first transcriber is served, when warmup is on.
        if warmup_iterations <= 0 or loaded.metadata.get("task") != "transcription" or audio_warmed:
            return
        rate = int(loaded.metadata.get("sample_rate") or 16000)
        other = 8000 if rate != 8000 else 16000
        buffer = io.BytesIO()
        sf.write(buffer, warmup_waveform(other, 0.2)[0], other, format="WAV", subtype="PCM_16")
        try:
            _decode_audio(buffer.getvalue(), "warmup.wav", rate, 1, max_audio_seconds)
        except Exception as error:  # only a warmup: the version is served all the same
            logger.warning("warming up the audio decoder failed: %s", error)
        audio_warmed.append(True)

    audio_warmed = []
    for store in stores.values():
        store.on_load.append(warm_audio_decoder)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for store in stores.values():
            await anyio.to_thread.run_sync(store.refresh)
            store.start()
        try:
            yield
        finally:
            for store in stores.values():
                store.stop()

    app = FastAPI(title=f"{', '.join(stores)} (TF Serving REST API)", lifespan=lifespan)
    app.state.stores = stores
    app.state.store = next(iter(stores.values()))  # the model (the first, with several)
    app.add_middleware(_BodyLimit, max_bytes=max_request_bytes)
    if cors:
        app.add_middleware(_Cors)  # added last, so outermost: a 413 gets the headers too

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error):
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, error):
        return _error(400, str(error))

    def resolve(request, path):
        """`(match, version)` of the URL path after "/v1/", or a RequestError
        (400) as TF Serving's: "Malformed request: METHOD PATH" for a path or
        method its URL patterns do not match (status and metadata take GET,
        verbs POST), "Failed to convert version" for one beyond int64, and
        "Unrecognized servable version label" for a label, since none is
        configured here."""
        method = request.method
        if path == "models" and method == "GET":
            raise RequestError("Missing model name in request.")
        match = _PATH.match(path[len("models/"):]) if path.startswith("models/") else None
        hint = ""
        if match is not None:
            verb = match["verb"]
            if verb is not None and verb not in _VERBS:
                match, hint = None, f" (unknown verb :{verb}; this server has :predict and :transcribe)"
            elif method != ("POST" if verb else "GET"):
                match, hint = None, f" (this URL takes {'POST' if verb else 'GET'})"
        if match is None:
            raise RequestError(f"Malformed request: {method} /v1/{path}{hint}")
        version = match["version"]
        if version is not None:
            if not (version.isascii() and version.isdigit()):  # not "²", which int() refuses
                raise RequestError(f"Version must be a non-negative integer, got {version!r}.")
            if int(version) > _MAX_VERSION:
                raise RequestError(f"Failed to convert version: {version} to numeric.")
            version = int(version)
        if match["label"] is not None:
            raise RequestError(
                f"Unrecognized servable version label: {match['label']} (this server has no "
                "version labels; use /versions/N or no version).")
        return match, version

    def servable(name, version):
        """The served `LoadedVersion` for a request naming `name` and `version`."""
        if name not in stores:
            wanted = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise NotFoundError(f"Servable not found for request: {wanted}")
        return stores[name].get(version)

    def model_status(name, version):
        """TF Serving's GetModelStatus answer, or its NotFound messages: the
        served version AVAILABLE, and each version whose load failed END
        with its error, newest first (TF Serving's order)."""
        if name not in stores:
            raise NotFoundError(f"Could not find any versions of model {name}" if version is None
                                else f"Could not find version {version} of model {name}")
        store = stores[name]
        current = store.current
        states = {version_: ("END", {"error_code": code, "error_message": message})
                  for version_, (code, message) in store.failed_versions().items()}
        if current is not None:
            states[current.version] = ("AVAILABLE", {"error_code": "OK", "error_message": ""})
        if version is None and not states:
            raise NotFoundError(f"Could not find any versions of model {name}")
        if version is not None and version not in states:
            raise NotFoundError(f"Could not find version {version} of model {name}")
        return {"model_version_status": [
            {"version": str(v), "state": state, "status": status}
            for v, (state, status) in sorted(states.items(), reverse=True) if version in (None, v)]}

    async def classify_or_regress(loaded, verb, request):
        """What TF Serving answers to `:classify` and `:regress` on these
        exports, whose signatures are all of method tensorflow/serving/predict:
        InvalidArgument (400), in its words with
        --enable_signature_method_name_check (without it, it names what the
        signature lacks for the verb: a single `inputs` tensor, `scores`...)."""
        payload = parse_json_body(await request.body())
        name = payload.get("signature_name", "")
        if not isinstance(name, str):
            raise RequestError("'signature_name' key must be a string value.")
        name = name or "serving_default"
        if name not in loaded.signature_def:
            raise RequestError(f"No signature was found with the name: {name}")
        method_name = loaded.signature_def[name].get("method_name", "")
        if method_name != f"tensorflow/serving/{verb}":
            kind = {"classify": "classification", "regress": "regression"}[verb]
            raise RequestError(
                f"Expected {kind} signature method_name to be tensorflow/serving/{verb}. "
                f"Was: {method_name} (use :predict).")
        raise RequestError(f":{verb} is not implemented by this server; use :predict.", status=501)

    def check_limits(loaded, signature, arrays):
        task = loaded.metadata.get("task")
        if task == "transcription" and "waveform" in arrays:
            rate = float(loaded.metadata.get("sample_rate") or 16000)
            seconds = arrays["waveform"].shape[-1] / rate if arrays["waveform"].ndim else 0.0
            if seconds > max_audio_seconds:
                raise RequestError(
                    f"Waveform of {seconds:.1f} s is longer than the limit of "
                    f"{max_audio_seconds:g} s (--max_audio_seconds).", status=413)
        if task == "language_model" and "max_new_chars" in arrays:
            wanted = arrays["max_new_chars"]
            if wanted.size and int(np.max(wanted)) > max_new_chars:
                raise RequestError(
                    f"max_new_chars={int(np.max(wanted))} is above the limit of "
                    f"{max_new_chars} (--max_new_chars).", status=413)
        if task == "language_model":
            for name in ("prompt", "text"):
                if name in arrays and arrays[name].size:
                    longest = max(len(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
                                  for value in arrays[name].ravel())
                    if longest > max_text_chars:
                        raise RequestError(
                            f"A `{name}` of {longest} characters is longer than the limit of "
                            f"{max_text_chars} (--max_text_chars).", status=413)

    async def predict(loaded, request):
        body = await request.body()
        payload = parse_json_body(body)
        signature, arrays, row_format = parse_predict_request(payload, loaded.signatures)
        check_limits(loaded, signature, arrays)
        key = _batch_key(signature, arrays) if max_batch_size > 1 else None
        batcher = None
        if key is not None:
            with loaded.lock:
                batchers = loaded.extras.setdefault("predict_batchers", {})
                batcher = batchers.get(key)
                if batcher is None and len(batchers) < _MAX_BATCH_GROUPS:
                    batcher = batchers[key] = Batcher(
                        lambda requests: _call_merged(signature, requests), **batcher_options)
        if batcher is None:
            outputs = await anyio.to_thread.run_sync(_call, signature, arrays, abandon_on_cancel=True)
        else:
            outputs = await batcher.submit(arrays)
        return format_predict_response(outputs, row_format)

    def transcriber_batcher(loaded):
        with loaded.lock:
            batcher = loaded.extras.get("batcher")
            if batcher is None:
                signature = loaded.signature("serving_default")

                def transcribe_batch(waveforms):
                    lengths = np.array([len(w) for w in waveforms], np.int32)
                    batch = np.zeros((len(waveforms), lengths.max()), np.float32)
                    for row, waveform in enumerate(waveforms):
                        batch[row, : len(waveform)] = waveform
                    outputs = _call(signature, {"waveform": batch, "waveform_length": lengths})
                    return [text.decode("utf-8", "replace") for text in outputs["text"]]

                def run_batch(waveforms):
                    # As for :predict: if the merged call fails (say, out of
                    # memory), each upload is run alone, so one fails alone.
                    if len(waveforms) > 1:
                        try:
                            return transcribe_batch(waveforms)
                        except Exception:
                            pass
                    return _each_alone(lambda waveform: transcribe_batch([waveform])[0], waveforms)

                batcher = Batcher(run_batch, **batcher_options)
                loaded.extras["batcher"] = batcher
            return batcher

    async def transcribe(loaded, request):
        if loaded.metadata.get("task") != "transcription":
            raise RequestError(
                f"Model {loaded.model_name} version {loaded.version} is a "
                f"{loaded.metadata.get('task', 'unknown')!r} model; :transcribe needs a "
                "transcription export.")
        try:
            form = await request.form()
        except Exception as error:
            raise RequestError(
                "Expected a multipart/form-data upload with one audio file "
                f"(e.g. curl -F file=@speech.wav), could not parse it: {error}.") from None
        uploads = [value for _, value in form.multi_items() if hasattr(value, "read")]
        if len(uploads) != 1:
            raise RequestError(
                f"Expected exactly one uploaded audio file in the form, got {len(uploads)} "
                "(e.g. curl -F file=@speech.wav).")
        upload = uploads[0]
        data = await upload.read()
        name = upload.filename or "upload"
        rate = int(loaded.metadata.get("sample_rate") or 16000)
        n_fft = int((loaded.metadata.get("feature_config") or {}).get("n_fft", 1))
        waveform = await anyio.to_thread.run_sync(_decode_audio, data, name, rate, n_fft, max_audio_seconds,
                                                  abandon_on_cancel=True)
        text = await transcriber_batcher(loaded).submit(waveform)
        return {
            "text": text,
            "model_version": str(loaded.version),
            "duration_seconds": round(len(waveform) / rate, 3),
        }

    async def within_deadline(work):
        """`await work()` under the request deadline, as TF Serving runs a
        request's model call with `RunOptions.timeout_in_ms` and answers
        DEADLINE_EXCEEDED with 504."""
        if not rest_api_timeout_s:
            return await work()
        with anyio.move_on_after(rest_api_timeout_s):
            return await work()
        raise _DeadlineExceeded(
            f"Deadline exceeded: the request took longer than {rest_api_timeout_s * 1000:g} ms "
            "(--rest_api_timeout_in_ms).")

    async def handle(request, path):
        try:
            match, version = resolve(request, path)
            name, verb = match["name"], match["verb"]
            if verb is None:
                if not match["metadata"]:
                    return JSONResponse(model_status(name, version))
                loaded = servable(name, version)
                return JSONResponse({
                    "model_spec": {"name": loaded.model_name, "signature_name": "",
                                   "version": str(loaded.version)},
                    "metadata": {"signature_def": {"signature_def": loaded.signature_def}},
                })
            loaded = servable(name, version)
            if verb == "predict":
                return JSONResponse(await within_deadline(lambda: predict(loaded, request)))
            if verb == "transcribe":
                return JSONResponse(await within_deadline(lambda: transcribe(loaded, request)))
            return await classify_or_regress(loaded, verb, request)
        except NotFoundError as error:
            return _error(404, str(error))
        except _DeadlineExceeded as error:
            return _error(504, str(error))
        except QueueFull as error:
            return _error(503, str(error))
        except RequestError as error:
            return _error(error.status, str(error))
        except AudioError as error:
            return _error(413 if error.reason == TOO_LONG else 400, str(error))
        except tf.errors.OpError as error:  # TF Serving's status for each code
            return _error(_HTTP_STATUS.get(error.error_code, 500), op_error_message(error))
        except Exception as error:  # still {"error": ...}, as TF Serving answers every error
            logger.exception("%s %s failed", request.method, request.url.path)
            return _error(500, f"Internal error: {type(error).__name__}: {error}")

    # Every /v1/ path and method comes here, as in TF Serving, so a wrong one
    # is answered as TF Serving answers it (400), not with a 404 or 405.
    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
    async def v1_route(request: Request, path: str):
        return await handle(request, path)

    return app


def _decode_audio(data, name, sample_rate, min_samples, max_seconds):
    """Bytes of an audio file -> mono float32 at `sample_rate`; AudioError if bad.

    Checked as training checks a file (`load_audio`: unreadable, empty,
    truncated, non-finite, too long or too short), except that silence is a
    valid request: the export's serving_default gives it the text ""."""
    if not data:
        raise AudioError(name, "empty", "the uploaded file has 0 bytes")
    return load_audio(name, sample_rate, max_duration_s=max_seconds, min_samples=min_samples, data=data,
                      allow_silence=True, limit_name="--max_audio_seconds")

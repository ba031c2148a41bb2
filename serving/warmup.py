"""SavedModel warmup requests, in TF Serving's format.

TF Serving runs the requests it finds in a version's
`assets.extra/tf_serving_warmup_requests` (a TFRecord file of `PredictionLog`
protos) when it loads the version (`--enable_model_warmup`, on by default;
each `--num_request_iterations_for_warmup` times), before the version is
served: the first call of a signature prepares its graph (0.5 s for a
transcriber on 2 cores, against 6-15 ms after), and without warmup the
first user's request pays for it. The exports write one small request per
signature (`write_warmup_requests`) and `python -m serving` replays them as
TF Serving does (`replay_warmup_requests`).
"""

import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from serving.op_errors import op_error_message


class WarmupError(ValueError):
    """A version's warmup file or one of its requests failed; `error_code` is
    the TensorFlow error code TF Serving would report for it."""

    def __init__(self, message, error_code=tf.errors.INVALID_ARGUMENT):
        super().__init__(message)
        self.error_code = error_code


# TF Serving's names and limit (saved_model_warmup_util.h: WarmupConsts).
WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000


def write_warmup_requests(version_dir, model_name, requests):
    """Write `requests` as `<version_dir>/assets.extra/tf_serving_warmup_requests`.

    Args:
        version_dir: A SavedModel directory (the staging folder of an export).
        model_name: The model's name, written into each request's model spec.
        requests: A list of `(signature_name, {input_name: array})`, each one
            PredictionLog record (at most `MAX_RECORDS`).

    Returns:
        The path of the file.
    """
    if len(requests) > MAX_RECORDS:
        raise ValueError(f"Expected at most {MAX_RECORDS} warmup requests (TF Serving's limit), got {len(requests)}.")
    for signature_name, inputs in requests:
        scalars = sorted(name for name, value in inputs.items() if np.ndim(value) == 0)
        if scalars:
            # TF Serving replays warmup requests through its batching session
            # when --enable_batching is on, which refuses inputs without a
            # batch dimension: the version would then fail to load.
            raise ValueError(
                f"Warmup request for {signature_name!r} has scalar inputs {scalars}; expected every input "
                "with a batch dimension (TF Serving's batching, --enable_batching, refuses scalars, and a "
                "failing warmup request fails the version's load).")
    path = os.path.join(os.fspath(version_dir), WARMUP_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name))
            for name, value in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(version_dir):
    """The `(signature_name, {input_name: np.ndarray})` requests of a version's
    warmup file, `[]` when it has none. A file that is not a TFRecord of
    PredictionLog predict requests, or holds more than `MAX_RECORDS`, is a
    `WarmupError` (a ValueError) naming it (TF Serving refuses to load such a
    version)."""
    path = os.path.join(os.fspath(version_dir), WARMUP_PATH)
    if not os.path.exists(path):
        return []
    requests = []
    try:
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            log = prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(record)
            except Exception:
                raise WarmupError(f"Warmup file {path}: record {len(requests) + 1} is not a PredictionLog.") from None
            if log.WhichOneof("log_type") != "predict_log":
                raise WarmupError(
                    f"Warmup file {path}: record {len(requests) + 1} is a {log.WhichOneof('log_type')}; "
                    "this server replays predict_log requests only (its exports have predict signatures).")
            request = log.predict_log.request
            requests.append((request.model_spec.signature_name or "serving_default",
                             {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}))
            if len(requests) > MAX_RECORDS:
                raise WarmupError(f"Warmup file {path}: number of warmup records exceeds the maximum "
                                 f"({MAX_RECORDS}).")
    except tf.errors.DataLossError as error:
        raise WarmupError(f"Warmup file {path} is not in TFRecord format ({error.message}).",
                          tf.errors.DATA_LOSS) from None
    return requests


def replay_warmup_requests(version_dir, signatures, iterations=1):
    """Call each warmup request of `version_dir` `iterations` times.

    Args:
        version_dir: The loaded version's directory.
        signatures: `{name: callable(**tensors)}`, the loaded signatures.
        iterations: Calls per request (TF Serving's
            `--num_request_iterations_for_warmup`, default 1).

    Returns:
        The number of requests replayed (0 without a warmup file).

    Raises:
        WarmupError (a ValueError) naming the file, the request and why, when
        a request names an unknown signature or input or its call fails
        (`error_code`: the call's TensorFlow error code): as in TF Serving,
        the version is then not served.
    """
    requests = read_warmup_requests(version_dir)
    for index, (name, inputs) in enumerate(requests, start=1):
        where = f"Warmup request {index} of {os.path.join(os.fspath(version_dir), WARMUP_PATH)}"
        if name not in signatures:
            raise WarmupError(f"{where} names signature {name!r}; the model has {sorted(signatures)}.",
                              tf.errors.FAILED_PRECONDITION)
        try:
            tensors = {key: tf.constant(value) for key, value in inputs.items()}
            for _ in range(iterations):
                signatures[name](**tensors)
        except (TypeError, ValueError, tf.errors.OpError) as error:
            reason = op_error_message(error) if isinstance(error, tf.errors.OpError) else str(error)
            code = getattr(error, "error_code", tf.errors.INVALID_ARGUMENT)
            raise WarmupError(f"{where} ({name}) failed: {reason}", code) from None
    return len(requests)


def warmup_waveform(sample_rate, seconds=1.0):
    """A deterministic quiet noise waveform `(1, samples)`, float32, for
    warmup requests (peak about 0.04: not the silence below
    `pipelines.audio_loading.SILENCE_PEAK` that the transcriber answers
    with "")."""
    samples = int(round(sample_rate * seconds))
    return (0.01 * np.random.default_rng(0).standard_normal((1, samples))).astype(np.float32)

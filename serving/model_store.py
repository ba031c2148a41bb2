"""Load the newest version of a model directory, and keep watching it."""

import json
import logging
import os
import threading
import time

import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from serving.export import METADATA_PATH
from serving.model_paths import missing_versions_message, version_directories
from serving.warmup import replay_warmup_requests

logger = logging.getLogger("serving")

# TF Serving's REST API names the dtypes by their proto enum name.
_DTYPE_NAMES = {
    tf.float32: "DT_FLOAT",
    tf.float64: "DT_DOUBLE",
    tf.int32: "DT_INT32",
    tf.int64: "DT_INT64",
    tf.string: "DT_STRING",
    tf.bool: "DT_BOOL",
}


def _error_code_name(error):
    """TF Serving's name of an error's code: a TensorFlow error's own code
    (e.g. "INVALID_ARGUMENT"), "UNKNOWN" for any other exception."""
    code = getattr(error, "error_code", None)
    if code is None:
        return "UNKNOWN"
    try:
        from tensorflow.core.protobuf import error_codes_pb2

        return error_codes_pb2.Code.Name(code)
    except ValueError:
        return "UNKNOWN"


def _one_line(error):
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class NotFoundError(LookupError):
    """A model, version or signature the store does not serve (HTTP 404)."""


class Signature:
    """One serving signature: its callable and its input/output specs."""

    def __init__(self, name, function):
        self.name = name
        self.function = function
        _, kwargs = function.structured_input_signature
        self.inputs = dict(sorted(kwargs.items()))
        self.outputs = dict(sorted(function.structured_outputs.items()))

    def __call__(self, **tensors):
        return self.function(**tensors)


class LoadedVersion:
    """A loaded SavedModel version: signatures, metadata and signature_def JSON."""

    def __init__(self, model_name, version, path, warmup_iterations=1):
        self.model_name = model_name
        self.version = version
        self.path = path
        self.saved_model = tf.saved_model.load(path)
        self.signatures = {
            name: Signature(name, function)
            for name, function in self.saved_model.signatures.items()
        }
        self.metadata = {}
        metadata_path = os.path.join(path, METADATA_PATH)
        if os.path.exists(metadata_path):
            with open(metadata_path, encoding="utf-8") as f:
                self.metadata = json.load(f)
        self.signature_def = _signature_def_json(path)
        # TF Serving's warmup: the export's requests run before the version is
        # served (a failure fails the load); 0 iterations: none.
        self.warmup_requests = 0
        if warmup_iterations > 0:
            started = time.monotonic()
            self.warmup_requests = replay_warmup_requests(path, self.signatures, warmup_iterations)
            if self.warmup_requests:
                logger.info("warmed up %s version %d: %d request(s) x %d in %.2f s", model_name, version,
                            self.warmup_requests, warmup_iterations, time.monotonic() - started)
        self.extras = {}  # per-version helpers the server attaches (batchers)
        self.lock = threading.Lock()

    def signature(self, name):
        """The `Signature` called `name`, or a `KeyError` naming the choices."""
        if name not in self.signatures:
            raise KeyError(
                f'Serving signature name: "{name}" not found in signature def; '
                f"this model has {sorted(self.signatures)}."
            )
        return self.signatures[name]


def _signature_def_json(path):
    """The SignatureDef map as TF Serving's metadata API prints it."""
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    meta_graph = proto.meta_graphs[0]
    return {
        name: json_format.MessageToDict(
            signature,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        for name, signature in sorted(meta_graph.signature_def.items())
    }


def dtype_name(dtype):
    """TF Serving's name of a dtype, e.g. "DT_FLOAT"."""
    return _DTYPE_NAMES.get(dtype, f"DT_{dtype.name.upper()}")


class ModelStore:
    """Serve the highest version under `base_path`, picking up new ones.

    TF Serving's default version policy: only the latest version is
    available. `refresh()` loads a newer version when one appears (the old
    one keeps serving until the new one has loaded, and requests already
    holding it finish on it), and when the served version's directory is
    removed, the highest remaining one (none if none loads); `start()`
    calls it every `poll_seconds` in a daemon thread, as TF Serving's
    `--file_system_poll_wait_seconds` does.
    A version that fails to load is logged and skipped until its directory
    changes; the previous version stays available. While nothing is served,
    `refresh()` logs a warning (at the first scan, then every
    `warn_seconds`) naming the path read and the layout it expects
    (`missing_versions_message`); the store keeps waiting for a version, as
    TF Serving does.

    Args:
        model_name: The name clients use in `/v1/models/NAME`.
        base_path: Directory of integer version directories.
        poll_seconds: Seconds between directory scans in `start()`; 0 or
            less: no scans after the first (TF Serving's 0).
        warn_seconds: Seconds between warnings while no version is served.
        warmup_iterations: Times each of a version's warmup requests
            (`serving.warmup`) is run when it loads, before it is served
            (TF Serving's `--num_request_iterations_for_warmup`); 0: no
            warmup (`--enable_model_warmup=false`). A failing request fails
            the load, as in TF Serving.
    """

    def __init__(self, model_name, base_path, poll_seconds=1.0, warn_seconds=30.0, warmup_iterations=1):
        self.model_name = model_name
        self.base_path = os.path.abspath(base_path)
        self.poll_seconds = poll_seconds
        self.warn_seconds = warn_seconds
        self.warmup_iterations = warmup_iterations
        self._warned_at = None  # time.monotonic() of the last warning that nothing is served
        self._current = None
        self._failed = {}  # version -> (directory mtime, error code name, message) of a failed load
        self._stop = threading.Event()
        self._thread = None
        self._refresh_lock = threading.Lock()
        self.on_load = []  # callbacks(LoadedVersion) after a version loads, before it is served
        self.on_unload = []  # callbacks(LoadedVersion) when a version is replaced

    @property
    def current(self):
        """The `LoadedVersion` being served, or None."""
        return self._current

    def refresh(self):
        """Load the highest complete version if it is newer, or if the served
        version's directory was removed; True if loaded."""
        with self._refresh_lock:
            versions = version_directories(self.base_path)
            current = self._current.version if self._current else None
            # The served version's directory was removed (a rollback): as TF
            # Serving's latest policy does, serve the highest remaining
            # version, or none (a missing base path changes nothing).
            removed = current is not None and current not in versions and os.path.isdir(self.base_path)
            if removed:
                current = None
            for version in sorted(versions, reverse=True):
                if current is not None and version <= current:
                    return False
                path = versions[version]
                mtime = os.stat(path).st_mtime
                if self._failed.get(version, (None,))[0] == mtime:
                    continue
                try:
                    loaded = LoadedVersion(self.model_name, version, path, self.warmup_iterations)
                    for callback in self.on_load:
                        callback(loaded)
                except Exception as error:  # a broken export must not stop serving
                    self._failed[version] = (mtime, _error_code_name(error), _one_line(error))
                    logger.error("could not load %s version %d from %s: %s",
                                 self.model_name, version, path, error)
                    continue
                previous, self._current = self._current, loaded
                self._failed.pop(version, None)
                logger.info("serving %s version %d from %s", self.model_name, version, path)
                if previous is not None:
                    for callback in self.on_unload:
                        callback(previous)
                return True
            if removed:
                previous, self._current = self._current, None
                logger.warning("version %d of %s was removed from %s and no other version could be loaded; "
                               "nothing is served", previous.version, self.model_name, self.base_path)
                for callback in self.on_unload:
                    callback(previous)
            if self._current is None:
                self._warn_nothing_served(versions)
            return False

    def failed_versions(self):
        """`{version: (error code name, message)}` of the versions whose load
        failed (TF Serving reports them as state END with that status)."""
        failed = dict(self._failed)  # one C-level copy: the poll thread may change it meanwhile
        return {version: (code, message) for version, (_, code, message) in failed.items()}

    def _warn_nothing_served(self, versions):
        """Log why nothing is served: at the first scan, then every `warn_seconds`."""
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < self.warn_seconds:
            return
        still = self._warned_at is not None
        self._warned_at = now
        if versions:  # every version failed to load (each failure was logged)
            logger.warning("%sno version of %s under %s could be loaded (versions %s); waiting for a new one",
                           "still " if still else "", self.model_name, self.base_path,
                           ", ".join(map(str, sorted(versions))))
        else:
            logger.warning("%s%s Requests get 404 until a version appears.", "still waiting: " if still else "",
                           missing_versions_message(self.model_name, self.base_path))

    def get(self, version=None):
        """The served `LoadedVersion`; `version` must be it when given."""
        current = self._current
        if current is None or (version is not None and version != current.version):
            wanted = "Latest" if version is None else "Specific"
            detail = self.model_name if version is None else f"{self.model_name}, {version}"
            raise NotFoundError(f"Servable not found for request: {wanted}({detail})")
        return current

    def start(self):
        """Poll `base_path` every `poll_seconds` in a daemon thread. With
        `poll_seconds` <= 0 there is no polling: as with TF Serving's
        `--file_system_poll_wait_seconds=0`, the scan at start is the only one."""
        if self._thread is not None:
            return
        if self.poll_seconds <= 0:
            logger.info("not polling %s for new versions (poll interval %g s)", self.base_path, self.poll_seconds)
            return

        def poll():
            while not self._stop.wait(self.poll_seconds):
                try:
                    self.refresh()
                except Exception as error:  # keep polling whatever happens
                    logger.error("polling %s failed: %s", self.base_path, error)

        self._stop.clear()
        self._thread = threading.Thread(target=poll, name="model-poll", daemon=True)
        self._thread.start()

    def stop(self):
        """Stop polling (the loaded version stays available)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

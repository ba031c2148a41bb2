"""Atomic, versioned SavedModel export in TF Serving's directory layout."""

import json
import os
import platform
import re
import shutil
import socket
import tempfile
import time

import keras
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from layers.fused_elman import xla_disabled

METADATA_PATH = os.path.join("assets", "metadata.json")


def _versions(model_dir):
    """The integer version directories already in `model_dir`."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(name)
        for name in os.listdir(model_dir)
        if name.isdigit() and os.path.isdir(os.path.join(model_dir, name))
    )


# A version is written into `.staging-PID@HOST-XXXXXXXX` beside the versions
# and renamed into place; a process killed meanwhile (SIGKILL, power) leaves it.
_STAGING = re.compile(r"^\.staging-(\d+)@(.+)-[^-]+$")


def _staging_prefix():
    return f".staging-{os.getpid()}@{socket.gethostname()}-"


def remove_stale_staging(model_dir):
    """Delete the staging folders of killed exports on this machine from `model_dir`.

    A staging folder names the exporting process and host; it is stale when
    that process no longer runs on this host. Folders of other hosts (a shared
    file system), of running processes and of older exports (no process in
    the name) are left alone. Returns the removed folders' paths.
    """
    removed = []
    host = socket.gethostname()
    for name in sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []:
        match = _STAGING.match(name)
        if not match or match.group(2) != host or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # running (or a process reusing its number): maybe still writing
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        path = os.path.join(model_dir, name)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _json_ready(value, where):
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Received an invalid value for `{where}`, expected JSON-serialisable "
            f"data (dicts, lists, strings, numbers), got {error}."
        ) from None


def _read_saved_model(saved_model_dir):
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def _called_functions(attrs):
    for value in attrs.values():
        if value.HasField("func"):
            yield value.func.name
        for func in value.list.func:
            yield func.name


def pinned_devices(saved_model_dir):
    """`(node, device)` of the nodes that serving signatures run and that name
    a device (the checkpoint save/restore functions, which always do, are
    not part of serving and are left out)."""
    pinned = []
    for meta_graph in _read_saved_model(saved_model_dir).meta_graphs:
        graph = meta_graph.graph_def
        functions = {f.signature.name: f for f in graph.library.function}
        nodes = {n.name: n for n in graph.node}
        outputs = [t.name.split(":")[0] for sig in meta_graph.signature_def.values()
                   for t in sig.outputs.values()]
        pending = [n for n in (nodes.get(name) for name in outputs) if n is not None]
        pinned += [(n.name, n.device) for n in pending if n.device]
        todo = [f for n in pending for f in _called_functions(n.attr)]
        seen = set()
        while todo:
            name = todo.pop()
            if name in seen or name not in functions:
                continue
            seen.add(name)
            for node in functions[name].node_def:
                if node.device:
                    pinned.append((f"{name}/{node.name}", node.device))
                todo.extend(_called_functions(node.attr))
    return pinned


def xla_compiled_functions(saved_model_dir):
    """Names of the functions in a SavedModel marked for XLA compilation."""
    proto = _read_saved_model(saved_model_dir)
    names = []
    for meta_graph in proto.meta_graphs:
        for function in meta_graph.graph_def.library.function:
            attr = function.attr.get("_XlaMustCompile")
            if attr is not None and attr.b:
                names.append(function.signature.name)
            for node in function.node_def:
                attr = node.attr.get("_XlaMustCompile")
                if attr is not None and attr.b:
                    names.append(f"{function.signature.name}/{node.name}")
    return sorted(names)


def _check_portable(saved_model_dir):
    names = xla_compiled_functions(saved_model_dir)
    if names:
        raise ValueError(
            f"The SavedModel in {saved_model_dir} holds XLA-compiled functions "
            f"{names[:5]}, which TF Serving cannot run; expected none (trace "
            "inside layers.fused_elman.xla_disabled())."
        )
    pinned = pinned_devices(saved_model_dir)
    if pinned:
        raise ValueError(
            f"The SavedModel in {saved_model_dir} pins nodes to devices "
            f"{pinned[:5]}; expected none, so that it runs on CPU and GPU alike."
        )


def write_saved_model_version(archive, export_base, model_name, metadata, warmup=None):
    """Write a `keras.export.ExportArchive` as the next version of a model.

    The layout is TF Serving's, `<export_base>/<model_name>/<version>/`, where
    `version` is one more than the highest integer directory already there (1
    for the first). The SavedModel and `assets/metadata.json` are written to a
    hidden temporary directory beside the versions and then renamed into
    place, so a server polling the directory sees a version whole or not at
    all (TF Serving and `python -m serving` ignore non-integer names). One
    left by a killed export on this machine is removed first
    (`remove_stale_staging`).

    Args:
        archive: A `keras.export.ExportArchive` with its endpoints added.
        export_base: Directory holding one folder per model name.
        model_name: Folder name of the model, e.g. "transcriber".
        metadata: JSON-serialisable dict written to `assets/metadata.json`;
            the export version and library versions are added to it.
        warmup: Optional list of `(signature_name, {input_name: array})`,
            written as TF Serving's warmup requests
            (`assets.extra/tf_serving_warmup_requests`, see
            `serving.warmup`): TF Serving and `python -m serving` run them
            when they load the version, so no user request pays for the
            first call of a signature.

    Returns:
        The path of the new version directory.
    """
    if not isinstance(model_name, str) or not model_name or os.sep in model_name:
        raise ValueError(
            "Received an invalid value for argument `model_name`, expected a "
            f"non-empty folder name without '{os.sep}', got {model_name!r}."
        )
    if not isinstance(metadata, dict):
        raise TypeError(
            "Received an invalid value for argument `metadata`, expected a "
            f"dict, got {type(metadata).__name__}."
        )
    metadata = _json_ready(metadata, "metadata")
    model_dir = os.path.join(os.fspath(export_base), model_name)
    os.makedirs(model_dir, exist_ok=True)
    for path in remove_stale_staging(model_dir):
        print(f"Removed {path}, left by an export that was killed while writing it")
    staging = tempfile.mkdtemp(prefix=_staging_prefix(), dir=model_dir)
    try:
        # TF Serving's builds cannot run XLA-compiled functions (GPU images
        # fail with "Could not find compiler for platform CUDA", CPU ones need
        # a flag), so the fused Elman loops are traced without jit_compile.
        with xla_disabled():
            archive.write_out(staging, verbose=False)
        _check_portable(staging)

        metadata = {
            **metadata,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "python_version": platform.python_version(),
        }
        os.makedirs(os.path.join(staging, "assets"), exist_ok=True)
        with open(os.path.join(staging, METADATA_PATH), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        if warmup:
            from serving.warmup import write_warmup_requests

            write_warmup_requests(staging, model_name, warmup)
        os.chmod(staging, 0o755)
        # Another exporter may take a number between our look and our rename:
        # renaming onto an existing non-empty directory fails, so try the next.
        version = (_versions(model_dir) or [0])[-1] + 1
        while True:
            target = os.path.join(model_dir, str(version))
            if not os.path.exists(target):
                try:
                    os.rename(staging, target)
                    return target
                except OSError:
                    if not os.path.exists(target):
                        raise
            version += 1
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_metadata(version_dir, task=None):
    """The `assets/metadata.json` dict of an exported version directory.

    With `task` ("transcription" or "language_model"), a ValueError names
    the directory when the export is of another task.
    """
    path = os.path.join(os.fspath(version_dir), METADATA_PATH)
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"Export metadata {path} does not exist; expected a version "
            "directory written by serving.export."
        ) from None
    if task is not None and metadata.get("task") != task:
        kind = {"transcription": "transcriber"}.get(task, task.replace("_", " "))
        raise ValueError(
            f"{version_dir} is not a {kind} export: its assets/metadata.json has task "
            f"{metadata.get('task')!r}, expected {task!r}."
        )
    return metadata


def load_version(version_dir):
    """`tf.saved_model.load(version_dir)`, with a ValueError naming the directory
    when the SavedModel cannot be read (a corrupt or partly copied export)."""
    try:
        return tf.saved_model.load(os.fspath(version_dir))
    except (OSError, ValueError, IndexError, tf.errors.OpError) as error:
        # IndexError: a truncated variables/variables.data-* ("Read less bytes than requested").
        reason = str(getattr(error, "message", error)).strip().splitlines()[0]
        raise ValueError(
            f"Export {version_dir} cannot be loaded as a SavedModel ({reason}); expected a version "
            "directory written by serving.export, copied whole (write it again with "
            "python -m serving.export_run RUN_DIR)."
        ) from None

"""TF Serving's model config file (`--model_config_file`): several models, one server."""

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2


class ModelConfigError(ValueError):
    """A model config file this server cannot serve; the message names the file and the field."""


def parse_text_proto_file(path, message, flag, error_class, expected):
    """`message` filled from the text-format proto file `path` (TF Serving's
    config files), or `error_class` naming `flag`, the file and why: it
    cannot be read, or it does not parse as `message` (`expected` shows the
    form wanted)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise error_class(f"{flag} {path}: cannot be read ({error.strerror}).") from None
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise error_class(f"{flag} {path} is not a text-format {message.DESCRIPTOR.name} this server reads "
                          f"({error}); expected {expected}.") from None
    return message


def read_model_config(path):
    """`{model_name: base_path}` of a TF Serving model config file.

    The file is a text-format `ModelServerConfig`, as `tensorflow_model_server
    --model_config_file` reads it:

        model_config_list {
          config { name: "transcriber" base_path: "/models/transcriber" model_platform: "tensorflow" }
          config { name: "language_model" base_path: "/models/language_model" }
        }

    Each model is served as `--model_name`/`--model_base_path` serve one: its
    highest version (TF Serving's default `latest` policy). A relative
    `base_path` is read from the directory the server runs in. What this server would not honour is refused rather than
    ignored: another platform, a version policy other than the latest
    version, version labels, request logging, and `custom_model_config`.
    """
    config = parse_text_proto_file(
        path, model_server_config_pb2.ModelServerConfig(), "--model_config_file", ModelConfigError,
        'model_config_list { config { name: "NAME" base_path: "DIR" } ... }')
    if config.WhichOneof("config") != "model_config_list":
        found = "custom_model_config" if config.HasField("custom_model_config") else "no model_config_list"
        raise ModelConfigError(f"--model_config_file {path} has {found}; expected a model_config_list.")
    models = {}
    for index, model in enumerate(config.model_config_list.config, start=1):
        where = f"--model_config_file {path}, config {index}"
        if not model.name:
            raise ModelConfigError(f"{where}: `name` is empty; expected the NAME of /v1/models/NAME.")
        where = f"--model_config_file {path}, config {index} ({model.name})"
        if model.name in models:
            raise ModelConfigError(f"{where}: the name {model.name!r} is used twice; expected one config per model.")
        if not model.base_path:
            raise ModelConfigError(f"{where}: `base_path` is empty; expected the directory of its versions.")
        if model.model_platform not in ("", "tensorflow"):
            raise ModelConfigError(f"{where}: model_platform {model.model_platform!r}; this server serves "
                                   "TensorFlow SavedModels only (\"tensorflow\").")
        policy = model.model_version_policy.WhichOneof("policy_choice")
        if policy not in (None, "latest") or (policy == "latest"
                                               and model.model_version_policy.latest.num_versions > 1):
            wanted = (f"latest {{ num_versions: {model.model_version_policy.latest.num_versions} }}"
                      if policy == "latest" else policy)
            raise ModelConfigError(f"{where}: model_version_policy {wanted}; this server serves the highest "
                                   "version only (TF Serving's default, latest with one version).")
        if model.version_labels:
            raise ModelConfigError(f"{where}: version_labels {dict(model.version_labels)}; this server has no "
                                   "version labels (use /versions/N or no version).")
        if model.HasField("logging_config"):
            raise ModelConfigError(f"{where}: logging_config; this server does not log requests.")
        models[model.name] = model.base_path
    if not models:
        raise ModelConfigError(f"--model_config_file {path} lists no model; expected at least one config.")
    return models

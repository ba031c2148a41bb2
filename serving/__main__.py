"""`python -m serving`: serve a model with TF Serving's REST API.

    python -m serving --model_name=transcriber \\
        --model_base_path=runs/transcription/export/transcriber --rest_api_port=8501

The flags are tensorflow_model_server's (its Docker entrypoint's --port is
accepted with a warning: there is no gRPC API); the extra ones set limits.
Several models are served from one `--model_config_file`, and batching is
set by `--batching_parameters_file`, as by tensorflow_model_server. Its flags
for what this server does not do (gRPC, monitoring, per-model batching
parameters...) are refused, named, rather than ignored.
"""

import argparse
import logging
import os
import sys

_GRPC = "this server has no gRPC API (REST only, on --rest_api_port)"
_LABELS = "this server has no version labels (use /versions/N or no version)"
_BATCHING = "batching is set with --batching_parameters_file, or --max_batch_size and --batch_timeout_micros"
# tensorflow_model_server's flags (model_servers/main.cc) that this server does
# not implement: refused, with why, since ignoring them would change what the
# deployment asked for.
_UNSUPPORTED_FLAGS = {
    "allow_version_labels_for_unavailable_models": _LABELS,
    "enable_per_model_batching_parameters": _BATCHING,
    "grpc_socket_path": _GRPC,
    "grpc_channel_arguments": _GRPC,
    "grpc_max_threads": _GRPC,
    "ssl_config_file": _GRPC,
    "use_alts_credentials": _GRPC,
    "saved_model_tags": "the exports have one meta graph (tag serve), which is loaded",
    "platform_config_file": "TensorFlow SavedModels are the only platform",
    "monitoring_config_file": "no Prometheus metrics are exported",
    "xla_cpu_compilation_enabled": "the exports hold no XLA-compiled functions",
    "per_process_gpu_memory_fraction": "GPU memory is TensorFlow's default here",
    "rest_api_num_threads": "requests run on uvicorn's event loop and a thread pool",
    "tensorflow_session_config_file": "the session configuration is TensorFlow's default here",
    "num_load_threads": "versions load one at a time",
    "num_unload_threads": "versions unload one at a time",
    "max_num_load_retries": "a version that fails to load is retried when its directory changes",
    "load_retry_interval_micros": "a version that fails to load is retried when its directory changes",
    "flush_filesystem_caches": "no caches are flushed",
    "remove_unused_fields_from_bundle_metagraph": "the SavedModel is loaded whole",
    "prefer_tflite_model": "TensorFlow Lite models are not served",
    "version": "this is not tensorflow_model_server",
}


def _flag_value_bool(text):
    """tensorflow_model_server's bool flag syntax: --flag, --flag=true, --flag=false."""
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve the highest version under --model_base_path (or of each model a --model_config_file "
        "lists) with TF Serving's REST API "
        "(GET /v1/models/NAME[/metadata], POST /v1/models/NAME:predict) plus "
        "POST /v1/models/NAME:transcribe (multipart audio upload).",
    )
    parser.add_argument("--model_name", help="The NAME in /v1/models/NAME.")
    parser.add_argument("--model_base_path",
                        help="Directory holding integer version directories (1/, 2/, ...), e.g. "
                        "runs/x/export/transcriber, not a version directory itself.")
    parser.add_argument("--model_config_file", metavar="FILE",
                        help="Serve the models a text-format ModelServerConfig lists (model_config_list { "
                        "config { name: ... base_path: ... } ... }), as tensorflow_model_server does; "
                        "--model_name and --model_base_path are then ignored, as there.")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=int, default=0,
                        help="Only 0 (the default, as tensorflow_model_server's): the file is read once at start.")
    parser.add_argument("--rest_api_port", type=int, default=8501, help="HTTP port (default 8501).")
    parser.add_argument("--port", type=int, default=None,
                        help="tensorflow_model_server's gRPC port, accepted so its deployment scripts run; "
                        "this server has no gRPC API and warns that nothing listens on it.")
    parser.add_argument("--enable_batching", type=_flag_value_bool, nargs="?", const=True, default=None,
                        metavar="true|false",
                        help="As tensorflow_model_server's: false turns batching off (--max_batch_size=1); "
                        "batching is on by default here (--max_batch_size).")
    parser.add_argument("--rest_api_enable_cors_support", type=_flag_value_bool, nargs="?", const=True,
                        default=False, metavar="true|false",
                        help="As tensorflow_model_server's: send CORS headers (any origin, POST and GET, "
                        "Content-Type) so a web page of another origin can call the API; browsers' "
                        "preflight OPTIONS requests are answered 200.")
    parser.add_argument("--enable_model_warmup", type=_flag_value_bool, nargs="?", const=True, default=True,
                        metavar="true|false",
                        help="As tensorflow_model_server's (default true): run a version's warmup requests "
                        "(assets.extra/tf_serving_warmup_requests, written by the exports) before serving it.")
    parser.add_argument("--num_request_iterations_for_warmup", type=int, default=1,
                        help="Times each warmup request runs (default 1; used only if above 0, as "
                        "tensorflow_model_server's).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to bind (default 127.0.0.1, this machine only; 0.0.0.0 for all).")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="Seconds between scans for new versions (default 1; 0 or less: only the "
                        "scan at start, as tensorflow_model_server's 0).")
    parser.add_argument("--max_request_bytes", type=int, default=32 * 1024 * 1024,
                        help="Largest request body accepted, in bytes (default 32 MiB).")
    parser.add_argument("--max_audio_seconds", type=float, default=60.0,
                        help="Longest audio accepted, in seconds (default 60).")
    parser.add_argument("--max_new_chars", type=int, default=2000,
                        help="Largest max_new_chars accepted for generation (default 2000).")
    parser.add_argument("--max_text_chars", type=int, default=10000,
                        help="Longest prompt (generation) or scored text accepted, in characters (default 10000).")
    parser.add_argument("--max_batch_size", type=int, default=None,
                        help="Most requests merged into one model call (default 32; 1 turns batching off).")
    parser.add_argument("--batch_timeout_micros", type=int, default=None,
                        help="Longest wait for a batch to fill (default 0: batch only the requests "
                        "that queued while the model was busy).")
    parser.add_argument("--batching_parameters_file", metavar="FILE",
                        help="tensorflow_model_server's text-format BatchingParameters (max_batch_size, "
                        "batch_timeout_micros, num_batch_threads, max_enqueued_batches { value: N }); "
                        "instead of --max_batch_size and --batch_timeout_micros.")
    parser.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                        help="A :predict or :transcribe request's deadline, in ms (default 30000, as "
                        "tensorflow_model_server's; 0 or less: none). Past it the answer is 504; a model "
                        "call already running finishes in the background, its result dropped.")
    for name, what in (("session", "both of TensorFlow's thread pools"),
                       ("intra_op", "the threads that run one op"),
                       ("inter_op", "the ops run at once")):
        parser.add_argument(f"--tensorflow_{name}_parallelism", type=int, default=0,
                            help=f"As tensorflow_model_server's: the size of {what} (default 0: TensorFlow's "
                            "choice)." + (" Not with the two below." if name == "session" else ""))
    parser.add_argument("--access_log", action="store_true", help="Log every request.")
    return parser


def main(argv=None):
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    for arg in unknown:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name[2:] in _UNSUPPORTED_FLAGS:
            parser.error(f"{name} is a tensorflow_model_server flag that this server does not implement: "
                         f"{_UNSUPPORTED_FLAGS[name[2:]]}.")
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    batching = {"max_concurrent_batches": 2, "max_enqueued_batches": None}
    if args.batching_parameters_file is not None:
        given = [f"--{name}" for name in ("max_batch_size", "batch_timeout_micros") if getattr(args, name) is not None]
        if given:
            _parser().error(f"{' and '.join(given)} with --batching_parameters_file: set the batching in one place "
                            "(the file's max_batch_size and batch_timeout_micros)")
        from serving.batching_config import BatchingConfigError, read_batching_parameters

        try:
            settings = read_batching_parameters(args.batching_parameters_file)
        except BatchingConfigError as error:
            _parser().error(str(error))
        args.max_batch_size = settings["max_batch_size"]
        args.batch_timeout_micros = (None if settings["batch_timeout_s"] is None
                                     else round(settings["batch_timeout_s"] * 1e6))
        for key in batching:
            if settings[key] is not None:
                batching[key] = settings[key]
    if args.max_batch_size is None:
        args.max_batch_size = 32
    if args.batch_timeout_micros is None:
        args.batch_timeout_micros = 0
    for name in ("rest_api_port", "max_request_bytes", "max_batch_size", "max_text_chars"):
        if getattr(args, name) <= 0:
            _parser().error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.rest_api_port > 65535:
        _parser().error(f"--rest_api_port must be a port number in 1..65535, got {args.rest_api_port}")
    if args.tensorflow_session_parallelism > 0 and (args.tensorflow_intra_op_parallelism > 0
                                                    or args.tensorflow_inter_op_parallelism > 0):
        # tensorflow_model_server's own refusal (server.cc).
        _parser().error("either configure --tensorflow_session_parallelism or (--tensorflow_intra_op_parallelism, "
                        "--tensorflow_inter_op_parallelism) separately; you cannot configure all")
    if args.model_config_file_poll_wait_seconds != 0:
        _parser().error(f"--model_config_file_poll_wait_seconds={args.model_config_file_poll_wait_seconds}: this "
                        "server reads --model_config_file once at start (0, the default, as tensorflow_model_server's)")
    if args.model_config_file is not None:
        from serving.model_config import ModelConfigError, read_model_config

        try:
            models = read_model_config(args.model_config_file)
        except ModelConfigError as error:
            _parser().error(str(error))
        ignored = [f"--{name}" for name in ("model_name", "model_base_path") if getattr(args, name) is not None]
        if ignored:
            print(f"python -m serving: warning: {' and '.join(ignored)} ignored: the models are those of "
                  f"--model_config_file {args.model_config_file} (as in tensorflow_model_server).", file=sys.stderr)
        where = {name: f"base_path {base} of model {name!r} in --model_config_file {args.model_config_file}"
                 for name, base in models.items()}
    else:
        missing = [f"--{name}" for name in ("model_name", "model_base_path") if getattr(args, name) is None]
        if missing:
            _parser().error(f"the following arguments are required: {', '.join(missing)} "
                            "(or --model_config_file for several models)")
        models = {args.model_name: args.model_base_path}
        where = {args.model_name: f"--model_base_path {args.model_base_path}"}
    for name, base in models.items():
        if not os.path.isdir(base):
            _parser().error(f"{where[name]} is not a directory")
    if args.port is not None:
        print(f"python -m serving: warning: --port={args.port} is tensorflow_model_server's gRPC port; this "
              f"server has no gRPC API: nothing listens on it (REST on --rest_api_port={args.rest_api_port}).",
              file=sys.stderr)
    if args.enable_batching is False:
        args.max_batch_size = 1
        if args.batching_parameters_file is not None:
            print(f"python -m serving: warning: --batching_parameters_file {args.batching_parameters_file} "
                  "ignored: --enable_batching=false turns batching off.", file=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name, base in models.items():
        if os.path.isfile(os.path.join(base, "saved_model.pb")):
            from serving.model_paths import missing_versions_message, version_directories

            # A version directory given as the base: no version would ever
            # appear in it, so every request would get 404. (A base without
            # versions yet is waited on, with a warning, as TF Serving does.)
            if not version_directories(base):
                _parser().error(missing_versions_message(name, os.path.abspath(base)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import tensorflow as tf
    import uvicorn

    from serving.server import create_app

    # Before any op runs (the models load in the app's lifespan), as TF
    # Serving sets its session's thread pools.
    intra = args.tensorflow_intra_op_parallelism or args.tensorflow_session_parallelism
    inter = args.tensorflow_inter_op_parallelism or args.tensorflow_session_parallelism
    if intra > 0:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter > 0:
        tf.config.threading.set_inter_op_parallelism_threads(inter)

    app = create_app(
        models=models,
        poll_seconds=args.file_system_poll_wait_seconds,
        max_request_bytes=args.max_request_bytes,
        max_audio_seconds=args.max_audio_seconds,
        max_new_chars=args.max_new_chars,
        max_text_chars=args.max_text_chars,
        max_batch_size=args.max_batch_size,
        batch_timeout_s=args.batch_timeout_micros / 1e6,
        **batching,
        rest_api_timeout_s=args.rest_api_timeout_in_ms / 1000 if args.rest_api_timeout_in_ms > 0 else None,
        cors=args.rest_api_enable_cors_support,
        warmup_iterations=(max(args.num_request_iterations_for_warmup, 0) or 1) if args.enable_model_warmup else 0,
    )
    # A long keep-alive: with a short one, a client reusing a pooled
    # connection just as the server closes it sees a reset (a failed request).
    uvicorn.run(app, host=args.host, port=args.rest_api_port, access_log=args.access_log,
                log_level="info", timeout_keep_alive=75)
    return 0


if __name__ == "__main__":
    sys.exit(main())

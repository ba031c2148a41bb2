"""`python -m serving`: serve a model with TF Serving's REST API.

    python -m serving --model_name=transcriber \\
        --model_base_path=runs/transcription/export/transcriber --rest_api_port=8501

The flags are tensorflow_model_server's; the extra ones set limits.
"""

import argparse
import logging
import os
import sys


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve the highest version under --model_base_path with TF Serving's REST API "
        "(GET /v1/models/NAME[/metadata], POST /v1/models/NAME:predict) plus "
        "POST /v1/models/NAME:transcribe (multipart audio upload).",
    )
    parser.add_argument("--model_name", required=True, help="The NAME in /v1/models/NAME.")
    parser.add_argument("--model_base_path", required=True,
                        help="Directory holding integer version directories (1/, 2/, ...), e.g. "
                        "runs/x/export/transcriber, not a version directory itself.")
    parser.add_argument("--rest_api_port", type=int, default=8501, help="HTTP port (default 8501).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to bind (default 127.0.0.1, this machine only; 0.0.0.0 for all).")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="Seconds between scans for new versions (default 1).")
    parser.add_argument("--max_request_bytes", type=int, default=32 * 1024 * 1024,
                        help="Largest request body accepted, in bytes (default 32 MiB).")
    parser.add_argument("--max_audio_seconds", type=float, default=60.0,
                        help="Longest audio accepted, in seconds (default 60).")
    parser.add_argument("--max_new_chars", type=int, default=2000,
                        help="Largest max_new_chars accepted for generation (default 2000).")
    parser.add_argument("--max_text_chars", type=int, default=10000,
                        help="Longest prompt (generation) or scored text accepted, in characters (default 10000).")
    parser.add_argument("--max_batch_size", type=int, default=32,
                        help="Most requests merged into one model call (default 32; 1 turns batching off).")
    parser.add_argument("--batch_timeout_micros", type=int, default=0,
                        help="Longest wait for a batch to fill (default 0: batch only the requests "
                        "that queued while the model was busy).")
    parser.add_argument("--access_log", action="store_true", help="Log every request.")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    for name in ("rest_api_port", "max_request_bytes", "max_batch_size", "max_text_chars"):
        if getattr(args, name) <= 0:
            _parser().error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.rest_api_port > 65535:
        _parser().error(f"--rest_api_port must be a port number in 1..65535, got {args.rest_api_port}")
    if not os.path.isdir(args.model_base_path):
        _parser().error(f"--model_base_path {args.model_base_path} is not a directory")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.path.isfile(os.path.join(args.model_base_path, "saved_model.pb")):
        from serving.model_store import missing_versions_message, version_directories

        # A version directory given as the base: no version would ever appear
        # in it, so every request would get 404. (A base without versions
        # yet is waited on, with a warning, as TF Serving does.)
        if not version_directories(args.model_base_path):
            _parser().error(missing_versions_message(args.model_name, os.path.abspath(args.model_base_path)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import uvicorn

    from serving.server import create_app

    app = create_app(
        args.model_name,
        args.model_base_path,
        poll_seconds=args.file_system_poll_wait_seconds,
        max_request_bytes=args.max_request_bytes,
        max_audio_seconds=args.max_audio_seconds,
        max_new_chars=args.max_new_chars,
        max_text_chars=args.max_text_chars,
        max_batch_size=args.max_batch_size,
        batch_timeout_s=args.batch_timeout_micros / 1e6,
    )
    # A long keep-alive: with a short one, a client reusing a pooled
    # connection just as the server closes it sees a reset (a failed request).
    uvicorn.run(app, host=args.host, port=args.rest_api_port, access_log=args.access_log,
                log_level="info", timeout_keep_alive=75)
    return 0


if __name__ == "__main__":
    sys.exit(main())

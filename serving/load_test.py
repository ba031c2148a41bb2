"""Load test for `python -m serving`: N concurrent clients x M requests each.

    python -m serving.load_test --model_name=transcriber --kind=transcribe \\
        --clients=64 --requests=50 [--audio=speech.wav | --seconds=5]
    python -m serving.load_test --model_name=language_model --kind=generate \\
        --clients=64 --requests=50 --prompt="ROMEO:" --max_new_chars=50

A bounded asyncio load generator on 127.0.0.1 by default: one
httpx.AsyncClient (one connection) per simulated client. Each client sends its requests one after another; the
report gives the throughput (successful requests a second over the whole run) and the latency percentiles
(numpy's linear interpolation; `max` is the slowest) of the successful requests. A failure (any non-200
answer or transport error) is counted, and a few are shown, but its time is no latency: a server that
refuses at once would otherwise look fast. One request is sent and timed apart first, to warm the server
up; when it fails or its answer is not JSON, nothing is measured (exit 2, as when no server answers).
Exit 1 when any request of the run failed.
"""

import argparse
import asyncio
import io
import json
import os
import sys
import time

import numpy as np


def speech_like_audio(seconds, sample_rate=16000, seed=0):
    """A deterministic speech-like test signal: voiced segments (a pulse
    train at a moving pitch, shaped by two formant resonances), noise bursts
    and pauses. For load only; it carries no words."""
    import scipy.signal

    rng = np.random.default_rng(seed)
    pieces, total = [], int(seconds * sample_rate)
    while sum(map(len, pieces)) < total:
        n = int(rng.uniform(0.06, 0.2) * sample_rate)
        if rng.random() < 0.2:
            piece = 0.03 * rng.standard_normal(n)
        else:
            phase = np.cumsum(rng.uniform(90, 220) * np.linspace(0.9, 1.1, n) / sample_rate)
            piece = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
            for formant, bandwidth in ((rng.uniform(300, 900), 80), (rng.uniform(900, 2500), 120)):
                r = np.exp(-np.pi * bandwidth / sample_rate)
                theta = 2 * np.pi * formant / sample_rate
                piece = scipy.signal.lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], piece)
            piece = 0.3 * piece / (np.abs(piece).max() + 1e-9) * np.hanning(n)
        pieces.append(piece)
    return np.concatenate(pieces)[:total].astype(np.float32)


def _request_factory(args):
    """`(method kwargs for httpx, path)` of the request every client repeats."""
    base = f"/v1/models/{args.model_name}"
    if args.kind == "transcribe":
        import soundfile as sf

        if args.audio:
            with open(args.audio, "rb") as f:
                data = f.read()
            name = args.audio
        else:
            buffer = io.BytesIO()
            sf.write(buffer, speech_like_audio(args.seconds), 16000, subtype="PCM_16", format="WAV")
            data, name = buffer.getvalue(), "speech.wav"
        return base + ":transcribe", {"files": {"file": (name, data, "application/octet-stream")}}
    body = {"inputs": {"prompt": [args.prompt], "max_new_chars": args.max_new_chars,
                       "temperature": args.temperature}}
    return base + ":predict", {"json": body}


class WarmUpFailed(Exception):
    """The warm-up request got an answer that is not a model's: nothing to measure."""


async def _run(args):
    import httpx

    path, request = _request_factory(args)
    timeout = httpx.Timeout(args.timeout)
    # One client (one connection) per simulated user: a single shared
    # AsyncClient's connection pool, not the server, limits throughput at
    # high concurrency (httpcore's pool).
    clients = [httpx.AsyncClient(base_url=args.url, timeout=timeout) for _ in range(args.clients)]
    try:
        start = time.perf_counter()
        warm = await clients[0].post(path, **request)
        warmup_ms = 1000 * (time.perf_counter() - start)
        if warm.status_code != 200:
            raise WarmUpFailed(f"answered {warm.status_code}: {warm.text[:500]}")
        try:
            example_response = warm.json()
        except ValueError:
            raise WarmUpFailed(f"answered 200 with a body that is not JSON: {warm.text[:500]}") from None
        latencies, failures = [], []

        async def one_client(client):
            for _ in range(args.requests):
                began = time.perf_counter()
                try:
                    response = await client.post(path, **request)
                    ok = response.status_code == 200
                    detail = None if ok else f"{response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as error:
                    ok, detail = False, f"{type(error).__name__}: {error}"
                if ok:
                    latencies.append(time.perf_counter() - began)
                else:
                    failures.append(detail)

        began = time.perf_counter()
        await asyncio.gather(*(one_client(client) for client in clients))
        wall = time.perf_counter() - began
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    latencies_ms = 1000 * np.array(latencies)
    report = {
        "kind": args.kind,
        "url": args.url + path,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "requests": len(latencies) + len(failures),
        "failures": len(failures),
        "wall_seconds": round(wall, 3),
        "throughput_rps": round(len(latencies) / wall, 2),  # successful requests a second
        "warmup_ms": round(warmup_ms, 1),
        # of the successful requests; None when none succeeded
        "latency_ms": {p: round(float(np.percentile(latencies_ms, q)), 1)
                       for p, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))} if latencies else None,
        "first_failures": failures[:3],
        "example_response": example_response,
    }
    if args.kind == "transcribe":
        report["audio"] = args.audio or f"{args.seconds:g} s synthetic speech-like signal"
    else:
        report["generation"] = {"prompt": args.prompt, "max_new_chars": args.max_new_chars,
                                "temperature": args.temperature}
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m serving.load_test", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8501", help="Server address (default http://127.0.0.1:8501).")
    parser.add_argument("--model_name", required=True, help="The NAME in /v1/models/NAME.")
    parser.add_argument("--kind", choices=("transcribe", "generate"), required=True,
                        help="transcribe: POST :transcribe with an audio file; generate: POST :predict to a language model.")
    parser.add_argument("--clients", type=int, default=64, help="Concurrent clients (default 64).")
    parser.add_argument("--requests", type=int, default=50, help="Requests per client (default 50).")
    parser.add_argument("--audio", default=None, help="Audio file to upload (default: a synthetic signal of --seconds).")
    parser.add_argument("--seconds", type=float, default=5.0, help="Length of the synthetic signal (default 5).")
    parser.add_argument("--prompt", default="ROMEO:", help="Generation prompt.")
    parser.add_argument("--max_new_chars", type=int, default=50, help="Characters generated per request (default 50).")
    parser.add_argument("--temperature", type=float, default=0.8, help="Sampling temperature (default 0.8).")
    parser.add_argument("--timeout", type=float, default=120.0, help="Per-request timeout in seconds.")
    args = parser.parse_args(argv)
    for name in ("clients", "requests"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    for name in ("seconds", "timeout"):
        if not 0 < getattr(args, name) < float("inf"):
            parser.error(f"--{name} must be a positive number of seconds, got {getattr(args, name)}")
    if args.max_new_chars < 0:
        parser.error(f"--max_new_chars must be >= 0, got {args.max_new_chars}")
    if args.audio is not None and not os.path.isfile(args.audio):
        parser.error(f"--audio {args.audio} is not a file; expected an audio file to upload")
    if not args.url.startswith(("http://", "https://")):
        parser.error(f"--url must start with http:// or https://, got {args.url!r}")
    import httpx

    try:
        httpx.URL(args.url)
    except httpx.InvalidURL as error:
        parser.error(f"--url {args.url!r} is not a URL ({error}); expected http://HOST:PORT")
    args.url = args.url.rstrip("/")  # the report's url: http://HOST:PORT/v1/..., not ...PORT//v1/...

    try:
        report = asyncio.run(_run(args))
    except httpx.HTTPError as error:  # the warm-up request: no server there, or it timed out
        print(f"load_test: error: no answer from {args.url} ({type(error).__name__}: {error}); expected a running "
              f"server (python -m serving ...) with model {args.model_name!r}.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("load_test: interrupted; nothing was reported.", file=sys.stderr)
        return 130
    except WarmUpFailed as error:
        url = args.url + f"/v1/models/{args.model_name}:" + (
            "transcribe" if args.kind == "transcribe" else "predict")
        print(f"load_test: error: the warm-up request to {url} {error}; nothing was measured: expected a server "
              f"(python -m serving ...) serving model {args.model_name!r} of kind {args.kind}.", file=sys.stderr)
        return 2
    from training.cli import print_lines

    print_lines([json.dumps(report, indent=2, ensure_ascii=False)])  # `| head` ends it quietly
    return 0 if report["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

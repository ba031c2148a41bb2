"""Start a distributed keras-tuner search on one machine: a chief and N workers.

    python -m tuning.distributed --workers 2 --port 8000 -- \\
        python train.py --task language_model --tune --tuner random --max-trials 8

runs the command three times with keras-tuner's variables set:
`KERASTUNER_TUNER_ID=chief` (serves the oracle on `--host:--port` and, once
every trial is done, writes the trials table, the best model and its export),
then, once the chief listens, `tuner1` .. `tunerN` (each asks the chief for
trials until there are none left). Every process exits by itself; this
launcher waits for all of them and fails if one fails or `--timeout` passes.
One case does not end by itself: when the other workers have run every trial
before a worker first asks (a small search, a slow start), the chief
finishes without it and keras-tuner's client would wait up to an hour for
an oracle that is gone. Such a worker is stopped `--worker-grace` seconds
(60) after the chief has finished and reported as having had no trial; it
is not a failure.

On several machines, run the same `train.py` command on each with the
variables set by hand (see the README): the chief's `KERASTUNER_ORACLE_IP`
is the address it binds (its own address, or 0.0.0.0), the workers' the
address where they reach it.
"""

import argparse
import errno
import math
import os
import signal
import socket
import subprocess
import sys
import time


def _listening(host, port):
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def port_error(host, port):
    """Why the oracle cannot serve on `host:port` (in use, or not an address of
    this machine), or None when it can: checked before anything starts, since
    another program listening there would pass for the chief."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds
            probe.bind((host, port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            return f"port {port} is already in use on {host}; expected a free port for the oracle"
        return f"{host}:{port} cannot be bound ({error.strerror or error}); expected an address of this machine"
    return None


class PortError(ValueError):
    """`launch_search` cannot serve the oracle on its port: `reason` says why (`port_error`)."""

    def __init__(self, reason):
        super().__init__(f"Received an invalid value for argument `port`: {reason}.")
        self.reason = reason


def _stop(processes):
    for process in processes:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# Seconds a worker may take to exit after the chief has finished; a worker
# still running then never got a trial (see the module's docstring).
WORKER_GRACE_SECONDS = 60.0


def launch_search(command, *, workers, port, host="127.0.0.1", timeout=None, log_dir=None, env=None,
                  worker_grace=WORKER_GRACE_SECONDS):
    """Run `command` as a keras-tuner chief and `workers` workers; wait for all.

    Args:
        command: The argv of the search command, e.g. `[sys.executable,
            "train.py", "--task", "language_model", "--tune"]`.
        workers: Positive integer, the number of worker processes.
        port: The oracle's TCP port.
        host: The oracle's address (default 127.0.0.1: this machine only).
        timeout: Optional seconds after which every process is stopped and
            `TimeoutError` raised.
        log_dir: Optional folder for `chief.log`, `tuner1.log`, ...; by
            default the processes write to this process's stdout/stderr.
        env: Optional base environment (default `os.environ`).
        worker_grace: Seconds a worker may still run after the chief has
            exited with code 0 (every trial done and every worker that had
            one told to stop); a worker still running then is waiting for an
            oracle that is gone, and is stopped.

    Returns:
        `{tuner_id: exit code}` for the chief and every worker; `None` for a
        worker stopped because the chief finished before it got a trial.

    Raises:
        ValueError: for a bad `workers` or `port` (`PortError` when the port
            cannot be bound).
        TimeoutError: when `timeout` passes first (all processes stopped).
        RuntimeError: when the chief exits before it listens.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"Received an invalid value for argument `workers`, expected a positive integer, got {workers!r}.")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"Received an invalid value for argument `port`, expected an integer in 1..65535, got {port!r}.")
    if not command:
        raise ValueError("Received an empty `command`; expected the search command's argv.")
    if isinstance(worker_grace, bool) or not isinstance(worker_grace, (int, float)) or not worker_grace >= 0:
        raise ValueError(f"Received an invalid value for argument `worker_grace`, expected a non-negative number "
                         f"of seconds, got {worker_grace!r}.")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise ValueError(f"Received an invalid value for argument `timeout`, expected a positive number of "
                         f"seconds, got {timeout!r}.")
    error = port_error(host, port)
    if error is not None:
        raise PortError(error)
    base = dict(os.environ if env is None else env)
    base.update(KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=str(port))
    deadline = None if timeout is None else time.monotonic() + timeout
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    processes = {}
    logs = []

    def start(tuner_id):
        output = None
        if log_dir:
            output = open(os.path.join(log_dir, f"{tuner_id}.log"), "wb")
            logs.append(output)
        processes[tuner_id] = subprocess.Popen(
            command,
            env={**base, "KERASTUNER_TUNER_ID": tuner_id},
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,  # its own process group, so a timeout stops its children too
        )

    try:
        start("chief")
        # Workers start once the oracle listens, so that data preparation
        # (and its caches) happens once, in the chief, before them.
        while not _listening(host, port):
            if processes["chief"].poll() is not None:
                raise RuntimeError(
                    f"The chief exited with code {processes['chief'].returncode} before "
                    f"serving the oracle on {host}:{port}."
                )
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"The chief did not listen on {host}:{port} within {timeout} s.")
            time.sleep(0.5)
        for index in range(1, workers + 1):
            start(f"tuner{index}")
        # A chief that fails stops the workers: they would wait for its oracle forever.
        chief_done = None  # when the chief exited with code 0
        while processes["chief"].poll() is None or (
            processes["chief"].returncode == 0 and any(p.poll() is None for p in processes.values())
        ):
            if deadline is not None and time.monotonic() > deadline:
                running = next(tuner_id for tuner_id, p in processes.items() if p.poll() is None)
                raise TimeoutError(
                    f"The distributed search did not finish within {timeout} s "
                    f"({running} still running); every process was stopped."
                )
            if processes["chief"].returncode == 0:
                chief_done = chief_done or time.monotonic()
                if time.monotonic() - chief_done > worker_grace:
                    break
            time.sleep(0.2)
        idle = [tuner_id for tuner_id, p in processes.items()
                if p.poll() is None and processes["chief"].returncode == 0]
        _stop(list(processes.values()))
        return {tuner_id: None if tuner_id in idle else process.returncode
                for tuner_id, process in processes.items()}
    finally:
        _stop(list(processes.values()))
        for output in logs:
            output.close()


def main(argv=None):
    """Command line: `python -m tuning.distributed [options] -- COMMAND ...`."""
    parser = argparse.ArgumentParser(
        prog="python -m tuning.distributed",
        description="Run a search command as a keras-tuner chief plus N workers on this machine.",
        epilog="Example: python -m tuning.distributed --workers 2 -- python train.py --task language_model --tune",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--port", type=int, default=8000, help="the oracle's port (default: 8000)")
    parser.add_argument("--host", default="127.0.0.1", help="the oracle's address (default: 127.0.0.1)")
    parser.add_argument("--timeout", type=float, default=None, help="stop everything after this many seconds")
    parser.add_argument("--log-dir", default=None, help="write chief.log, tuner1.log, ... here")
    parser.add_argument("--worker-grace", type=float, default=WORKER_GRACE_SECONDS,
                        help="seconds a worker may still run after the chief has finished; one still running "
                             "then never got a trial and is stopped (default: %(default)g)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the search command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("expected the search command after --, e.g. -- python train.py --task language_model --tune")
    if any(os.path.basename(arg) == "train.py" for arg in command) and "--tune" not in command:
        # Without it the "chief" trains one model and never serves an oracle.
        parser.error("the search command runs train.py without --tune; expected a search, "
                     "e.g. -- python train.py --task language_model --tune")
    if args.workers < 1:
        parser.error(f"argument --workers: expected a positive integer, got {args.workers}")
    if not 0 < args.port < 65536:
        parser.error(f"argument --port: expected an integer in 1..65535, got {args.port}")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        parser.error(f"argument --timeout: expected a positive number of seconds, got {args.timeout:g}")
    if not (math.isfinite(args.worker_grace) and args.worker_grace >= 0):
        parser.error(f"argument --worker-grace: expected a non-negative number of seconds, got {args.worker_grace:g}")
    chief_output = (os.path.join(args.log_dir, "chief.log") if args.log_dir
                    else "this terminal, above")
    # The processes run in sessions of their own (so a timeout can stop their
    # children): a SIGTERM to this launcher stops them too, as Ctrl-C does.
    previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        codes = launch_search(
            command,
            workers=args.workers,
            port=args.port,
            host=args.host,
            timeout=args.timeout,
            log_dir=args.log_dir,
            worker_grace=args.worker_grace,
        )
    except PortError as error:  # checked once, by launch_search, before anything starts
        parser.error(f"argument --port: {error.reason}, got {args.port}")
    except ValueError as error:
        parser.error(str(error))
    except (RuntimeError, TimeoutError) as error:  # TimeoutError before OSError, its base class
        print(f"{parser.prog}: error: {error} The chief's output: {chief_output}.", file=sys.stderr, flush=True)
        return 1
    except OSError as error:  # the command cannot be run (not found, not executable), or --log-dir not made
        if error.filename == command[0]:
            parser.error(f"the search command {command[0]!r} cannot be run: {error.strerror or error}; "
                         "expected an executable program after --")
        parser.error(f"argument --log-dir {args.log_dir}: {error.strerror or error}; expected a directory to write")
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    print("[tuning] exit codes: " + ", ".join(f"{k}={'stopped' if v is None else v}" for k, v in codes.items()),
          flush=True)
    for tuner_id in (k for k, v in codes.items() if v is None):
        print(f"[tuning] {tuner_id} got no trial: the other workers had run every trial and the chief had "
              f"finished; still waiting for the oracle {args.worker_grace:g} s later, it was stopped.", flush=True)
    if codes["chief"] != 0:
        print(f"{parser.prog}: error: the chief exited with code {codes['chief']} (the workers were stopped). "
              f"The chief's output: {chief_output}.", file=sys.stderr, flush=True)
    return 0 if all(code in (0, None) for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

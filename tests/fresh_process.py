"""Helpers for tests that run in a fresh Python: loading an export (or `saved_model_cli`) as a
server would, and the command-line scripts' answers before TensorFlow is imported."""

import json
import os
import subprocess
import sys

# The project's top-level packages: a fresh process that loads an export must import none of them.
PROJECT_PACKAGES = ("layers", "models", "pipelines", "serving", "training", "tuning", "benchmarks")


def clean_env(**extra):
    """The environment without the inherited PYTHONPATH, on CPU, with TensorFlow's log quiet;
    `extra` sets more variables (e.g. `PYTHONPATH=ROOT` for a script that runs project code)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def run_side_by_side(commands, cwd, timeout=300):
    """Runs `{name: argv}` at once in `cwd` (each mostly imports TensorFlow);
    returns `{name: subprocess.CompletedProcess}` with text stdout and stderr."""
    running = {name: subprocess.Popen(command, cwd=cwd, env=clean_env(), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name, command in commands.items()}
    results = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=timeout)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results


def exits_before_tensorflow(module, argvs, cwd):
    """Calls `module.main(argv)` for each of `argvs` in one fresh Python (a command-line
    script that should answer --help and bad arguments without importing TensorFlow).

    Returns `(exit codes, stderr, which of tensorflow and keras were imported)`;
    a call that returns instead of exiting gives what it returned.
    """
    code = (
        "import json, sys\n"
        f"import {module}\n"
        "codes = []\n"
        f"for argv in {list(argvs)!r}:\n"
        "    try:\n"
        f"        codes.append({module}.main(argv))\n"
        "    except SystemExit as stop:\n"
        "        codes.append(stop.code)\n"
        "print(json.dumps([codes, sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=clean_env())
    assert done.returncode == 0 and done.stdout.strip(), done.stdout + done.stderr
    codes, imported = json.loads(done.stdout.strip().splitlines()[-1])
    return codes, done.stderr, imported

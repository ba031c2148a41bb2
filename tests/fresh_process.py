"""Helpers for tests that load an export in a fresh Python (or `saved_model_cli`), as a server would."""

import os
import subprocess

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

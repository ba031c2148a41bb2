"""What machine a benchmark ran on, for its printed header and JSON report.

The project's figures come from a shared VM whose hardware has changed
between sessions (an Intel Xeon with AMX until 2026-12-04, an AMD EPYC
since): every report names the CPU it was measured on.
"""

import os
import platform

from pipelines.cores import usable_cores


def cpu_model(cpuinfo="/proc/cpuinfo"):
    """The CPU's model name: Linux's `/proc/cpuinfo` `model name` line, else
    `platform.processor()`, else "unknown"."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe():
    """One line: the CPU model and the logical CPUs this process may use."""
    return f"{cpu_model()}, {usable_cores()} logical CPUs for this process ({os.cpu_count()} on the machine)"

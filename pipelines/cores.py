"""How many CPU cores this process may run on.

`os.cpu_count()` counts the host's cores, also in a container or under
`taskset` that gives the process only a few of them. TensorFlow sizes its
thread pools from the cores the process may be scheduled on (its
`port::NumSchedulableCPUs`, the scheduler's affinity mask), and so do the
project's choices made per core (the fused loop's batch shards, the feature
extraction threads, the synthesis workers). Python 3.13's
`os.process_cpu_count()` is the same count.
"""

import os


def usable_cores():
    """The cores in this process's affinity mask (at least 1); where the
    platform has no affinity mask (macOS, Windows), `os.cpu_count()`."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13
    if counter is not None:
        return max(1, counter() or 1)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)

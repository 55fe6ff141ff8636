"""What the engine benchmarks (decode.py, train.py) measure alike: call times and the process's peak memory."""

from __future__ import annotations

import time
from typing import Callable


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (``VmHWM``), MiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def time_calls(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` (warm it up before)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times

"""What the engine benchmarks (decode.py, train.py) do alike: time calls, read the process's peak memory,
run one engine in a fresh worker process, and compare engines round by round."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Sequence


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


def run_worker(script: str, args: Sequence[str], threads: int, what: str) -> dict:
    """Run ``python script *args`` with ``threads`` OpenMP threads and return the JSON object on its last
    line of output; on failure print its stderr and stop, naming ``what`` failed."""
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        raise SystemExit(f"{what} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_ratio(ours: Sequence[float], theirs: Sequence[float]) -> float:
    """The median over rounds of the ratio measured within each round (``ours[i] / theirs[i]``)."""
    return statistics.median(a / b for a, b in zip(ours, theirs))

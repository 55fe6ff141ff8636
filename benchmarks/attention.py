"""Attention speed and memory, as ratios against PyTorch's fused kernel measured in the same run.

    python benchmarks/attention.py                      # N = 128, 512, 2048, 8192, 16384
    python benchmarks/attention.py --sizes 128,2048 --repeats 9 --json figures.json

Self-attention ``q = k = v``: random float32 ``(b=1, h=8, N, d=64)``, inference under
``torch.inference_mode()``. For each N the methods below are timed against
``torch.nn.functional.scaled_dot_product_attention(q, q, q)`` ("SDPA"):

- ``auto``      ``attend(q, q, q)``                      (backend="auto", no weights)
- ``auto+w``    ``attend(q, q, q, need_weights=True)``   (also returns the (1, 8, N, N) weights)
- ``eager``     ``attend(q, q, q, backend="eager")``
- ``sdpa``      ``attend(q, q, q, backend="sdpa")``
- ``chunked``   ``attend(q, q, q, backend="chunked")``

Timing. Every repeat runs every method once (small N: a batch of calls lasting ~20 ms, reported per
call), in a fresh random order each repeat, for at least ``--repeats`` repeats and ``--min-seconds``
seconds (small N get many repeats: one batch is noisy, the median of many is not), so that load which comes and goes on a shared machine
falls on all methods alike and no method always follows the same one. A method's ratio is the median
over repeats of its time divided by SDPA's time *in the same repeat*; the table also gives SDPA's
median time. Steady load from other processes still hurts a method made of many small operations more
than one fused kernel, so the run prints the load average. Order matters for another reason on these
machines: memory freed more than ~2 s earlier has been handed back to the host and is slow to touch
again, so a method that allocates gigabytes right after another freed them is faster than one that
allocates them after a pause.

Memory. "Peak extra memory" is the growth of the process's resident set size to its peak during one
call, measured in a fresh subprocess per (method, N): the child allocates and touches the inputs, warms
the method up once at N=64 (so one-time library set-up is not counted), resets the kernel's peak-RSS
mark (``/proc/self/clear_refs``), reads its current RSS, makes one call and reads the peak (``VmHWM``
in ``/proc/self/status``; not ``getrusage``, whose ``ru_maxrss`` in a child starts from the parent's
peak). Library code that the kernel paged out and faulted back in during the call (growth of
``RssFile``) is subtracted. The median over three such processes is reported (one above N=2048). This
counts every page the call touched that was not already resident — temporaries *and* the returned
tensors (the context is 2 MiB per 1024 positions; with weights add the 8·N²·4 B of weights) — the
real cost in pages on this machine, not an allocator's bookkeeping.

Skipped: ``eager`` and ``auto+w`` at N > 8192, where one (1, 8, N, N) float32 tensor is 8 GiB or more;
the table says "skip". The optional ``--backward N`` row times forward + backward (training mode,
gradients for q, k and v) at one N.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from attnkit.attention import attend

HEADS, HEAD_DIM = 8, 64
METHODS = ("SDPA", "auto", "auto+w", "eager", "sdpa", "chunked")
# Above this N a (1, 8, N, N) float32 tensor is 8 GiB or more: methods that build one are skipped.
DENSE_LIMIT = 8192
BATCH_SECONDS = 0.02


def make_input(n: int, requires_grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(n)
    return torch.randn(1, HEADS, n, HEAD_DIM, generator=g).requires_grad_(requires_grad)


def forward_call(method: str, q: torch.Tensor):
    if method == "SDPA":
        return lambda: F.scaled_dot_product_attention(q, q, q)
    if method == "auto":
        return lambda: attend(q, q, q)
    if method == "auto+w":
        return lambda: attend(q, q, q, need_weights=True)
    return lambda: attend(q, q, q, backend=method)


def backward_call(method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    def run():
        if method == "SDPA":
            out = F.scaled_dot_product_attention(q, k, v)
        elif method in ("auto", "auto+w"):
            out = attend(q, k, v, need_weights=method == "auto+w").context
        else:
            out = attend(q, k, v, backend=method).context
        out.sum().backward()
        q.grad = k.grad = v.grad = None

    return run


def applicable(method: str, n: int) -> bool:
    return not (method in ("eager", "auto+w") and n > DENSE_LIMIT)


# --------------------------------------------------------------------------------------------- timing


def time_methods(calls: dict, repeats: int, min_seconds: float) -> dict[str, dict[str, float]]:
    """Interleaved timing: per repeat each method once (a batch of calls when they are short), for at
    least ``repeats`` repeats and at least ``min_seconds`` in all."""
    number = {}
    for name, f in calls.items():
        f()  # warm-up: the first call pays one-time costs
        took = math.inf  # then how many calls make a batch of ~BATCH_SECONDS
        for _ in range(3):
            start = time.perf_counter()
            f()
            took = min(took, time.perf_counter() - start)
            if took > BATCH_SECONDS:
                break
        number[name] = max(1, round(BATCH_SECONDS / took))
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    shuffle = random.Random(len(names) * 1000 + repeats)
    began = time.perf_counter()
    while len(times["SDPA"]) < repeats or time.perf_counter() - began < min_seconds:
        for name in shuffle.sample(names, len(names)):
            f, k = calls[name], number[name]
            start = time.perf_counter()
            for _ in range(k):
                f()
            times[name].append((time.perf_counter() - start) / k)
    ref = times["SDPA"]
    return {
        name: {
            "ms": 1e3 * statistics.median(ts),
            "ratio": statistics.median(t / s for t, s in zip(ts, ref)),
            "repeats": len(ts),
        }
        for name, ts in times.items()
    }


# --------------------------------------------------------------------------------------------- memory


def _reset_peak_rss() -> None:
    """Make the kernel's peak-RSS mark (VmHWM) restart from the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # then VmHWM is the peak since this process started, which includes less than the call


def _rss_now_bytes(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(method: str, n: int, backward: bool) -> None:
    """Runs in a fresh process: print the peak RSS growth (bytes) of one call of ``method`` at ``n``."""
    if backward:
        warm = backward_call(method, *[make_input(64, True) for _ in range(3)])
        call = backward_call(method, *[make_input(n, True) for _ in range(3)])
    else:
        warm, call = forward_call(method, make_input(64)), forward_call(method, make_input(n))
    with torch.inference_mode(not backward):
        warm()
        _reset_peak_rss()
        now, files = _rss_now_bytes(), _rss_now_bytes("RssFile")
        result = call()
        peak = _rss_now_bytes("VmHWM")
        files = _rss_now_bytes("RssFile") - files
    del result
    # Library code paged out by the kernel and faulted back in during the call is not the call's
    # memory: take it off.
    print(peak - now - max(files, 0))


def measure_memory(method: str, n: int, backward: bool = False) -> int:
    """Median over three fresh processes of :func:`memory_child` (one above N=2048, where the noise of a
    few MiB of library pages does not matter and each run takes seconds)."""
    runs = 3 if n <= 2048 else 1
    return int(statistics.median(_memory_once(method, n, backward) for _ in range(runs)))


def _memory_once(method: str, n: int, backward: bool) -> int:
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", method, str(n)]
    if backward:
        cmd.append("--_backward")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {method} at N={n} failed:\n{done.stderr}")
    return int(done.stdout.split()[-1])


# ---------------------------------------------------------------------------------------------- table


def mib(b: int | None) -> str:
    return "skip" if b is None else f"{b / 2**20:.0f}"


def print_table(rows: list[dict], methods: tuple[str, ...]) -> None:
    shown = [m for m in methods if m != "SDPA"]
    print("time / SDPA time (median over interleaved repeats); SDPA column in ms")
    head = f"{'N':>8} {'repeats':>7} {'SDPA ms':>9} " + " ".join(f"{m:>8}" for m in shown)
    print(head)
    for row in rows:
        cells = []
        for m in shown:
            t = row["time"].get(m)
            cells.append(f"{'skip':>8}" if t is None else f"{t['ratio']:>7.2f}x")
        sdpa = row["time"]["SDPA"]
        print(f"{row['label']:>8} {sdpa['repeats']:>7} {sdpa['ms']:>9.1f} " + " ".join(cells))
    if any(row.get("memory") for row in rows):
        print()
        print("peak extra memory, MiB (peak RSS growth during one call, incl. the returned tensors)")
        print(f"{'N':>8} " + " ".join(f"{m:>8}" for m in methods))
        for row in rows:
            mem = row.get("memory") or {}
            print(f"{row['label']:>8} " + " ".join(f"{mib(mem.get(m)):>8}" for m in methods))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="128,512,2048,8192,16384", help="comma-separated sequence lengths N")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per N, at least (median taken)")
    parser.add_argument(
        "--min-seconds", type=float, default=10.0, help="keep repeating until each N has been timed this long"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument("--methods", default=",".join(METHODS[1:]), help="methods besides SDPA")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--backward", type=int, metavar="N", help="add a forward+backward row at this N")
    parser.add_argument("--_memory-child", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--_backward", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._memory_child:
        memory_child(args._memory_child[0], int(args._memory_child[1]), args._backward)
        return

    methods = ("SDPA", *[m for m in args.methods.split(",") if m])
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; q = k = v float32 (1, {HEADS}, N, {HEAD_DIM})")
    load_before = os.getloadavg()
    rows = []
    for n in sizes:
        ms = [m for m in methods if applicable(m, n)]
        memory = None if args.no_memory else {m: measure_memory(m, n) for m in ms}
        q = make_input(n)
        with torch.inference_mode():
            timing = time_methods({m: forward_call(m, q) for m in ms}, args.repeats, args.min_seconds)
        rows.append({"label": str(n), "n": n, "time": timing, "memory": memory})
        print(f"  N={n}: " + ", ".join(f"{m} {t['ratio']:.2f}x" for m, t in timing.items()), file=sys.stderr)
    if args.backward:
        n = args.backward
        ms = [m for m in methods if m != "auto+w" and applicable(m, n)]
        memory = None if args.no_memory else {m: measure_memory(m, n, backward=True) for m in ms}
        tensors = [make_input(n, True) for _ in range(3)]
        timing = time_methods({m: backward_call(m, *tensors) for m in ms}, args.repeats, args.min_seconds)
        rows.append({"label": f"{n} f+b", "n": n, "backward": True, "time": timing, "memory": memory})
    load_after = os.getloadavg()
    print()
    print_table(rows, methods)
    print()
    print(
        f"load average (1 min) {load_before[0]:.2f} at the start, {load_after[0]:.2f} at the end, on "
        f"{os.cpu_count()} CPUs: other processes' load slows every method, the fused kernel least."
    )
    figures = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "shape": [1, HEADS, "N", HEAD_DIM],
        "loadavg": [round(load_before[0], 2), round(load_after[0], 2)],
        "rows": [
            {
                "n": row["n"],
                "backward": row.get("backward", False),
                "repeats": row["time"]["SDPA"]["repeats"],
                "ratio": {m: round(t["ratio"], 3) for m, t in row["time"].items()},
                "ms": {m: round(t["ms"], 3) for m, t in row["time"].items()},
                "peak_extra_mib": None if row["memory"] is None else {m: round(b / 2**20, 1) for m, b in row["memory"].items()},
            }
            for row in rows
        ],
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

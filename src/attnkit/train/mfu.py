"""Model FLOPs utilisation (MFU): the FLOPs of a model's matrix products per second of training, as a share of
what this machine's float32 matrix product does.

The machine's rate is measured, not looked up: the median of timed ``(2048 × 2048) @ (2048 × 2048)`` float32
products (``torch.mm`` into a preallocated output, PyTorch's MKL kernel, what training runs on) with the
threads training uses. ``benchmarks/train.py`` measures the same way and takes the faster of that and
oneDNN's kernel.
"""

from __future__ import annotations

import statistics
import time

import torch

__all__ = ["matmul_rate"]


def matmul_rate(threads: int | None = None, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a ``(size × size) @ (size × size)`` float32 product on this machine with ``threads`` threads
    (PyTorch's current number when None): the median of ``repeats`` timed products after one untimed."""
    if size < 1 or repeats < 1:
        raise ValueError(f"size and repeats must be >= 1, got {size} and {repeats}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)  # its own: training's random draws stay as they were
        a, b, out = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g), torch.empty(size, size)
        torch.mm(a, b, out=out)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return 2.0 * size**3 / statistics.median(times)

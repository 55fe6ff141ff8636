"""Process-wide settings that make PyTorch on a CPU faster: how freed memory is kept for reuse.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc hands every block above its mmap
threshold (at most 32 MiB) straight to the kernel and gives it back on ``free``; the next tensor of that
size is fresh memory again, and first touching fresh memory costs a page fault per 4 KiB page with the
page zeroed. On this project's machines that is ~13 ms for a 49 MB tensor — the logits of a 64 × 24
batch over 8,000 words — two to three times what computing the softmax over it costs, paid for every such
tensor at every training step.

:func:`keep_freed_memory` tells glibc (``mallopt``) to serve every block from its heap and not to return
freed memory to the kernel, so that a training or decoding loop, which frees and allocates the same sizes
step after step, reuses pages that are already mapped. CTranslate2 gets the same effect from a caching
allocator of its own. The price: the process keeps its peak heap until it exits (peak memory, which is
what limits a run, is about the same; benchmarks report it). It changes the whole process, so the library
never calls it by itself; the ``attnkit`` command does, at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

__all__ = ["available_memory", "keep_freed_memory"]

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

# Free memory at the top of the heap is returned to the kernel only beyond this (bytes; mallopt takes an int).
_TRIM_THRESHOLD = 2**31 - 1


@functools.lru_cache(maxsize=None)
def _mallopt():
    """glibc's ``mallopt``, or None (another C library, another system)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Keep freed memory mapped for reuse instead of returning it to the kernel (see the module
    docstring). Returns True when the setting took effect, False where it cannot (not glibc). Calling it
    again does nothing more."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = mallopt(_M_MMAP_MAX, 0) == 1  # every block from the heap, none mapped on its own
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok  # (almost) never shrink the heap
    return ok


def available_memory() -> int | None:
    """The bytes a new allocation can get before the kernel kills the process, as far as Linux says: the
    ``MemAvailable`` of ``/proc/meminfo``, at most the memory limit of the process's cgroup (v2 ``memory.max``,
    v1 ``memory.limit_in_bytes``: a container's). The limit itself, not the limit less the cgroup's usage,
    which counts page cache the kernel would drop first. None where neither can be read (another system)."""
    found = []
    for line in (_read("/proc/meminfo") or "").splitlines():
        fields = line.split()
        if fields[:1] == ["MemAvailable:"] and len(fields) > 1 and fields[1].isdigit():
            found.append(int(fields[1]) * 1024)  # kB
    limit = _cgroup_limit()
    if limit is not None:
        found.append(limit)
    return min(found) if found else None


def _cgroup_limit() -> int | None:
    """The memory limit of the process's cgroup in bytes, or None (no limit, or none that can be read)."""
    files = []
    for line in (_read("/proc/self/cgroup") or "").splitlines():  # "0::/path" (v2), "4:memory:/path" (v1)
        number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        path = path.rstrip("/")
        if number == "0" and not controllers:
            files += [f"/sys/fs/cgroup{path}/memory.max", "/sys/fs/cgroup/memory.max"]
        elif "memory" in controllers.split(","):
            files += [f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
    for name in files:  # the process's own group, else the mount's root (a container sees its own group there)
        text = (_read(name) or "").strip()
        if text == "max":
            return None
        if text.isdigit():
            value = int(text)
            return value if value < 2**62 else None  # v1 writes "no limit" as a huge page-rounded number
    return None


def _read(name: str) -> str | None:
    try:
        with open(name, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None

"""attnkit.runtime: freed memory is kept for reuse (counted in page faults, in a fresh process)."""

from __future__ import annotations

import subprocess
import sys

import pytest

_SCRIPT = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from attnkit.runtime import keep_freed_memory
    assert keep_freed_memory() is True and keep_freed_memory() is True
faults = []
for _ in range(40):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(64 << 18)  # 64 MiB, above any mmap threshold of glibc
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[-10:]))  # glibc takes a few rounds to settle on a block it reuses
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is a Linux setting")
def test_keep_freed_memory_stops_the_page_faults_of_a_repeated_large_tensor():
    from attnkit.runtime import _mallopt

    if _mallopt() is None:
        pytest.skip("not glibc")
    pages = (64 << 20) // 4096
    assert _faults("plain") >= 9 * pages  # each new 64 MiB tensor is fresh memory, page by page
    assert _faults("keep") <= pages // 16  # the same pages, reused


# ----------------------------------------------------------------------------------- available memory

MEMINFO = "MemTotal:       24684092 kB\nMemFree:        1000 kB\nMemAvailable:   23422028 kB\nSwapFree: 0 kB\n"


@pytest.mark.parametrize("files, expected", [
    ({"/proc/meminfo": MEMINFO}, 23422028 * 1024),  # no cgroup file: MemAvailable
    # cgroup v2: the process's group's memory.max is below MemAvailable (a container's 4 GiB)
    ({"/proc/meminfo": MEMINFO, "/proc/self/cgroup": "0::/box/run\n",
      "/sys/fs/cgroup/box/run/memory.max": "4294967296\n"}, 4294967296),
    ({"/proc/meminfo": MEMINFO, "/proc/self/cgroup": "0::/box\n", "/sys/fs/cgroup/box/memory.max": "max\n"},
     23422028 * 1024),
    # v2 with the group's own files at the mount's root (a container's cgroup namespace)
    ({"/proc/meminfo": MEMINFO, "/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/memory.max": "1073741824\n"},
     1073741824),
    # cgroup v1: memory.limit_in_bytes, whose "no limit" is a huge number
    ({"/proc/meminfo": MEMINFO, "/proc/self/cgroup": "5:cpu:/\n4:memory:/job/7\n",
      "/sys/fs/cgroup/memory/job/7/memory.limit_in_bytes": "2147483648\n"}, 2147483648),
    ({"/proc/meminfo": MEMINFO, "/proc/self/cgroup": "4:memory:/job/7\n",
      "/sys/fs/cgroup/memory/job/7/memory.limit_in_bytes": "9223372036854771712\n"}, 23422028 * 1024),
    # a limit above MemAvailable does not raise it
    ({"/proc/meminfo": MEMINFO, "/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/memory.max": str(2**40)},
     23422028 * 1024),
    ({"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/memory.max": "1073741824\n"}, 1073741824),  # no meminfo
    ({}, None),  # neither (not Linux): unknown, and no check is made
    ({"/proc/meminfo": "MemTotal: 10 kB\nMemAvailable: lots\n"}, None),
])
def test_available_memory_is_memavailable_at_most_the_cgroup_limit(files, expected, monkeypatch):
    import attnkit.runtime as runtime

    monkeypatch.setattr(runtime, "_read", files.get)
    assert runtime.available_memory() == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/meminfo is Linux's")
def test_available_memory_of_this_machine_is_at_most_its_total():
    from attnkit.runtime import available_memory

    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    assert 0 < available_memory() <= total

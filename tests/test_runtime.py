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

"""Freed memory handed back to the system now and then (runners/heap.py), in a process of its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scanner.runners import heap

needs_trim = pytest.mark.skipif(heap._malloc_trim() is None, reason="malloc_trim is glibc's")

# Bodies of 512 KiB freed but the last: glibc keeps them in its heap (the last pins its top), as a unit
# worker's or hashing process's heap keeps what its bodies and decodes left.
_FRAGMENTED = """
import sys
from scanner.runners import heap

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

big = b"x" * (8 << 20)  # freed: glibc serves blocks up to this size from its heap from now on
del big
held = [b"x" * (512 << 10) for _ in range(256)]
last = held[-1]
del held
before = rss()
trimmer = heap.Trimmer(seconds=float(sys.argv[1]))
trimmer()
print(before - rss(), trimmer.trims)
"""


def _freed(seconds: float) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED, str(seconds)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    freed, trims = done.stdout.split()
    return int(freed), int(trims)


@needs_trim
def test_memory_freed_but_kept_by_malloc_goes_back_to_the_system() -> None:
    freed, trims = _freed(0.0)
    assert trims == 1 and freed > 96 << 20  # of the 128 MiB freed


@needs_trim
def test_a_trim_comes_at_most_once_a_period() -> None:
    freed, trims = _freed(3600.0)
    assert trims == 0 and freed < 16 << 20

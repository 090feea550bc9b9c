"""Freed memory handed back to the system now and then, in the processes every added worker brings.

glibc keeps what a process frees for its next allocations: a hashing process's heap stays at the mark its
largest decodes left, a unit worker's at the mark its bodies left, tens of MiB each that every added worker
pays for nothing. A fixed mmap threshold (mallopt) would hand each large block back as it is freed, but
every decode then faults its pages in again (a fifth more CPU per image, measured on the benchmark's
corpus); malloc_trim at most once a second hands back what is free for one set of page faults a second.

Python's own collector is the other cost: see fewer_collections.
"""

from __future__ import annotations

import ctypes
import gc
import time
from collections.abc import Callable
from typing import Any, TypeVar

# How often a process hands its free memory back, at most.
TRIM_SECONDS = 1.0
# Container objects allocated, net, between two young collections (Python's default: 700).
YOUNG_COLLECTION_EVERY = 10_000

T = TypeVar("T")


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


class Trimmer:
    """Calls malloc_trim(0) when asked, at most once every `seconds`."""

    def __init__(self, seconds: float = TRIM_SECONDS) -> None:
        self._trim = _malloc_trim()
        self._seconds = seconds
        self._last = time.monotonic()
        self.trims = 0

    def __call__(self) -> None:
        now = time.monotonic()
        if self._trim is None or now - self._last < self._seconds:
            return
        self._trim(0)
        self._last = now
        self.trims += 1


_trimmer: Trimmer | None = None


def now() -> None:
    """This process's free memory back to the system now: after it let a large part of it go."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def now_and_then() -> None:
    """This process's free memory back to the system, at most once every TRIM_SECONDS."""
    global _trimmer
    if _trimmer is None:
        _trimmer = Trimmer()
    _trimmer()


def trimmed(work: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run work in a hashing process, then hand back what it freed (now and then)."""
    try:
        return work(*args, **kwargs)
    finally:
        now_and_then()


def fewer_collections() -> None:
    """Keep the cyclic garbage collector out of a fetch loop's way: what start-up left (modules, classes:
    never garbage) is frozen out of its full collections, and the young generation is collected after
    YOUNG_COLLECTION_EVERY allocations. A loop allocates futures, tasks and rows by the million; with the
    defaults the collector took an eighth of a unit worker's CPU on the throughput benchmark."""
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])

"""What runs in hashing worker processes: the write guard and one hashing job; bytes arrive over a pipe."""

from __future__ import annotations

import mmap
import os
import signal
from collections.abc import Callable, Sequence

from scanner import nostore
from scanner.hashing import DecodeError, DecodeLimits, ImageHashes, hash_image

HashResult = tuple[ImageHashes | None, str | None]


# The main process's body arena (runners/arena.py), mapped read-only; None when bodies come over pipes.
_arena: mmap.mmap | None = None


def init_worker(allowed_dirs: tuple[str, ...], arena: mmap.mmap | None = None) -> None:
    """Guard the worker like the main process, and leave Ctrl-C to the main process, which stops the pool."""
    global _arena
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    nostore.install(allowed_dirs)
    _arena = arena


def started() -> int:
    """A no-op job: sent once per worker, it makes the pool start every process at once."""
    return os.getpid()


def hash_job(body: bytes, want: frozenset[str], limits: DecodeLimits) -> HashResult:
    """Hash one body in memory; a body that is no usable image keeps its digests (exact lists still match)."""
    try:
        return hash_image(body, want, limits), None
    except DecodeError as exc:
        return (ImageHashes(**exc.digests) if exc.digests else None), exc.reason


def hash_batch(bodies: Sequence[bytes], job: Callable[[bytes], HashResult]) -> list[HashResult]:
    """Run the job on several bodies: one pickle round trip for the batch, small results back."""
    return [job(body) for body in bodies]


def hash_spans(spans: Sequence[tuple[int, int]], job: Callable[[bytes], HashResult]) -> list[HashResult]:
    """Run the job on bodies the main process put in the arena at these (offset, length) spans."""
    if _arena is None:
        raise RuntimeError("this worker was started without a body arena")
    return [job(_arena[offset : offset + length]) for offset, length in spans]

"""What runs in hashing worker processes: the write guard and one hashing job; bytes arrive over a pipe."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence

from scanner import nostore
from scanner.hashing import DecodeError, DecodeLimits, ImageHashes, hash_image

HashResult = tuple[ImageHashes | None, str | None]


def init_worker(allowed_dirs: tuple[str, ...]) -> None:
    """Guard the worker like the main process, and leave Ctrl-C to the main process, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    nostore.install(allowed_dirs)


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

"""What runs in hashing worker processes: the write guard and one hashing job; bytes arrive over a pipe."""

from __future__ import annotations

import signal

from scanner import nostore
from scanner.hashing import DecodeError, DecodeLimits, ImageHashes, hash_image


def init_worker(allowed_dirs: tuple[str, ...]) -> None:
    """Guard the worker like the main process, and leave Ctrl-C to the main process, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    nostore.install(allowed_dirs)


def hash_job(
    body: bytes, want: frozenset[str], limits: DecodeLimits
) -> tuple[ImageHashes | None, str | None]:
    """Hash one body in memory; a body that is no usable image keeps its digests (exact lists still match)."""
    try:
        return hash_image(body, want, limits), None
    except DecodeError as exc:
        return (ImageHashes(**exc.digests) if exc.digests else None), exc.reason

"""What runs in hashing worker processes: the write guard and the hashing job; bodies arrive through the
body arena or a pipe."""

from __future__ import annotations

import atexit
import mmap
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scanner import nostore, procguard
from scanner.hashing import DecodeError, DecodeLimits, ImageHashes, hash_image
from scanner.hashing.api import digests
from scanner.hashing.decode import DEFAULT_LIMITS
from scanner.outcomes import HashingReason
from scanner.plugins import PluginConfig, load_plugins

HashResult = tuple[ImageHashes | None, str | None]
NO_PLUGINS = PluginConfig()


# The main process's body arena (runners/arena.py), mapped read-only; None when bodies come over pipes.
_arena: mmap.mmap | None = None


def init_worker(
    allowed_dirs: tuple[str, ...], arena: mmap.mmap | None = None, parent: int | None = None
) -> None:
    """Guard the worker like the main process (no writes, no core dump, not dumpable), end it with the
    process that started it (`parent`, directly or through its forkserver), bound each decode's CPU time,
    and leave Ctrl-C to the main process, which stops the pool."""
    global _arena
    procguard.harden()
    if parent is not None:
        procguard.die_with_starter(parent)
    procguard.enforce_cpu_budgets()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    nostore.install(allowed_dirs)
    _arena = arena
    # A worker has nothing to flush or close when the pool stops it: skip tearing down numba, LLVM, scipy
    # and the rest module by module (0.3 to 0.7 CPU s a worker, at the end of every scan).
    atexit.register(os._exit, 0)


def started() -> int:
    """A no-op job: sent once per worker, it makes the pool start every process at once."""
    return os.getpid()


@dataclass(frozen=True)
class HashJob:
    """What a worker computes for each body: the wanted hash types, within the decode limits."""

    want: frozenset[str]
    limits: DecodeLimits = DEFAULT_LIMITS
    plugins: PluginConfig = NO_PLUGINS  # registered in the worker before its first body

    def __call__(self, body: bytes) -> HashResult:
        """Hash one body in memory; a body that is no usable image keeps its digests (exact lists still
        match)."""
        load_plugins(self.plugins)
        try:
            return hash_image(body, self.want, self.limits), None
        except DecodeError as exc:
            return (ImageHashes.of(exc.digests) if exc.digests else None), exc.reason

    def crashed(self, body: bytes, reason: HashingReason = HashingReason.HASHING_CRASHED) -> HashResult:
        """The result for a body that killed a worker, alone, in a fresh pool (HASHING_CRASHED) or ran it out
        of its decode budget, hashing.decode_timeout (DECODE_TIMEOUT): its digests, computed without parsing
        a byte of it, so exact lists still match."""
        load_plugins(self.plugins)
        found = digests(body, self.want)
        return (ImageHashes.of(found) if found else None), reason


def hash_batch(bodies: Sequence[bytes], job: Callable[[bytes], HashResult]) -> list[HashResult]:
    """Run the job on several bodies: one pickle round trip for the batch, small results back."""
    return [job(body) for body in bodies]


def hash_spans(spans: Sequence[tuple[int, int]], job: Callable[[bytes], HashResult]) -> list[HashResult]:
    """Run the job on bodies the main process put in the arena at these (offset, length) spans."""
    if _arena is None:
        raise RuntimeError("this worker was started without a body arena")
    return [job(_arena[offset : offset + length]) for offset, length in spans]

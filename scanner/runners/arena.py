"""Bodies handed to hashing workers through anonymous shared memory instead of pipes.

A pipe costs a 200 KB body four copies and a context switch per 64 KB; the arena costs one copy in and one
out. The arena is a memfd: anonymous memory like a process's heap, with no name in any file system, gone
when the last process holding it exits. The worker's end arrives as a file descriptor when the worker
process is spawned, so nothing is ever opened by path.
"""

from __future__ import annotations

import bisect
import mmap
import os
from collections.abc import Sequence
from multiprocessing import reduction

Extent = tuple[int, int]  # offset, length: a stretch of the arena (not a source's row Span)


def supported() -> bool:
    """memfd is Linux only; elsewhere bodies go through the pool's pipes."""
    return hasattr(os, "memfd_create")


class Arena:
    """A fixed block of shared memory the main process lends out in spans, first fit, and takes back."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._fd = os.memfd_create("scanner-bodies", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)
        self._free: list[Extent] = [(0, size)]  # sorted by offset, never adjacent

    def handle(self) -> ArenaHandle:
        """What a worker process needs to map the same memory."""
        return ArenaHandle(self._fd, self.size)

    def put(self, bodies: Sequence[bytes]) -> list[Extent] | None:
        """Copy the bodies into one free span; None when no span is large enough (the caller uses a pipe)."""
        total = sum(len(b) for b in bodies)
        start = self._take(max(total, 1))
        if start is None:
            return None
        spans, offset = [], start
        for body in bodies:
            self._map[offset : offset + len(body)] = body
            spans.append((offset, len(body)))
            offset += len(body)
        return spans

    def release(self, spans: Sequence[Extent]) -> None:
        """Give back the span that put() filled with these bodies."""
        start = spans[0][0]
        self._give(start, max(sum(n for _, n in spans), 1))

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    def _take(self, size: int) -> int | None:
        for i, (start, length) in enumerate(self._free):
            if length >= size:
                self._free[i] = (start + size, length - size)
                if length == size:
                    del self._free[i]
                return start
        return None

    def _give(self, start: int, size: int) -> None:
        i = bisect.bisect(self._free, (start, size))
        end = start + size
        if i < len(self._free) and self._free[i][0] == end:  # merge with the free span after
            end += self._free.pop(i)[1]
        if i > 0 and sum(self._free[i - 1]) == start:  # and the one before
            start = self._free[i - 1][0]
            i -= 1
            del self._free[i]
        self._free.insert(i, (start, end - start))


class ArenaHandle:
    """The arena's descriptor and size; pickled while a worker is spawned, it arrives as the worker's own
    copy of the descriptor (multiprocessing passes it to the child; no path is opened)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def __reduce__(self) -> tuple:
        return _attach, (reduction.DupFd(self.fd), self.size)


def _attach(fd: reduction.DupFd, size: int) -> mmap.mmap:
    descriptor = fd.detach()
    try:
        return mmap.mmap(descriptor, size, access=mmap.ACCESS_READ)
    finally:
        os.close(descriptor)

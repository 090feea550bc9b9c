"""The bytes of bodies held in memory, bounded: a body is granted room before its first byte is read.

A grant is the body's declared length (the cap when unknown or content-encoded), trimmed to what was read,
and lives until the caller has hashed the body. A grant never exceeds the budget, so one body larger than it
still proceeds alone; waiters are served in order, so a large body is not starved by small ones.
"""

from __future__ import annotations

import asyncio
from collections import deque


class BodyBudget:
    """An asyncio byte semaphore: acquire(n) waits until n bytes fit, FIFO."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0
        self.peak = 0  # the most bytes ever granted at once, for tests and benchmarks
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, size: int) -> Grant:
        size = min(max(size, 0), self.total)
        if not self._waiters and self.held + size <= self.total:
            self._take(size)
            return Grant(self, size)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._give(size)  # granted as it was cancelled: hand the room on
            else:
                self._waiters.remove(entry)
                self._wake()
            raise
        return Grant(self, size)

    def _take(self, size: int) -> None:
        self.held += size
        self.peak = max(self.peak, self.held)

    def _give(self, size: int) -> None:
        self.held -= size
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.held + self._waiters[0][0] <= self.total:
            size, waiter = self._waiters.popleft()
            if not waiter.done():
                self._take(size)
                waiter.set_result(None)


class Grant:
    """Room for one body; release() is idempotent, shrink() gives back what the body did not use."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: BodyBudget, size: int) -> None:
        self._budget = budget
        self.size = size

    def shrink(self, size: int) -> None:
        if 0 <= size < self.size:
            spare, self.size = self.size - size, size
            self._budget._give(spare)

    def release(self) -> None:
        size, self.size = self.size, 0
        if size:
            self._budget._give(size)

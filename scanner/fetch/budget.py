"""The bytes of bodies held in memory, bounded: a body is granted room before its first byte is read.

A grant is the body's declared length (the cap when unknown or content-encoded), trimmed to what was read,
and lives until the caller has hashed the body. A grant never exceeds the budget, so one body larger than it
still proceeds alone; waiters are served in order, so a large body is not starved by small ones.

Bodies read and waiting for their hashing are memory, not speed, beyond what the hashing can take: with a
`ready` limit (the hash function's bodies_wanted), no new body starts while that many wait, plus as many
as arrive while one is read (the release rate times the read time, both measured), so that slow reads never
leave the hashing idle. Bodies being read are bounded by the bytes alone, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque

# Weight of each new sample in the moving averages of read time and release interval.
SMOOTHING = 0.1


class BodyBudget:
    """An asyncio byte semaphore: acquire(n) waits until n bytes fit, FIFO."""

    def __init__(self, total: int, ready: int | None = None) -> None:
        self.total = total
        self.held = 0
        self.peak = 0  # the most bytes ever granted at once, for tests and benchmarks
        self.ready = 0  # bodies read and not yet released: waiting for, or in, their hashing
        self.ready_limit = ready
        self.read_seconds = 0.0  # moving average of a body's read, from its grant to its shrink()
        self.release_interval = math.inf  # moving average of the time between releases of bodies read
        self._released = time.monotonic()
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, size: int) -> bool:
        return self.held + size <= self.total and self.ready < self.ready_allowed()

    def ready_allowed(self) -> float:
        """Bodies read that may wait before no new one starts: the limit, plus those that arrive while one
        is read."""
        if self.ready_limit is None:
            return math.inf
        return self.ready_limit + math.ceil(self.read_seconds / self.release_interval)

    def _was_read(self, seconds: float) -> None:
        self.ready += 1
        self.read_seconds += SMOOTHING * (seconds - self.read_seconds)

    def _released_read(self) -> None:
        self.ready -= 1
        now = time.monotonic()
        interval, self._released = now - self._released, now
        if math.isinf(self.release_interval):
            self.release_interval = interval
        else:
            self.release_interval += SMOOTHING * (interval - self.release_interval)

    async def acquire(self, size: int) -> Grant:
        size = min(max(size, 0), self.total)
        if not self._waiters and self._fits(size):
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
                with contextlib.suppress(ValueError):  # _wake drops a cancelled waiter it meets first
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
        while self._waiters and self._fits(self._waiters[0][0]):
            size, waiter = self._waiters.popleft()
            if not waiter.done():
                self._take(size)
                waiter.set_result(None)


class Grant:
    """Room for one body; release() is idempotent, shrink() says the body is read (it now waits for its
    hashing) and gives back what it did not use."""

    __slots__ = ("_budget", "_read", "_started", "size")

    def __init__(self, budget: BodyBudget, size: int) -> None:
        self._budget = budget
        self.size = size
        self._started = time.monotonic()
        self._read = False

    def shrink(self, size: int) -> None:
        if not self._read:
            self._read = True
            self._budget._was_read(time.monotonic() - self._started)
        if 0 <= size < self.size:
            spare, self.size = self.size - size, size
            self._budget._give(spare)

    def release(self) -> None:
        size, self.size = self.size, 0
        read, self._read = self._read, False
        if read:
            self._budget._released_read()
        if size or read:
            self._budget._give(size)

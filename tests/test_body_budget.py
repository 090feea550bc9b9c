"""The body budget (fetch/budget.py): bodies read and waiting for their hashing bounded by what the hashing
can take, bodies being read by their bytes alone."""

from __future__ import annotations

import asyncio

import pytest

from scanner.fetch import budget as budget_module
from scanner.fetch.budget import BodyBudget


def test_no_new_body_starts_while_the_hashing_has_enough_waiting() -> None:
    async def run() -> list[str]:
        budget = BodyBudget(1_000_000, ready=2)
        seen = []
        first, second = await budget.acquire(100), await budget.acquire(100)
        first.shrink(50)
        second.shrink(50)  # two bodies read and waiting: the hashing has all it can take
        third = asyncio.ensure_future(budget.acquire(100))
        await asyncio.sleep(0.01)
        seen.append(f"waiting {not third.done()}")
        first.release()  # one hashed: room for the next body
        await asyncio.wait_for(third, 1)
        seen.append(f"ready {budget.ready} held {budget.held}")
        return seen

    assert asyncio.run(run()) == ["waiting True", "ready 1 held 150"]


def test_bodies_being_read_are_bounded_by_their_bytes_only() -> None:
    async def run() -> tuple[int, bool]:
        budget = BodyBudget(1_000, ready=1)
        reading = [await budget.acquire(100) for _ in range(10)]  # none read yet: bytes alone bound them
        late = asyncio.ensure_future(budget.acquire(100))
        await asyncio.sleep(0.01)
        blocked = not late.done()
        reading[0].release()
        await asyncio.wait_for(late, 1)
        return budget.held, blocked

    assert asyncio.run(run()) == (1_000, True)


def test_slow_reads_let_more_bodies_wait_so_the_hashing_never_runs_dry(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(budget_module.time, "monotonic", lambda: clock[0])

    async def run() -> float:
        budget = BodyBudget(10**9, ready=4)
        for _ in range(100):  # each body takes 1 s to read; the hashing releases one every 0.1 s
            grant = await budget.acquire(10)
            clock[0] += 1.0
            grant.shrink(10)
            clock[0] += 0.1
            grant.release()
            clock[0] -= 1.0
        return budget.ready_allowed()

    assert asyncio.run(run()) == pytest.approx(4 + 10, abs=1)


def test_without_a_ready_limit_only_bytes_count() -> None:
    async def run() -> int:
        budget = BodyBudget(1_000)
        for _ in range(10):
            (await budget.acquire(100)).shrink(100)
        return budget.held

    assert asyncio.run(run()) == 1_000


def test_a_waiter_cancelled_while_room_is_handed_on_is_only_cancelled() -> None:
    """Ctrl-C cancels a fetch waiting for room; room freed before that task runs again makes the budget drop
    the cancelled waiter first: the task then ends cancelled, not with a ValueError traceback."""

    async def main() -> None:
        budget = BodyBudget(1_000)
        held = await budget.acquire(1_000)
        waiting = asyncio.ensure_future(budget.acquire(500))
        await asyncio.sleep(0)  # it waits for room now
        waiting.cancel()  # its waiter is cancelled at once; the task runs its handler later
        held.release()  # the budget meets the cancelled waiter first and drops it
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert budget.held == 0
        again = await asyncio.wait_for(budget.acquire(1_000), 5)
        again.release()

    asyncio.run(main())

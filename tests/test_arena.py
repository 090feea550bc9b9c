"""The body arena: spans never overlap while lent, every byte comes back, and it lives in no file system."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from scanner.runners import arena as arena_module
from scanner.runners.arena import Arena

pytestmark = pytest.mark.skipif(not arena_module.supported(), reason="memfd is Linux only")


def _bodies(rng: random.Random, count: int, largest: int) -> list[bytes]:
    return [rng.randbytes(rng.randint(0, largest)) for _ in range(count)]


def test_bodies_come_back_byte_for_byte_from_their_spans() -> None:
    arena = Arena(1 << 16)
    bodies = [b"first", b"", os.urandom(3000), b"last"]
    spans = arena.put(bodies)
    assert spans is not None
    assert [arena._map[o : o + n] for o, n in spans] == bodies


def test_a_batch_too_large_for_what_is_free_is_refused_until_space_comes_back() -> None:
    arena = Arena(1000)
    held = arena.put([b"x" * 600])
    assert held is not None
    assert arena.put([b"y" * 300, b"z" * 200]) is None
    arena.release(held)
    assert arena.put([b"y" * 300, b"z" * 200]) is not None


def test_random_lending_never_overlaps_and_frees_everything() -> None:
    """A model check: whatever order batches come back in, live spans never overlap, what was written is
    read back intact, and once all are returned the whole arena is one free span again."""
    rng = random.Random(7)
    arena = Arena(64 * 1024)
    live: list[tuple[list[tuple[int, int]], list[bytes]]] = []
    refused = 0
    for _ in range(3000):
        if live and (rng.random() < 0.45 or len(live) > 12):
            spans, bodies = live.pop(rng.randrange(len(live)))
            assert [arena._map[o : o + n] for o, n in spans] == bodies
            arena.release(spans)
            continue
        bodies = _bodies(rng, rng.randint(1, 8), 4096)
        spans = arena.put(bodies)
        if spans is None:
            refused += 1
            continue
        live.append((spans, bodies))
        taken = sorted((s[0][0], sum(n for _, n in s) or 1) for s, _ in live)
        for (a, alen), (b, _) in itertools.pairwise(taken):
            assert a + alen <= b, "two batches share arena bytes"
    for spans, bodies in live:
        assert [arena._map[o : o + n] for o, n in spans] == bodies
        arena.release(spans)
    assert refused > 0  # the model reached a full arena
    assert arena._free == [(0, arena.size)]


def test_the_arena_is_anonymous_memory_not_a_file() -> None:
    """A memfd: its /proc link names no path in any file system, and nothing appears in /dev/shm."""
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    arena = Arena(4096)
    try:
        target = os.readlink(f"/proc/self/fd/{arena._fd}")
        assert target.startswith("/memfd:scanner-bodies"), target
        after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
        assert after == before
    finally:
        arena.close()


def test_a_pools_arena_takes_a_full_batch_whatever_gaps_the_batches_in_flight_left() -> None:
    """First fit leaves gaps: a pool's arena has room for one batch more than the two it holds, so a full
    batch never goes through the pipe for want of a gap."""
    from scanner.runners.hashpool import ARENA_BATCHES, ARENA_PER_BATCH, BATCH_BYTES

    arena = Arena(ARENA_BATCHES * ARENA_PER_BATCH)
    small = arena.put([b"s" * (BATCH_BYTES * 6 // 10)])
    held = arena.put([b"h" * BATCH_BYTES])
    assert small is not None and held is not None
    arena.release(small)  # `held` in flight, a gap of 0.6 of a batch before it
    assert arena.put([b"f" * BATCH_BYTES]) is not None

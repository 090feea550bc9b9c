"""The local runner's batching hasher: same results as one call per body, errors kept to their own rows,
bodies that kill a worker blamed alone, and the body arena equal to pipes."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import signal
import threading
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import pytest
from PIL import Image
from stalling_jpeg import stalling_jpeg

from scanner.errors import HashingWorkersError
from scanner.hashing import DecodeLimits
from scanner.outcomes import HashingReason
from scanner.runners import hashpool
from scanner.runners.arena import Arena
from scanner.runners.arena import supported as arena_supported
from scanner.runners.hashpool import (
    BATCH_BYTES,
    CANNOT_START,
    MAX_BATCH,
    BatchingHasher,
    WorkerPool,
    batch_length,
    bodies_per_batch,
    spread,
)
from scanner.workers import HashJob

WANT = frozenset({"md5", "pdq", "phash"})
JOB = HashJob(WANT, DecodeLimits())


def _image(seed: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64 + seed, 48), 40 + seed).convert("RGB").save(buffer, fmt)
    return buffer.getvalue()


@dataclass(frozen=True)
class _Refusing(HashJob):
    """The hashing job, except that one body raises as a bug in the hashing code would."""

    poison: bytes = b""

    def __call__(self, body: bytes):
        if body == self.poison:
            raise RuntimeError("bug")
        return super().__call__(body)


@dataclass(frozen=True)
class _Killing(HashJob):
    """The hashing job, except that the process dies (as in a decoder crash or the OOM killer) on the
    poison body, or on every body when poison is None."""

    poison: bytes | None = b""

    def __call__(self, body: bytes):
        if self.poison is None or body == self.poison:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(body)


async def _hash_all(workers: WorkerPool, job: HashJob, bodies: list[bytes], batches_in_flight: int = 2):
    hasher = BatchingHasher(workers, job, batches_in_flight)
    return await asyncio.wait_for(asyncio.gather(*(hasher(b) for b in bodies), return_exceptions=True), 120)


@pytest.fixture(scope="module")
def workers():
    with WorkerPool(1) as pool:
        yield pool


def test_batches_give_what_single_calls_give(workers: WorkerPool) -> None:
    """More bodies than a batch, one of them not an image: every row gets its own body's result, in order."""
    bodies = [_image(i) for i in range(MAX_BATCH + 3)] + [b"<html>not an image</html>"]
    results = asyncio.run(_hash_all(workers, JOB, bodies))
    assert results == [JOB(body) for body in bodies]
    assert results[-1][1] == "not_an_image"


def test_bodies_held_back_while_the_pool_is_busy_all_get_their_results(workers: WorkerPool) -> None:
    """One batch in flight at a time: the rest wait in the hasher and leave as batches come back."""
    bodies = [_image(i % 5, "JPEG") for i in range(3 * MAX_BATCH + 1)]
    results = asyncio.run(_hash_all(workers, JOB, bodies, batches_in_flight=1))
    assert results == [JOB(body) for body in bodies]


def test_a_batch_takes_up_to_max_batch_bodies_within_its_bytes() -> None:
    """Small bodies fill a batch by count, large ones by bytes, and a body larger than a batch's bytes
    leaves alone rather than never."""
    assert batch_length([1000] * (MAX_BATCH + 5)) == MAX_BATCH
    assert batch_length([BATCH_BYTES // 3] * 10) == 3
    assert batch_length([BATCH_BYTES + 1, 10, 10]) == 1
    assert batch_length([10, BATCH_BYTES, 10]) == 1
    assert bodies_per_batch(16 * 1024 * 1024) == 1 and bodies_per_batch(1) == MAX_BATCH


class _CountingHasher(BatchingHasher):
    """The batching hasher, noting the size of each batch it sends."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.sizes: list[int] = []

    def _submit(self, batch):  # type: ignore[no-untyped-def]
        self.sizes.append(len(batch))
        super()._submit(batch)


def test_large_bodies_leave_in_batches_of_bounded_bytes(workers: WorkerPool) -> None:
    """Bodies of a third of a batch's bytes go three at a time, while small ones fill whole batches: a batch
    pickled through the pipe holds no more than BATCH_BYTES of bodies, whatever MAX_BATCH is."""
    large = [os.urandom(BATCH_BYTES // 3) for _ in range(7)]
    small = [_image(i % 5) for i in range(MAX_BATCH)]

    async def hash_all(bodies: list[bytes]) -> tuple[list, list[int]]:
        hasher = _CountingHasher(workers, JOB, 1)
        results = await asyncio.wait_for(asyncio.gather(*(hasher(b) for b in bodies)), 120)
        return results, hasher.sizes

    results, sizes = asyncio.run(hash_all(large))
    assert results == [JOB(body) for body in large]
    assert sizes == [3, 3, 1]
    results, sizes = asyncio.run(hash_all(small))
    assert results == [JOB(body) for body in small] and sizes == [MAX_BATCH]


def test_a_failing_body_fails_only_its_row(workers: WorkerPool) -> None:
    bodies = [_image(i, "JPEG") for i in range(5)]
    results = asyncio.run(_hash_all(workers, _Refusing(WANT, poison=bodies[2]), bodies))
    assert isinstance(results[2], RuntimeError)
    for body, result in zip(bodies[:2] + bodies[3:], results[:2] + results[3:], strict=True):
        assert result == JOB(body)


def test_a_body_that_kills_its_worker_gets_hashing_crashed_and_the_rest_their_hashes() -> None:
    """The pool restarts, the bodies the dead pool held are retried alone, and only the one that kills a
    fresh worker is blamed: its row keeps its MD5 (exact lists still match), every other row its hashes."""
    bodies = [_image(i, "JPEG") for i in range(3 * MAX_BATCH)]
    poison = bodies[MAX_BATCH + 2]
    with WorkerPool(2) as pool:
        results = asyncio.run(_hash_all(pool, _Killing(WANT, poison=poison), bodies, batches_in_flight=4))
        restarts = pool.generation
    crashed = [i for i, r in enumerate(results) if r[1] == HashingReason.HASHING_CRASHED]
    assert crashed == [MAX_BATCH + 2]
    hashes, _ = results[MAX_BATCH + 2]
    assert hashes is not None and hashes.md5 == JOB(poison)[0].md5 and hashes.pdq is None
    assert [r for i, r in enumerate(results) if i not in crashed] == [JOB(b) for b in bodies if b != poison]
    assert restarts == 2  # once for the batch that died, once for the body that killed a fresh worker


def test_a_worker_that_died_while_idle_costs_no_row() -> None:
    """The OOM killer ends an idle worker: the next batch finds the pool dead as it is sent, and its bodies
    are hashed by a fresh pool (the quarantine must start although no batch was in flight to come back)."""
    bodies = [_image(i) for i in range(3)]
    with WorkerPool(1) as pool:
        os.kill(pool.executor.submit(os.getpid).result(60), signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):  # the pool knows now: a submit fails at once
            pool.executor.submit(os.getpid).result(60)
        results = asyncio.run(_hash_all(pool, JOB, bodies))
        restarts = pool.generation
    assert results == [JOB(b) for b in bodies]
    assert restarts == 1


@pytest.mark.parametrize("died", ["while idle", "hashing a batch"])
def test_a_pool_that_cannot_restart_fails_every_row_with_a_clear_error(died, monkeypatch) -> None:
    """A process dies and no fresh set can start (fork refused: no memory or process slot left): every row
    fails with the reason, none is left waiting, whether the death was found sending a batch or by it."""
    bodies = [_image(i) for i in range(3)]
    job = _Killing(WANT, poison=bodies[1]) if died == "hashing a batch" else JOB

    def refused(*args, **kwargs):
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    with WorkerPool(1) as pool:
        if died == "while idle":
            os.kill(pool.executor.submit(os.getpid).result(60), signal.SIGKILL)
            with pytest.raises(BrokenProcessPool):
                pool.executor.submit(os.getpid).result(60)
        monkeypatch.setattr(hashpool, "_started_executor", refused)
        results = asyncio.run(_hash_all(pool, job, bodies))
    assert [type(r) for r in results] == [HashingWorkersError] * 3, results
    why = "[Errno 11] Resource temporarily unavailable"
    assert str(results[0]) == f"hashing processes could not start ({why}): {CANNOT_START}"


def _held_back(pool: WorkerPool) -> Future:
    """Make the pool look as a pool forked from a template still warming: not ready until the returned future
    is settled (by the test, from another thread)."""
    gate: Future = Future()
    pool._starting = gate
    return gate


def test_bodies_sent_while_the_processes_start_wait_for_them_without_blocking_the_loop() -> None:
    """The fetch loop goes on while the pool's processes start (a template still warming): bodies sent
    meanwhile wait, and are hashed once the processes are ready."""
    bodies = [_image(i) for i in range(3)]

    async def hash_all(pool: WorkerPool) -> list:
        pool.executor.submit(JOB, bodies[0]).result(60)  # warm: once ready, 0.3 s hashes them all
        started = pool.processes
        gate = _held_back(pool)
        hasher = BatchingHasher(pool, JOB, 2)
        hashed = asyncio.gather(*(hasher(b) for b in bodies))
        await asyncio.sleep(0.3)  # the loop runs meanwhile
        assert not hashed.done()
        threading.Thread(target=gate.set_result, args=(started,)).start()
        return await asyncio.wait_for(hashed, 120)

    with WorkerPool(1) as pool:
        results = asyncio.run(hash_all(pool))
    assert results == [JOB(b) for b in bodies]


def test_processes_that_cannot_start_fail_the_waiting_rows_with_a_clear_error() -> None:
    bodies = [_image(i) for i in range(2)]

    async def hash_all(pool: WorkerPool) -> list:
        gate = _held_back(pool)
        hasher = BatchingHasher(pool, JOB, 2)
        hashed = asyncio.gather(*(hasher(b) for b in bodies), return_exceptions=True)
        await asyncio.sleep(0.05)
        threading.Thread(target=gate.set_exception, args=(OSError("no template"),)).start()
        return await asyncio.wait_for(hashed, 120)

    with WorkerPool(1) as pool:
        results = asyncio.run(hash_all(pool))
    assert [type(r) for r in results] == [HashingWorkersError] * 2
    assert str(results[0]) == f"hashing processes could not start (no template): {CANNOT_START}"


def test_a_body_that_kills_one_of_several_processes_breaks_its_pool_alone() -> None:
    """A fetch loop feeding several hashing processes (SpreadHasher, a pool of one process each): the poison
    body's pool restarts, the other never does, and every row gets what it would alone."""
    bodies = [_image(i, "JPEG") for i in range(4 * MAX_BATCH)]
    poison = bodies[MAX_BATCH + 2]
    job = _Killing(WANT, poison=poison)

    async def hash_all(pools: list[WorkerPool]) -> list:
        hasher = spread([BatchingHasher(pool, job, 2) for pool in pools])
        assert hasher.bodies_wanted == sum(BatchingHasher(pool, job, 2).bodies_wanted for pool in pools)
        hashed = asyncio.gather(*(hasher(b) for b in bodies), return_exceptions=True)
        return await asyncio.wait_for(hashed, 120)

    with WorkerPool(1) as first, WorkerPool(1) as second:
        results = asyncio.run(hash_all([first, second]))
        restarts = sorted([first.generation, second.generation])
    assert restarts == [0, 2]  # the poison's pool: its batch, then the body alone; the other pool: none
    crashed = [i for i, r in enumerate(results) if r[1] == HashingReason.HASHING_CRASHED]
    assert crashed == [MAX_BATCH + 2]
    assert [r for i, r in enumerate(results) if i not in crashed] == [JOB(b) for b in bodies if b != poison]


def test_a_body_past_its_cpu_budget_gets_decode_timeout_and_a_crash_still_hashing_crashed() -> None:
    """A decode that stalls (a JPEG with thousands of empty scans) is killed by the kernel at its CPU budget:
    its row is DECODE_TIMEOUT with its MD5; a body that kills its worker otherwise is still HASHING_CRASHED,
    and every other row gets its own hashes."""
    limits = DecodeLimits(max_scans=1_000_000, decode_timeout=1)
    bodies = [_image(i, "JPEG") for i in range(MAX_BATCH + 2)]
    stall, killer = stalling_jpeg(scans=20_000), bodies[3]
    bodies.insert(MAX_BATCH - 2, stall)
    job = _Killing(WANT, limits, poison=killer)
    with WorkerPool(1) as pool:
        results = asyncio.run(_hash_all(pool, job, bodies))
    reasons = {i: r[1] for i, r in enumerate(results) if r[1] is not None}
    assert reasons == {3: HashingReason.HASHING_CRASHED, MAX_BATCH - 2: HashingReason.DECODE_TIMEOUT}
    assert results[MAX_BATCH - 2][0].md5 == JOB(stall)[0].md5
    assert [r for i, r in enumerate(results) if i not in reasons] == [
        JOB(b) for i, b in enumerate(bodies) if i not in reasons
    ]


def test_workers_that_die_on_anything_fail_the_rows_with_a_clear_error() -> None:
    """A fresh pool that cannot hash a known-good image is broken itself: no row is blamed for it."""
    bodies = [_image(i, "JPEG") for i in range(3)]
    with WorkerPool(1) as pool:
        results = asyncio.run(_hash_all(pool, _Killing(WANT, poison=None), bodies))
    assert all(isinstance(r, HashingWorkersError) for r in results), results
    assert "known-good image" in str(results[0])


def test_a_stopped_pool_fails_every_row_instead_of_hanging() -> None:
    pool = WorkerPool(1)
    pool.executor.shutdown()
    results = asyncio.run(_hash_all(pool, JOB, [_image(i) for i in range(3)]))
    assert all(isinstance(result, RuntimeError) for result in results)


@pytest.mark.skipif(not arena_supported(), reason="memfd is Linux only")
def test_bodies_through_the_arena_hash_as_bodies_through_pipes() -> None:
    """Workers that map the arena give each row its own body's result; a batch too large for the arena's
    free space goes through the pipe, and every span is back when the rows are done."""
    small = [_image(i % 7, "JPEG") for i in range(2 * MAX_BATCH)]
    large = [Image.effect_noise((400, 400), 60).tobytes() + bytes([i]) for i in range(2)]  # 160 KB each
    bodies = small[:5] + large[:1] + small[5:] + large[1:] + [b"not an image"]
    arena = Arena(128 * 1024)
    lent: list[int] = []
    put = arena.put

    def counting_put(batch):
        spans = put(batch)
        lent.append(0 if spans is None else len(spans))
        return spans

    arena.put = counting_put  # type: ignore[method-assign]
    with WorkerPool(1, arena) as pool:
        results = asyncio.run(_hash_all(pool, JOB, bodies))
    assert results == [JOB(body) for body in bodies]
    assert sum(lent) > 0 and 0 in lent  # some batches went through the arena, some through the pipe
    assert arena._free == [(0, arena.size)]
    arena.close()

"""The local runner's batching hasher: same results as one call per body, errors kept to their own rows."""

from __future__ import annotations

import asyncio
import io
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import pytest
from PIL import Image

from scanner.hashing import DecodeLimits
from scanner.runners.arena import Arena
from scanner.runners.arena import supported as arena_supported
from scanner.runners.local import MAX_BATCH, BatchingHasher, hashing_pool
from scanner.workers import HashResult, hash_job

WANT = frozenset({"md5", "pdq", "phash"})


def _image(seed: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64 + seed, 48), 40 + seed).convert("RGB").save(buffer, fmt)
    return buffer.getvalue()


def _job_refusing(body: bytes, poison: bytes) -> HashResult:
    """hash_job, except that one body raises as a bug in the hashing code would."""
    if body == poison:
        raise RuntimeError("bug")
    return hash_job(body, WANT, DecodeLimits())


async def _hash_all(pool: ProcessPoolExecutor, job, bodies: list[bytes], batches_in_flight: int = 2) -> list:
    hasher = BatchingHasher(pool, job, batches_in_flight)
    return await asyncio.wait_for(asyncio.gather(*(hasher(b) for b in bodies), return_exceptions=True), 120)


@pytest.fixture(scope="module")
def pool():
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


def test_batches_give_what_single_calls_give(pool: ProcessPoolExecutor) -> None:
    """More bodies than a batch, one of them not an image: every row gets its own body's result, in order."""
    bodies = [_image(i) for i in range(MAX_BATCH + 3)] + [b"<html>not an image</html>"]
    job = partial(hash_job, want=WANT, limits=DecodeLimits())
    results = asyncio.run(_hash_all(pool, job, bodies))
    assert results == [hash_job(body, WANT, DecodeLimits()) for body in bodies]
    assert results[-1][1] == "not_an_image"


def test_bodies_held_back_while_the_pool_is_busy_all_get_their_results(pool: ProcessPoolExecutor) -> None:
    """One batch in flight at a time: the rest wait in the hasher and leave as batches come back."""
    bodies = [_image(i % 5, "JPEG") for i in range(3 * MAX_BATCH + 1)]
    job = partial(hash_job, want=WANT, limits=DecodeLimits())
    results = asyncio.run(_hash_all(pool, job, bodies, batches_in_flight=1))
    assert results == [hash_job(body, WANT, DecodeLimits()) for body in bodies]


def test_a_failing_body_fails_only_its_row(pool: ProcessPoolExecutor) -> None:
    bodies = [_image(i, "JPEG") for i in range(5)]
    results = asyncio.run(_hash_all(pool, partial(_job_refusing, poison=bodies[2]), bodies))
    assert isinstance(results[2], RuntimeError)
    for body, result in zip(bodies[:2] + bodies[3:], results[:2] + results[3:], strict=True):
        assert result == hash_job(body, WANT, DecodeLimits())


def test_a_stopped_pool_fails_every_row_instead_of_hanging() -> None:
    executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    executor.shutdown()
    job = partial(hash_job, want=WANT, limits=DecodeLimits())
    results = asyncio.run(_hash_all(executor, job, [_image(i) for i in range(3)]))
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
    job = partial(hash_job, want=WANT, limits=DecodeLimits())

    async def hash_all(executor: ProcessPoolExecutor) -> list[HashResult]:
        hasher = BatchingHasher(executor, job, 2, arena)
        return await asyncio.wait_for(asyncio.gather(*(hasher(b) for b in bodies)), 120)

    with hashing_pool(1, arena) as executor:
        results = asyncio.run(hash_all(executor))
    assert results == [hash_job(body, WANT, DecodeLimits()) for body in bodies]
    assert sum(lent) > 0 and 0 in lent  # some batches went through the arena, some through the pipe
    assert arena._free == [(0, arena.size)]
    arena.close()

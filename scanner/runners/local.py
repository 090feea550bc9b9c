"""Run units on this machine: one asyncio loop fetching, worker processes hashing the bodies it hands them."""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from functools import partial

from scanner.config import ScanConfig
from scanner.pipeline import Progress
from scanner.planner import WorkUnit
from scanner.runners.arena import Arena, Span
from scanner.runners.arena import supported as arena_supported
from scanner.scan import Prepared, ScanResult, check_config, hashing_job, run_scan, unit_pipeline
from scanner.workers import HashResult, hash_batch, hash_spans, init_worker, started

# Bodies sent to a worker in one call, at most: few enough to keep every worker busy, many enough that
# the pickle round trip, the future and the wake-ups are paid once for several images.
MAX_BATCH = 8
# Shared memory for bodies on their way to the workers, per batch the pool holds: room for a full batch of
# bodies up to 512 KiB each. A batch that does not fit (large bodies) goes through the pipe instead.
ARENA_PER_BATCH = MAX_BATCH * 512 * 1024


@dataclass(slots=True)
class HashingWorkers:
    """The worker processes and, where the platform has it, the shared memory their bodies arrive in."""

    pool: ProcessPoolExecutor
    arena: Arena | None


def scan(
    config: ScanConfig, restart: bool = False, make_progress: Callable[[Prepared], Progress] | None = None
) -> ScanResult:
    """Run a whole scan locally, resuming from committed units in config.out.

    The hashing workers start (a process and its imports each) while this process loads the lists.
    """
    check_config(config)
    with hashing_workers(config.run.worker_count) as workers:
        return run_scan(config, restart, make_progress, partial(run_units, workers=workers))


@contextmanager
def hashing_workers(count: int) -> Iterator[HashingWorkers]:
    """Hashing worker processes and their body arena, ready now and stopped on leaving."""
    with ExitStack() as stack:
        arena = (
            stack.enter_context(closing(Arena(2 * count * ARENA_PER_BATCH))) if arena_supported() else None
        )
        yield HashingWorkers(stack.enter_context(hashing_pool(count, arena)), arena)


@contextmanager
def hashing_pool(count: int, arena: Arena | None = None) -> Iterator[ProcessPoolExecutor]:
    """Hashing worker processes, started now and stopped on leaving; each guards itself with no directory
    to write to, and maps the arena if there is one.

    They start with Ctrl-C blocked, so one pressed while they import cannot interrupt them with a traceback:
    the main process stops the pool.
    """
    context = multiprocessing.get_context("spawn")
    initargs = ((), arena.handle() if arena else None)
    with ProcessPoolExecutor(count, mp_context=context, initializer=init_worker, initargs=initargs) as pool:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # inherited by the children
        try:
            for _ in range(count):
                pool.submit(started)  # the pool starts a process per job waiting for one
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a Ctrl-C meanwhile is delivered now
        yield pool


def run_units(
    prepared: Prepared, units: list[WorkUnit], progress: Progress | None = None, *, workers: HashingWorkers
) -> None:
    """Fetch in this process and hash in the worker processes; each finished unit is committed at once."""
    if units:
        asyncio.run(_run(prepared, units, workers, progress))


async def _run(
    prepared: Prepared, units: list[WorkUnit], workers: HashingWorkers, progress: Progress | None
) -> None:
    config = prepared.config
    # Two batches a worker: one it hashes, one waiting in its queue, so no worker idles between batches.
    job = hashing_job(config, prepared.matcher)
    hash_fn = BatchingHasher(workers.pool, job, 2 * config.run.worker_count, workers.arena)
    pipeline = unit_pipeline(config, prepared.matcher, prepared.plan.sources, hash_fn, progress)
    try:
        gate = asyncio.Semaphore(config.run.units_in_flight)

        async def run_one(unit: WorkUnit) -> None:
            async with gate:
                report = await pipeline.run_unit(unit)
            prepared.checkpoint.commit(report)
            if progress is not None:
                progress.unit_done()

        await asyncio.gather(*(run_one(u) for u in units))
    finally:
        await pipeline.stages.fetcher.aclose()


class BatchingHasher:
    """The pipeline's hash function: bodies go to the workers in batches, only as fast as the workers hash.

    At most `batches_in_flight` batches are with the pool (sent and not yet returned); bodies that arrive
    meanwhile wait here and leave together, MAX_BATCH at most, when a batch comes back. Fuller batches cost
    the main process less per body (one pickle round trip, one future, one wake-up a batch). Memory stays
    bounded by the pipeline's rows in flight, whether a body waits here or in the pool's queue.
    """

    def __init__(
        self,
        pool: ProcessPoolExecutor,
        job: Callable[[bytes], HashResult],
        batches_in_flight: int = 2,
        arena: Arena | None = None,
    ) -> None:
        self._pool = pool
        self._job = job
        self._arena = arena
        self._batch_job = partial(hash_batch, job=job)
        self._spans_job = partial(hash_spans, job=job)
        self._waiting: list[tuple[bytes, asyncio.Future[HashResult]]] = []
        self._limit = batches_in_flight
        self._in_flight = 0

    def __call__(self, body: bytes) -> asyncio.Future[HashResult]:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[HashResult] = loop.create_future()
        self._waiting.append((body, result))
        if len(self._waiting) >= MAX_BATCH:
            self._send()
        elif len(self._waiting) == 1:
            loop.call_soon(self._send)
        return result

    def _send(self) -> None:
        while self._waiting and self._in_flight < self._limit:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            self._submit(batch)

    def _submit(self, batch: list[tuple[bytes, asyncio.Future[HashResult]]]) -> None:
        loop = asyncio.get_running_loop()
        bodies = [body for body, _ in batch]
        spans = self._arena.put(bodies) if self._arena is not None else None
        try:
            if spans is None:
                sent = loop.run_in_executor(self._pool, self._batch_job, bodies)
            else:
                sent = loop.run_in_executor(self._pool, self._spans_job, spans)
        except Exception as exc:  # the pool is broken or shut down: every waiting row sees why
            self._release(spans)
            for _, future in batch:
                _fail(future, exc)
            return
        self._in_flight += 1
        sent.add_done_callback(partial(self._deliver, batch, spans))

    def _release(self, spans: list[Span] | None) -> None:
        if spans is not None and self._arena is not None:
            self._arena.release(spans)

    def _deliver(
        self,
        batch: list[tuple[bytes, asyncio.Future[HashResult]]],
        spans: list[Span] | None,
        sent: asyncio.Future[list[HashResult]],
    ) -> None:
        self._in_flight -= 1
        self._release(spans)
        self._send()
        if sent.cancelled():
            for _, future in batch:
                future.cancel()
            return
        error = sent.exception()
        if error is None:
            for (_, future), result in zip(batch, sent.result(), strict=True):
                if not future.done():
                    future.set_result(result)
        elif len(batch) == 1:
            _fail(batch[0][1], error)
        else:
            self._one_by_one(batch)

    def _one_by_one(self, batch: list[tuple[bytes, asyncio.Future[HashResult]]]) -> None:
        """A body broke the batch's job: hash each alone, so each row sees only what its own body did."""
        loop = asyncio.get_running_loop()
        for body, future in batch:
            try:
                _settle(future, loop.run_in_executor(self._pool, self._job, body))
            except Exception as exc:  # the pool itself is broken or shut down
                _fail(future, exc)


def _fail(future: asyncio.Future[HashResult], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _settle(future: asyncio.Future[HashResult], source: asyncio.Future[HashResult]) -> None:
    """Resolve `future` with whatever `source` ends with."""

    def copy(done: asyncio.Future[HashResult]) -> None:
        if done.cancelled():
            future.cancel()
        elif (error := done.exception()) is not None:
            _fail(future, error)
        elif not future.done():
            future.set_result(done.result())

    source.add_done_callback(copy)

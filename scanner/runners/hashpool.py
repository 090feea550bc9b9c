"""Hashing worker processes for one fetch loop: the pool, its body arena, and the batching hash function that
hands bodies to it (a unit worker's, a rescan's, a Ray actor's)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, closing, contextmanager
from functools import partial

from PIL import Image

from scanner import procguard
from scanner.errors import HashingWorkersError
from scanner.outcomes import HashingReason
from scanner.runners import hashfork, heap
from scanner.runners.arena import Arena, Extent
from scanner.runners.arena import supported as arena_supported
from scanner.workers import (
    HashJob,
    HashResult,
    hash_batch,
    hash_spans,
    init_worker,
)
from scanner.workers import started as started_job

# Bodies sent to a worker in one call, at most: few enough to keep every worker busy, many enough that
# the pickle round trip, the future and the wake-ups (about 0.1 ms of the fetch loop's CPU a batch) are paid
# once for several images.
MAX_BATCH = 16
# The bytes of one batch's bodies, at most, unless a single body is larger: large bodies leave in smaller
# batches, so a batch pickled through the pipe holds no more than before for them.
BATCH_BYTES = 4 * 1024 * 1024
# Shared memory for bodies on their way to the workers, in batches of up to BATCH_BYTES: room for one batch
# more than a pool holds (BatchingHasher's two), as first fit leaves gaps: with room for two exactly, one
# batch in seven went through the pipe on the benchmark's photos (1-2% more hashing CPU). A batch that does
# not fit (a body larger than BATCH_BYTES) goes through the pipe.
ARENA_PER_BATCH = BATCH_BYTES
ARENA_BATCHES = 3
# What to do when hashing processes cannot start (a fork refused, a template ended).
CANNOT_START = "free memory, raise the process limit (ulimit -u) or lower run.workers"
# How long a dead pool's processes may take, in all, to report their exit status (the pool terminates the live
# ones).
EXIT_STATUS_SECONDS = 5.0


@contextmanager
def hashing_workers(count: int) -> Iterator[WorkerPool]:
    """Hashing worker processes and their body arena, starting now (from a thread when forked from a
    template still warming: WorkerPool.ready) and stopped on leaving."""
    with ExitStack() as stack:
        arena = None
        if arena_supported():
            arena = stack.enter_context(closing(Arena(ARENA_BATCHES * count * ARENA_PER_BATCH)))
        yield stack.enter_context(WorkerPool(count, arena))


@contextmanager
def hashing_pools(count: int) -> Iterator[list[WorkerPool]]:
    """`count` pools of one hashing process each, closed together. Pools still starting as they close (a
    unit worker whose units ended before its template warmed) would hold this process's exit until the
    template has warmed and forked their processes, and past the coordinator's patience (it then kills
    this process, and multiprocessing warns of leaked semaphores): the template is ended first, and they
    fail at once."""
    with ExitStack() as stack:
        pools: list[WorkerPool] = []
        try:
            for _ in range(count):
                pools.append(stack.enter_context(hashing_workers(1)))
            yield pools
        finally:  # before the stack closes them, also when one fails to open
            if not all(pool.ready for pool in pools):
                hashfork.stop_template()


class WorkerPool:
    """The hashing processes, guarded with no directory to write to, and the arena they map (if any).

    When one of them dies the executor is broken for good: restart() puts a fresh set in its place, and
    `generation` counts the sets, so that the many batches a death fails cause one restart, not many.
    """

    def __init__(self, count: int, arena: Arena | None = None) -> None:
        self.count = count
        self.arena = arena
        self.generation = 0
        self._reaper: threading.Thread | None = None  # death_reason's shutdown of a dead set
        self.executor, self._starting = _started_executor(count, arena, at_once=False)

    @property
    def processes(self) -> list:
        """The current set's Process objects, once started."""
        return self._starting.result()

    @property
    def ready(self) -> bool:
        """Whether the current set has started: a batch sent before waits, in the sender's thread, until it
        has (for the first set from a template still warming: up to a second or two)."""
        return self._starting.done()

    @property
    def start_error(self) -> HashingWorkersError | None:
        """Why the current set could not start, once it has tried; None when it started."""
        if not self._starting.done() or self._starting.exception() is None:
            return None
        return HashingWorkersError(
            f"hashing processes could not start ({self._starting.exception()}): {CANNOT_START}"
        )

    def on_ready(self, callback: Callable[[], None]) -> None:
        """Call back (in whatever thread starts the set) once the current set has started or failed to."""
        self._starting.add_done_callback(lambda _: callback())

    def restart(self) -> None:
        """Replace the processes (after one died); what the old set still held is lost with it. A fresh set
        that cannot start (no memory or process slot left to fork) is not raised here, in a callback whose
        batch would be lost with it: start_error says it, and every row waiting on the pool fails with it."""
        if self._reaper is None or not self._reaper.is_alive():  # else it is shutting the old set down
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.generation += 1
        try:
            self.executor, self._starting = _started_executor(self.count, self.arena, at_once=True)
        except Exception as exc:  # the old executor stays, shut down: start_error is checked before any use
            self._starting = Future()
            self._starting.set_exception(exc)

    def death_reason(self) -> HashingReason:
        """Why the current set broke: DECODE_TIMEOUT when a process was killed by its CPU budget (SIGXCPU) or
        a plug-in's wall-clock budget (SIGALRM), else HASHING_CRASHED. Blocks until the processes have
        exited (the pool terminates the others)."""
        # The executor's own thread reaps the processes; reading their status beside it is a race where
        # both read one status pipe (forkserver), and the loser sees 255: let it finish first.
        deadline = time.monotonic() + EXIT_STATUS_SECONDS
        self._reaper = threading.Thread(target=self.executor.shutdown, kwargs={"wait": True}, daemon=True)
        self._reaper.start()
        self._reaper.join(EXIT_STATUS_SECONDS)  # then what is left of it for the statuses
        for process in self.processes:
            while process.exitcode is None and time.monotonic() < deadline:
                process.join(0.05)
        budgets = {-s for s in (procguard.CPU_BUDGET_SIGNAL, procguard.WALL_BUDGET_SIGNAL) if s is not None}
        timed_out = any(p.exitcode in budgets for p in self.processes)
        return HashingReason.DECODE_TIMEOUT if timed_out else HashingReason.HASHING_CRASHED

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        # A set still starting is left to settle first: its thread shuts the executor down when the start
        # fails, and two shutdowns at once close one queue twice.
        futures.wait([self._starting])
        self.executor.shutdown(wait=True, cancel_futures=True)


def _started_executor(count: int, arena: Arena | None, at_once: bool) -> tuple[ProcessPoolExecutor, Future]:
    """The processes, all starting now, and a future of their Process objects, done once they have started.

    Processes forked from a template (runners/hashfork.py) start only when the template is warm: unless
    `at_once` (a restart, the template long warm), a thread waits for that, so that the fetch loop that
    opens the pool can send its first requests meanwhile. (A template that ended, and every process it
    forked with it, is started again by the first restart, which then waits a second or so for it to warm.)
    Spawned processes start at once, in this thread, with Ctrl-C ignored (procguard.children_ignore_ctrl_c),
    so one pressed while they import cannot interrupt them with a traceback: the main process stops the pool
    (and does, if the Ctrl-C arrives while they are being started); a template ignores Ctrl-C, and so do the
    processes it forks. Each gets this process's id, to end itself when this process dies.
    """
    context = hashfork.context()
    initargs = ((), arena.handle() if arena else None, os.getpid())
    executor = ProcessPoolExecutor(count, mp_context=context, initializer=init_worker, initargs=initargs)
    started: Future = Future()

    def start() -> None:
        try:
            with procguard.children_ignore_ctrl_c():  # a Ctrl-C meanwhile is delivered after
                for _ in range(count):
                    executor.submit(started_job)  # the pool starts a process per job waiting for one
        except BaseException as exc:
            executor.shutdown(wait=True, cancel_futures=True)
            ended = isinstance(exc, (EOFError, ConnectionError)) and hashfork.forked(context)
            started.set_exception(OSError(hashfork.ENDED) if ended else exc)  # not "unexpected EOF"
            if not isinstance(exc, Exception):
                raise
            return
        # The executor spawns every process in submit() and exposes none of them; their exit status is the
        # only word on why one died (SIGXCPU: the decode budget), and it is gone with the executor's own dict.
        started.set_result(list(executor._processes.values()))  # type: ignore[union-attr]

    if at_once or not hashfork.forked(context):
        start()
        started.result()  # raises what starting raised
    else:
        hashfork.ensure_template()  # from this thread: the start thread would start one to die with it
        threading.Thread(target=start, name="scanner-hashing-start", daemon=True).start()
    return executor, started


Waiting = list[tuple[bytes, "asyncio.Future[HashResult]"]]


class BatchingHasher:
    """The pipeline's hash function: bodies go to the workers in batches, only as fast as the workers hash.

    At most `batches_in_flight` batches are with the pool (sent and not yet returned); bodies that arrive
    meanwhile wait here and leave together (MAX_BATCH and BATCH_BYTES at most) when a batch comes back.
    Fuller batches cost the main process less per body (one round trip, one future, one wake-up a batch).
    Memory stays bounded
    by the pipeline's rows in flight, whether a body waits here, in the arena or in the pool's queue.

    A worker that dies (a decoder crash, the OOM killer) takes its pool with it: the pool restarts, and the
    bodies it held are retried one at a time with nothing else in flight, so the one that kills a fresh
    worker is known; its row gets HASHING_CRASHED (with its digests) instead of failing the scan, and on
    every resume; DECODE_TIMEOUT instead when the kernel killed that worker for going past the body's CPU
    budget (hashing.decode_timeout: a decode that stalls costs the budget twice, once in its batch and once
    alone). If a fresh pool then cannot hash a known-good image, the workers themselves are broken
    and every waiting row fails with that error.
    """

    def __init__(self, workers: WorkerPool, job: HashJob, batches_in_flight: int = 2) -> None:
        self._workers = workers
        self._job = job
        self._batch_job = partial(heap.trimmed, hash_batch, job=job)
        self._spans_job = partial(heap.trimmed, hash_spans, job=job)
        self._waiting: Waiting = []
        self._suspects: Waiting = []  # bodies a dead pool held, to retry one at a time
        self._quarantine: asyncio.Task[None] | None = None
        self._limit = batches_in_flight
        self._in_flight = 0
        self._awaiting_start = False

    @property
    def bodies_wanted(self) -> int:
        """Bodies this hasher can take at once: its batches in flight and one more waiting to go."""
        return (self._limit + 1) * MAX_BATCH

    @property
    def pending(self) -> int:
        """Bodies given and not yet hashed: waiting here, held by the pool (counted as full batches), or
        retried alone after a death."""
        return len(self._waiting) + len(self._suspects) + self._in_flight * MAX_BATCH

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
        if not self._workers.ready:  # its processes still starting: come back when they have
            if not self._awaiting_start:
                self._awaiting_start = True
                loop = asyncio.get_running_loop()
                self._workers.on_ready(partial(_call_in, loop, self._pool_started))
            return
        if (error := self._workers.start_error) is not None:
            self._stop_all(error)
            return
        # Suspects are checked before every batch: a submit can find the pool already dead (a worker that
        # died while idle) and turn its batch into suspects, which nothing else would come to retry.
        while True:
            if self._suspects or self._quarantine is not None:
                if self._in_flight == 0 and self._quarantine is None:
                    self._quarantine = asyncio.ensure_future(self._retry_suspects())
                return
            if not self._waiting or self._in_flight >= self._limit:
                return
            size = batch_length([len(body) for body, _ in self._waiting[:MAX_BATCH]])
            batch, self._waiting = self._waiting[:size], self._waiting[size:]
            self._submit(batch)

    def _pool_started(self) -> None:
        self._awaiting_start = False
        self._send()

    def _submit(self, batch: Waiting) -> None:
        loop = asyncio.get_running_loop()
        bodies = [body for body, _ in batch]
        arena = self._workers.arena
        spans = arena.put(bodies) if arena is not None else None
        generation = self._workers.generation
        try:
            if spans is None:
                sent = loop.run_in_executor(self._workers.executor, self._batch_job, bodies)
            else:
                sent = loop.run_in_executor(self._workers.executor, self._spans_job, spans)
        except BrokenProcessPool:  # a death this hasher has not heard of yet
            self._release(spans)
            self._crashed(generation, batch)
            return
        except Exception as exc:  # the pool is shut down: every waiting row sees why
            self._release(spans)
            for _, future in batch:
                _fail(future, exc)
            return
        self._in_flight += 1
        sent.add_done_callback(partial(self._deliver, batch, spans, generation))

    def _release(self, spans: list[Extent] | None) -> None:
        if spans is not None and self._workers.arena is not None:
            self._workers.arena.release(spans)

    def _deliver(
        self,
        batch: Waiting,
        spans: list[Extent] | None,
        generation: int,
        sent: asyncio.Future[list[HashResult]],
    ) -> None:
        self._in_flight -= 1
        self._release(spans)
        if sent.cancelled():
            for _, future in batch:
                future.cancel()
        elif isinstance(error := sent.exception(), BrokenProcessPool):
            self._crashed(generation, batch)
        elif error is None:
            for (_, future), result in zip(batch, sent.result(), strict=True):
                if not future.done():
                    future.set_result(result)
        elif len(batch) == 1:
            _fail(batch[0][1], error)
        else:  # a body broke the batch's job: each alone, so each row sees only what its own body did
            self._suspects.extend(batch)
        self._send()

    def _crashed(self, generation: int, batch: Waiting) -> None:
        """A worker of that generation died: restart once for it, and hold the batch's bodies as suspects."""
        if generation == self._workers.generation:
            self._workers.restart()
        self._suspects.extend(item for item in batch if not item[1].done())

    async def _retry_suspects(self) -> None:
        """Hash each suspect alone, nothing else in flight; blame only a body that kills a fresh worker."""
        loop = asyncio.get_running_loop()
        try:
            while self._suspects:
                if (error := self._workers.start_error) is not None:
                    raise error
                body, future = self._suspects[0]  # stays listed until settled, so _stop_all reaches it
                try:
                    result = await loop.run_in_executor(self._workers.executor, self._job, body)
                except BrokenProcessPool:
                    reason = await asyncio.to_thread(self._workers.death_reason)
                    self._workers.restart()
                    await self._check_fresh_pool()
                    result = self._job.crashed(body, reason)
                except Exception as exc:
                    result = exc
                self._suspects.pop(0)
                if isinstance(result, Exception):
                    _fail(future, result)
                elif not future.done():
                    future.set_result(result)
        except asyncio.CancelledError:
            self._stop_all(None)
            raise
        except Exception as exc:  # the workers are broken whatever they hash
            self._stop_all(exc)
        finally:
            self._quarantine = None
        self._send()

    def _stop_all(self, error: Exception | None) -> None:
        """Every row still waiting here fails with the error (or is cancelled, without one)."""
        for _, future in self._suspects + self._waiting:
            if error is None:
                future.cancel()
            else:
                _fail(future, error)
        self._suspects, self._waiting = [], []

    async def _check_fresh_pool(self) -> None:
        """Raise HashingWorkersError unless a fresh pool hashes a known-good image."""
        if (error := self._workers.start_error) is not None:
            raise error
        try:
            await asyncio.get_running_loop().run_in_executor(self._workers.executor, self._job, known_good())
        except BrokenProcessPool as exc:
            raise HashingWorkersError(
                "hashing workers die even on a known-good image: check memory limits and the decoders"
            ) from exc


def _call_in(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """Call back in the loop's thread; nothing once the loop has closed (the scan ended first)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


def batch_length(sizes: list[int]) -> int:
    """How many of the first bodies (their sizes, in order) one batch takes: up to MAX_BATCH, while they add
    up to BATCH_BYTES at most, and always the first."""
    total = count = 0
    for size in sizes[:MAX_BATCH]:
        total += size
        if count and total > BATCH_BYTES:
            break
        count += 1
    return count


def bodies_per_batch(body_bytes: int) -> int:
    """The most bodies of this size one batch holds (what a batch pickled through the pipe may carry)."""
    return batch_length([body_bytes] * MAX_BATCH)


class SpreadHasher:
    """The hash function of a fetch loop that feeds several hashing processes, each behind its own
    BatchingHasher: a body goes to the one with the least pending. One process that dies stops only its own
    pool's batches (a shared pool would hold every process's batches as suspects, retried one at a time
    while the other processes idle)."""

    def __init__(self, hashers: list[BatchingHasher]) -> None:
        self._hashers = hashers

    @property
    def bodies_wanted(self) -> int:
        return sum(hasher.bodies_wanted for hasher in self._hashers)

    def __call__(self, body: bytes) -> asyncio.Future[HashResult]:
        return min(self._hashers, key=lambda hasher: hasher.pending)(body)


def spread(hashers: list[BatchingHasher]) -> BatchingHasher | SpreadHasher:
    """One hasher as it is, several behind a SpreadHasher."""
    return hashers[0] if len(hashers) == 1 else SpreadHasher(hashers)


@functools.cache
def known_good() -> bytes:
    """A small PNG every decoder handles, made in memory."""
    picture = io.BytesIO()
    Image.linear_gradient("L").resize((64, 64)).save(picture, "PNG")
    return picture.getvalue()


def _fail(future: asyncio.Future[HashResult], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)

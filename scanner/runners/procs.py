"""Unit workers: processes that each run whole units (fetch loop, matching) and feed hashing processes of
their own, for a coordinator that only plans, hands out unit specs and commits the reports that come back.

Each unit worker holds what a Ray actor holds (runners/ray.py): the job's UnitWork (pickled once, when the
run starts) opened once into a UnitProcessor with its own fetcher, its hashing processes (for a job that
hashes: run.workers in all, up to run.hashers_per_unit_worker behind one fetch loop, see hashers_layout),
each in a pool of its own behind a SpreadHasher, so a body that kills its decoder costs only that process's
batches; and the matcher, whose arrays it maps read-only from the memory the coordinator filled once
(runners/shared.py). The fetch loop costs about a tenth of the hashing's CPU on photos.

Limits that protect a server or memory are totals: fetch.max_per_host, fetch.max_in_flight,
run.rows_in_flight and run.body_bytes_in_flight are divided among the unit workers (each gets at least 1,
and a body budget of at least 2 x fetch.max_bytes, so one largest body always fits beside another,
but never more than the whole budget).
run.units_in_flight is per hashing process behind a unit worker (per unit worker when the job does not hash),
as it is per actor on Ray.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import dataclasses
import multiprocessing
import os
import pickle
import signal
import tempfile
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any

from scanner import nostore, procguard
from scanner.config import ScanConfig
from scanner.crashlog import exception_line
from scanner.errors import ScannerError
from scanner.fetch.fetcher import transport_class
from scanner.lists import Matcher
from scanner.outcomes import Liveness, liveness
from scanner.pipeline import Progress
from scanner.plugins import load_plugins
from scanner.reports.records import RowResult, UnitReport
from scanner.run import checkpoint
from scanner.run.job import Run, UnitProcessor, UnitWork, hashing_job
from scanner.run.lifecycle import lists_later
from scanner.runners import hashfork, heap, scratch, shared
from scanner.runners.hashpool import BatchingHasher, WorkerPool, hashing_pools, spread

# How often a unit worker reports the rows it finished (and at each unit's end): the bar moves smoothly and
# the coordinator reads one message per interval, not one per row.
PROGRESS_SECONDS = 0.2
# A unit whose worker died is run again on a fresh one, this many times in all.
MAX_ATTEMPTS = 3
# How long stopped unit workers may take to close their connections and hashing processes.
STOP_SECONDS = 5.0
# Unit workers that die one after another, this many per worker, with no row finished in between, stop the
# run: something kills every fresh one (memory, a broken install), and replacing them forever helps nobody.
DEATHS_PER_WORKER = MAX_ATTEMPTS
# Units a worker may hold while image lists load, as a multiple of its usual window: its hashed rows wait
# for the lists holding their hashes and response details, no body (body_bytes_in_flight bounds those).
LOADING_WINDOW = 4
# The unit a worker's task runs: the rows it finishes are counted as that unit's (its row tasks inherit it).
_UNIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("unit", default=None)


class RemoteTraceback(Exception):
    """The traceback of an error raised in a unit worker, chained to it in the coordinator (crash log)."""

    def __str__(self) -> str:
        return str(self.args[0])


def share(total: int, count: int, index: int) -> int:
    """Worker `index`'s part of a limit shared by `count` workers: the parts add up to `total` (each at
    least 1, so with more workers than `total` the sum is `count`)."""
    return max(1, total // count + (index < total % count))


def hashers_layout(config: ScanConfig, hashing: bool) -> list[int]:
    """The hashing processes of each unit worker, one entry a unit worker: run.workers of them in all (one
    per core by default), run.hashers_per_unit_worker at most behind one fetch loop, whose CPU is a small
    share of theirs (a unit worker is the larger process: sharing it keeps memory per added core down). A
    job that does not hash gets run.workers unit workers, none behind them."""
    total = config.run.worker_count
    if not hashing:
        return [0] * total
    count = -(-total // config.run.hashers_per_unit_worker)
    return [share(total, count, i) for i in range(count)]


def worker_config(config: ScanConfig, index: int, count: int) -> ScanConfig:
    """The settings of unit worker `index` of `count`: the total limits divided among the workers."""
    fetch = dataclasses.replace(
        config.fetch,
        max_per_host=share(config.fetch.max_per_host, count, index),
        max_in_flight=share(config.fetch.max_in_flight, count, index),
    )
    body_bytes = max(share(config.run.body_bytes_in_flight, count, index), 2 * config.fetch.max_bytes)
    run = dataclasses.replace(
        config.run,
        rows_in_flight=share(config.run.rows_in_flight, count, index),
        commit_every_rows=share(config.run.commit_every_rows, count, index),
        body_bytes_in_flight=min(body_bytes, config.run.body_bytes_in_flight),
    )
    return dataclasses.replace(config, fetch=fetch, run=run)


def body_bytes_total(config: ScanConfig, count: int) -> int:
    """The bytes of bodies `count` unit workers may hold together: more than run.body_bytes_in_flight when
    its share per worker is below the floor of 2 x fetch.max_bytes."""
    return sum(worker_config(config, i, count).run.body_bytes_in_flight for i in range(count))


def body_budget_note(config: ScanConfig, count: int) -> str | None:
    """One line for a scan whose workers may hold more bodies than configured, else None."""
    total, configured = body_bytes_total(config, count), config.run.body_bytes_in_flight
    if total <= configured:
        return None
    mib = 1024 * 1024
    return (
        f"scanner: warning: bodies in memory may reach {total / mib:.0f} MiB, above "
        f"run.body_bytes_in_flight ({configured / mib:.0f} MiB): each of the {count} unit workers holds "
        f"at least 2 x fetch.max_bytes ({2 * config.fetch.max_bytes / mib:.0f} MiB); raise the budget, lower "
        "fetch.max_bytes or use fewer --workers to keep it"
    )


# ---------------------------------------------------------------- the coordinator's side


class UnitWorker:
    """One unit worker process, its end of the pipe, and the units it is running."""

    def __init__(
        self, config: ScanConfig, index: int, count: int, hashers: int, scratch_dir: str | None
    ) -> None:
        self.index = index
        self.running: dict[int, Any] = {}
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        settings = worker_config(config, index, count)
        self.process = context.Process(
            target=worker_main,
            args=(child, settings, hashers, os.getpid(), scratch_dir),
            name=f"scanner-unit-{index}",
        )
        self.process.start()
        child.close()

    def send(self, message: object) -> None:
        self.conn.send(message)

    def died(self) -> str:
        """Why the process ended, in words."""
        code = self.process.exitcode
        if code is not None and code < 0:
            return f"its worker process was killed ({signal.Signals(-code).name})"
        return f"its worker process exited (status {code})"


class UnitWorkers:
    """The unit worker processes: started at once (they import while the coordinator loads the lists),
    given the job's unit work and the lists when they are loaded, stopped on leaving. `hashers`: how many
    hashing processes each feeds (hashers_layout), one entry a unit worker."""

    def __init__(self, config: ScanConfig, hashers: list[int]) -> None:
        self.config = config
        self.hashers = hashers
        self.workers: list[UnitWorker] = []
        self._work: bytes | None = None
        self._lists: shared.SharedObject | None = None
        self._matcher: Matcher | None = None
        self._rest: shared.SharedObject | list | None = None  # the image lists sent after the others
        self._rest_built: shared.SharedObject | list | BaseException | None = None
        self.rest_ready: int | None = None  # readable once the rest is built (a pipe's end)
        self._rest_signal: int | None = None
        # The rest's thread and the pool's end: a thread still building when the scan ends (every row failed
        # before its hash) must not write to a closed pipe (its number may be another file's by then).
        self._ending = threading.Lock()
        self._ended = False
        # Where their hashing templates' sockets go, removed when the pool ends (runners/scratch.py).
        forking = any(hashers) and hashfork.forking()
        self.scratch = scratch.open_scratch(scratch.temporary_base()) if forking else None
        try:
            self._spawn(range(self.count))
        except BaseException:
            self.__exit__()
            raise

    @property
    def count(self) -> int:
        return len(self.hashers)

    def _spawn(self, indexes: range | list[int]) -> None:
        where = self.scratch.path if self.scratch else None
        with procguard.children_ignore_ctrl_c():  # the coordinator stops them
            for i in indexes:
                worker = UnitWorker(self.config, i, self.count, self.hashers[i], where)
                if i < len(self.workers):
                    self.workers[i] = worker
                else:
                    self.workers.append(worker)

    def give(self, work: UnitWork, matcher: Matcher, later: bool = False) -> None:
        """Send every worker the job's unit work (pickled once, here) and share the matcher's indexes
        (built once, here) with them: the lists ready now at once, the image lists still loading and
        building (lists/deferred.py) once they are built (rest_ready, send_rest), for a job whose units
        match image hashes off the event loop (`later`: Job.lists_later)."""
        self._work = pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL)
        later = later and matcher.has_background and lists_later(self.config)
        self._matcher = matcher.ready_part() if later else matcher
        if shared.supported():
            self._lists = shared.SharedObject(self._matcher)
            matcher.hold_shared(self._lists.load())  # as the rest below: the lists once in memory
            heap.now()
        for worker in self.workers:
            with contextlib.suppress(OSError):  # a dead worker: its sentinel says so, and it is replaced
                self._send_lists(worker)
        if later:
            self.rest_ready, self._rest_signal = os.pipe()
            threading.Thread(target=self._build_rest, args=(matcher,), name="lists-rest", daemon=True).start()

    def _build_rest(self, matcher: Matcher) -> None:
        """In a thread: wait for the lists still loading and building, then put them in shared memory."""
        built: shared.SharedObject | list | BaseException
        try:
            built = self._shared_rest(matcher)
        except BaseException as error:  # the coordinator's loop raises it: the run stops with its message
            built = error
        with self._ending:
            if self._ended:  # nobody waits for it now
                if isinstance(built, shared.SharedObject):
                    built.close()
                return
            self._rest_built = built
            os.write(self._rest_signal, b"\0")

    @staticmethod
    def _shared_rest(matcher: Matcher) -> shared.SharedObject | list:
        rest = matcher.rest()
        if not shared.supported():
            return rest
        built = shared.SharedObject(rest)
        del rest
        try:
            # The coordinator keeps the shared pages (which it never reads), not its own copy: the indexes
            # once in memory, not twice; the C heap keeps what they freed unless told.
            matcher.hold(built.load())
        except BaseException:
            built.close()
            raise
        heap.now()
        return built

    @property
    def lists_loading(self) -> bool:
        """Whether image lists are still loading, and the workers' hashed rows wait for them."""
        return self.rest_ready is not None and self._rest is None

    def rest_waited(self) -> list[int]:
        """What the coordinator's loop waits on besides the workers: the signal that the rest is built."""
        return [self.rest_ready] if self.rest_ready is not None and self.lists_loading else []

    def send_rest(self) -> None:
        """The rest of the lists are built: send them to every worker (the coordinator's loop calls this
        when rest_ready is readable)."""
        os.read(self.rest_ready, 1)
        built, self._rest_built = self._rest_built, None
        if isinstance(built, BaseException):
            raise built
        self._rest = built
        for worker in self.workers:
            with contextlib.suppress(OSError):
                self._send_rest(worker)

    def _send_lists(self, worker: UnitWorker) -> None:
        worker.send(("work", self._work))
        if self._lists is None:
            worker.send(("matcher", self._matcher))
        else:
            handle = self._lists.handle()
            worker.send(("lists", handle.size, handle.data, handle.extents))
            send_handle(worker.conn, handle.fd, worker.process.pid)
        if self._rest is not None:
            self._send_rest(worker)

    def _send_rest(self, worker: UnitWorker) -> None:
        if not isinstance(self._rest, shared.SharedObject):
            worker.send(("rest", self._rest))
            return
        handle = self._rest.handle()
        worker.send(("rest", handle.size, handle.data, handle.extents))
        send_handle(worker.conn, handle.fd, worker.process.pid)

    def replace(self, worker: UnitWorker) -> UnitWorker:
        """A fresh process in a dead one's place, given the lists."""
        worker.conn.close()
        self._spawn([worker.index])
        fresh = self.workers[worker.index]
        with contextlib.suppress(OSError):
            self._send_lists(fresh)
        return fresh

    def __enter__(self) -> UnitWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._stop()
        finally:
            for worker in self.workers:
                if worker.process.is_alive():
                    worker.process.kill()
                worker.process.join()
                worker.conn.close()
            with self._ending:
                self._ended = True
            for held in (self._lists, self._rest, self._rest_built):
                if isinstance(held, shared.SharedObject):
                    held.close()
            for fd in (self.rest_ready, self._rest_signal):
                if fd is not None:
                    os.close(fd)
            if self.scratch is not None:  # the workers have ended: what a killed one left goes too
                self.scratch.close()

    def _stop(self) -> None:
        """Ask every worker to stop (cancelling what it runs) and wait a while for each to close down, reading
        what they still send: a worker blocked sending a large part or report to a full pipe would never see
        the request, and be killed with its hashing process's semaphores unreleased."""
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker.send(("stop",))
        deadline = time.monotonic() + STOP_SECONDS
        running = {w.process.sentinel: w for w in self.workers}
        reading = {w.conn: w for w in self.workers}
        while running and (left := deadline - time.monotonic()) > 0:
            for ready in wait([*running, *reading], timeout=left):
                if ready in running:
                    running.pop(ready).process.join()
                    continue
                try:
                    ready.recv()  # what it sent is dropped: the run is over
                except (EOFError, OSError):
                    reading.pop(ready, None)


def run_units(run: Run, units: list, progress: Progress | None = None, *, pool: UnitWorkers) -> None:
    """Hand the units out to the unit workers, at most run.units_in_flight each, and commit each report
    as it comes back."""
    if units:
        pool.give(run.work(), run.matcher, run.job.lists_later)
        _Coordinator(pool, run, progress or Progress()).run(units)


class _Coordinator:
    """The coordinator's loop: a queue of units, the units each worker runs, and each unit's attempts."""

    def __init__(self, pool: UnitWorkers, run: Run, progress: Progress) -> None:
        self._pool = pool
        self._run = run
        self._progress = progress
        self._per_worker = run.config.run.units_in_flight
        self._queue: deque[Any] = deque()
        self._attempts: Counter[int] = Counter()
        self._shown: dict[int, Counter] = {}  # rows of each unit in flight the bar counts, until committed
        self._parted: dict[
            int, Counter
        ] = {}  # rows of each unit in flight committed in parts (kept on a rerun)
        self._kept_shown: dict[int, Counter] = {}  # of those, what the bar was given back at a take-back
        self._deaths = 0  # worker deaths since a row last finished
        self._streak: list[frozenset[int]] = []  # the units in flight at each of those deaths
        # Units in flight together at a death, each with the units it died beside: each runs again alone.
        self._suspects: dict[int, frozenset[int]] = {}

    def run(self, units: list) -> None:
        self._queue.extend(units)
        while self._queue or any(w.running for w in self._pool.workers):
            self._hand_out()
            by_conn = {w.conn: w for w in self._pool.workers}
            by_sentinel = {w.process.sentinel: w for w in self._pool.workers}
            rest = self._pool.rest_waited()
            for ready in wait([*by_conn, *by_sentinel, *rest]):
                if ready in rest:
                    self._pool.send_rest()
                elif ready in by_conn:
                    self._read(by_conn[ready])
                elif by_sentinel[ready] in self._pool.workers:
                    self._lost(by_sentinel[ready])

    def _hand_out(self) -> None:
        """One unit at a time to the least busy worker: 16 units on 16 workers start on all 16, not three
        each on the first five; a worker's load is counted against its capacity, which follows the hashing
        processes behind it. A suspect first in line waits for an idle worker: the least busy takes nothing
        more until it is idle, while the others go on with the first unit behind that is no suspect."""
        while self._queue and self._pool.workers:
            order = sorted(self._pool.workers, key=lambda w: self._load(w) / self._capacity(w))
            head = self._queue[0]
            if head.id not in self._suspects:
                if not self._takes(order[0], head.id):
                    return
                self._start(order[0], self._queue.popleft())
                continue
            idle = next((w for w in order if not w.running), None)
            if idle is not None:
                self._start(idle, self._queue.popleft())
                continue
            behind = next((u for u in self._queue if u.id not in self._suspects), None)
            taker = next((w for w in order[1:] if behind and self._takes(w, behind.id)), None)
            if behind is None or taker is None:
                return
            self._queue.remove(behind)
            self._start(taker, behind)

    def _start(self, worker: UnitWorker, unit: Any) -> None:
        self._attempts[unit.id] += 1
        worker.running[unit.id] = unit
        with contextlib.suppress(OSError):  # a dead worker: its sentinel says so, and why
            worker.send(("unit", unit, self._run.checkpoint.part_paths(unit.id)))

    def _capacity(self, worker: UnitWorker) -> int:
        """Units a worker runs at once: run.units_in_flight for each hashing process behind it (or for it
        alone, in a job that does not hash), so as many rows are in flight per core as before; LOADING_WINDOW
        times that while image lists load, so that the fetching and hashing go on while hashed rows wait."""
        units = self._per_worker * max(1, self._pool.hashers[worker.index])
        return units * LOADING_WINDOW if self._pool.lists_loading else units

    def _load(self, worker: UnitWorker) -> int:
        """How busy a worker is: one running a suspect unit is full."""
        alone = any(unit_id in self._suspects for unit_id in worker.running)
        return self._capacity(worker) if alone else len(worker.running)

    def _takes(self, worker: UnitWorker, unit_id: int) -> bool:
        """Whether the worker can start the unit now: a suspect only on an idle worker, alone."""
        if unit_id in self._suspects:
            return not worker.running
        return self._load(worker) < self._capacity(worker)

    def _read(self, worker: UnitWorker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._lost(worker)
            return
        self._handle(worker, message)

    def _handle(self, worker: UnitWorker, message: tuple) -> None:
        kind = message[0]
        if kind == "rows":
            self._deaths, self._streak = 0, []
            for unit_id, counts in message[1].items():
                self._progress.rows_done(counts)
                self._shown.setdefault(unit_id, Counter()).update(counts)
            if message[2]:
                self._progress.matched(message[2])
        elif kind == "part":
            self._run.checkpoint.commit_part(message[1], message[2])
            self._parted.setdefault(message[1], Counter()).update(_row_counts(message[2]))
        elif kind == "done":
            report: UnitReport = message[1]
            self._run.checkpoint.commit(report)
            del worker.running[report.unit_id]
            for counted in (self._shown, self._parted, self._kept_shown):
                counted.pop(report.unit_id, None)
            self._deaths, self._streak = 0, []
            self._suspects.pop(report.unit_id, None)
            self._progress.unit_done()
        elif kind == "failed":
            _, error, text = message
            raise error from RemoteTraceback(text)

    def _lost(self, worker: UnitWorker) -> None:
        """A worker died: take what it sent before, then run its units again on a fresh one. Units that died
        together are not charged: any one of them may have killed it (a unit that had sent rows no likelier
        than one still opening its shard), so each runs again alone (suspects), first. A lone unit is
        charged an attempt and waits behind the queue, so that the others run in between: were it alone
        to die again and again, the deaths in a row would blame the workers; and a suspect that dies alone
        clears the units it died beside. The bar takes back the rows it counted for them."""
        if worker not in self._pool.workers:
            return
        with contextlib.suppress(EOFError, OSError):
            while worker.conn.poll():
                self._handle(worker, worker.conn.recv())
        worker.process.join()
        why = worker.died()
        self._deaths += 1
        if self._deaths > DEATHS_PER_WORKER * len(self._pool.workers):
            raise self._dying(why)
        units = list(worker.running.values())
        self._streak.append(frozenset(u.id for u in units))
        for unit in units:
            self._take_back(unit.id)
        if len(units) == 1:
            self._charge(units[0], why)
        else:
            together = frozenset(u.id for u in units)
            self._suspects.update(dict.fromkeys(together, together))
            for unit in units:
                self._attempts[unit.id] -= 1  # not known to be its doing
            self._queue.extendleft(reversed(units))
        self._pool.replace(worker)

    def _charge(self, unit: Any, why: str) -> None:
        """A unit that died alone: its attempt counts, and it runs again after the units waiting."""
        if self._attempts[unit.id] >= MAX_ATTEMPTS:
            raise self._failed(unit, why)
        for other in self._suspects.get(unit.id, frozenset()) - {unit.id}:
            self._suspects.pop(other, None)
        self._queue.append(unit)

    def _failed(self, unit: Any, why: str) -> ScannerError:
        """A unit charged its last attempt: its own doing when it was in flight at every death since a row
        last finished, else the workers die whatever they run."""
        if not all(unit.id in units for units in self._streak):
            return self._dying(why)
        return ScannerError(
            f"{unit.where} failed {self._attempts[unit.id]} times, last because {why}; "
            "run the same command to resume"
        )

    def _dying(self, why: str) -> ScannerError:
        return ScannerError(
            f"unit workers died {self._deaths} times in a row without finishing a row, last because "
            f"{why.removeprefix('its ')}; run the same command to resume"
        )

    def _take_back(self, unit_id: int) -> None:
        """The rows of a unit to be run again leave the bar, which counts them when they are done again; but
        its rows committed in parts are kept, not run again: the bar counts them once, here."""
        kept = self._parted.get(unit_id, Counter())
        change = Counter(kept)
        change.subtract(self._shown.pop(unit_id, Counter()))
        change.subtract(self._kept_shown.pop(unit_id, Counter()))
        self._kept_shown[unit_id] = Counter(kept)
        if any(change.values()):
            self._progress.rows_done({key: rows for key, rows in change.items() if rows})


def _bar_key(result: RowResult) -> tuple[str, str | None, Liveness]:
    """What the bar counts a row by: its outcome, reason and liveness."""
    return result.outcome, result.reason, liveness(result.outcome, result.reason, result.fetched_at)


def _row_counts(rows: list[tuple[int, UnitReport]]) -> Counter:
    """A part's rows as the bar counts them."""
    return Counter(_bar_key(r) for _, report in rows for r in report.outcomes)


# ---------------------------------------------------------------- the unit worker's side


def worker_main(
    conn: Connection, config: ScanConfig, hashers: int, parent: int, scratch_dir: str | None = None
) -> None:
    """A unit worker: hardened and guarded like the coordinator (no writes at all), ending with it, Ctrl-C
    left to it; it runs units until told to stop. Its hashing template's socket goes in the scan's scratch
    directory, where there is one."""
    procguard.harden()
    procguard.die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    atexit.register(os._exit, 0)  # nothing to flush: skip tearing down numba, LLVM and the rest
    try:
        if hashers:
            if scratch_dir is not None and os.path.isdir(scratch_dir):  # else removed under a live scan
                tempfile.tempdir = scratch_dir
            hashfork.start_template()  # it warms while this process imports and the lists load
        nostore.install(())
        load_plugins(config.plugins)  # the registry as the coordinator has it, before any list or record
        with contextlib.ExitStack() as stack:
            transport_class(config.fetch.client)  # its import first (aiohttp: a quarter second of CPU)
            given = _receive(conn)  # then its hashing processes, which the first request does not wait for
            # A pool of one process each: a body that kills its process breaks that pool alone (its batches
            # are retried alone), while the others go on hashing.
            pools = stack.enter_context(hashing_pools(hashers))
            if given is not None:
                heap.fewer_collections()
                asyncio.run(_serve(conn, config, *given, pools))
    except Exception as exc:  # the coordinator says it in one line; no traceback on stderr, no status 0
        _tell(conn, _failed(exc))
        hashfork.forget_template()
        os._exit(1)


def _receive(conn: Connection) -> tuple[UnitWork, Matcher] | None:
    """The job's unit work, then the matcher: over the coordinator's shared memory where there is one, else
    whole through the pipe. None when the coordinator stops first."""
    try:
        message = conn.recv()
        if message[0] != "work":
            return None
        work: UnitWork = pickle.loads(message[1])
        message = conn.recv()
    except EOFError:
        return None
    if message[0] == "matcher":
        return work, message[1]
    if message[0] != "lists":
        return None
    _, size, data, extents = message
    handle = shared.SharedHandle(recv_handle(conn), size, data, extents)
    return work, shared.attach(handle).load()


def open_work(
    work: UnitWork, config: ScanConfig, matcher: Matcher, pools: list[WorkerPool], progress: Progress
) -> UnitProcessor:
    """This worker's unit processor, opened once: its own fetcher, its hashing processes (if the job hashes),
    two batches in flight for each."""
    hash_fn = None
    if pools and work.hashing:
        job = hashing_job(config, matcher)
        hash_fn = spread([BatchingHasher(pool, job, 2) for pool in pools])
    return work.open(config, matcher, hash_fn, progress)


async def _serve(
    conn: Connection, config: ScanConfig, work: UnitWork, matcher: Matcher, pools: list[WorkerPool]
) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple] = asyncio.Queue()

    def readable() -> None:
        try:
            message = conn.recv()
            if message[0] == "rest" and len(message) > 2:  # its memfd follows it on the pipe
                message = (*message, recv_handle(conn))
            inbox.put_nowait(message)
        except (EOFError, OSError):  # the coordinator is gone
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(("stop",))

    progress = _BatchedProgress(conn.send)
    processor = open_work(work, config, matcher, pools, progress)
    running: set[asyncio.Task[None]] = set()
    loop.add_reader(conn.fileno(), readable)
    try:
        while (message := await inbox.get())[0] in ("unit", "rest"):
            if message[0] == "rest":
                matcher.fill(_rest(message))
                continue
            task = asyncio.create_task(_run_one(conn, processor, progress, *message[1:]))
            running.add(task)
            task.add_done_callback(running.discard)
    finally:
        loop.remove_reader(conn.fileno())
        matcher.give_up()  # a match still waiting for lists that will never come ends
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await processor.aclose()


def _rest(message: tuple) -> list:
    """The image lists sent after the others: over shared memory, or whole through the pipe."""
    if len(message) == 2:
        return message[1]
    _, size, data, extents, fd = message
    return shared.attach(shared.SharedHandle(fd, size, data, extents)).load()


async def _run_one(
    conn: Connection, processor: UnitProcessor, progress: _BatchedProgress, unit: Any, parts: list[str]
) -> None:
    _UNIT.set(unit.id)
    try:
        kept = checkpoint.read_parts(unit.id, parts) if parts else {}  # read here, not sent: see part_paths
        report: UnitReport = await processor.run_unit(unit, kept)
    except Exception as exc:  # the coordinator raises it: the run stops, as it would in one process
        _tell(conn, _failed(exc))
        return
    try:
        progress.flush()
        conn.send(("done", report))
    except Exception as exc:  # a report that cannot be sent: say why rather than leave the unit waiting
        _tell(conn, _failed(exc))


def _failed(exc: Exception) -> tuple:
    """The message that makes the coordinator raise exc, with this worker's traceback chained to it."""
    return ("failed", _portable(exc), "".join(traceback.format_exception(exc)))


def _tell(conn: Connection, message: tuple) -> None:
    """Send, or end this worker when even that fails: its death makes the coordinator run its units again
    rather than wait for them forever."""
    try:
        conn.send(message)
    except Exception:
        os._exit(1)


def _portable(exc: Exception) -> Exception:
    """The error itself when it survives a pickle round trip, else a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(exception_line(exc))
    return exc


class _BatchedProgress(Progress):
    """Rows finished, counted by unit and (outcome, reason, liveness) and sent every PROGRESS_SECONDS (and
    at each unit's end): the coordinator's bar keeps the one definition of live (outcomes.liveness) at a
    message a batch, and takes back the rows of a unit run again."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        self._send = send
        self._counts: dict[int | None, Counter[tuple[str, str | None, Liveness]]] = {}
        self._matches = 0
        self._sent = time.monotonic()

    def row_done(self, result: RowResult) -> None:
        self._counts.setdefault(_UNIT.get(), Counter())[_bar_key(result)] += 1
        if time.monotonic() - self._sent >= PROGRESS_SECONDS:
            self.flush()

    def matched(self, rows: int) -> None:
        self._matches += rows

    takes_parts = True  # the coordinator commits them

    def part(self, unit_id: int, rows: list[tuple[int, UnitReport]]) -> None:
        self._send(("part", unit_id, rows))

    def flush(self) -> None:
        if self._counts or self._matches:
            self._send(("rows", {unit: dict(counts) for unit, counts in self._counts.items()}, self._matches))
            self._counts, self._matches = {}, 0
        self._sent = time.monotonic()
        heap.now_and_then()  # what bodies and finished rows left, back to the system

"""Run a job's units on a Ray cluster: a pool of actors, each holding the matcher once and running whole
units.

The driver plans, keeps a bounded window of units in flight (ray.wait), retries a failed unit a bounded number
of times on a fresh actor, and commits every returned unit through the same Checkpoint as the local runner.
Only unit specs go to the workers and only outcomes and match records come back: image bytes stay in one
worker's memory and never enter Ray's object store.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scanner import __version__, nostore, procguard
from scanner.config import ScanConfig
from scanner.crashlog import exception_line
from scanner.errors import ConfigError, ScannerError
from scanner.lists import Matcher
from scanner.outcomes import Outcome
from scanner.pipeline import Progress
from scanner.plugins import load_plugins
from scanner.reports.records import UnitReport
from scanner.run.job import Job, Run, UnitProcessor, UnitWork, execute, hashing_job
from scanner.run.lifecycle import ScanResult
from scanner.run.scan import ScanJob, ScanWork
from scanner.runners import heap
from scanner.runners.hashpool import BatchingHasher, hashing_workers

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
STALL_WARNING_SECONDS = 300.0
CONNECT_CHECK_SECONDS = 5.0
DRAIN_SECONDS = 10.0


def require_ray() -> Any:
    """Import Ray, or fail loudly: asking for the Ray runner without Ray must never quietly do nothing."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--runner ray needs Ray on this machine and on every node: pip install 'scanner[ray]'"
        ) from exc
    return ray


def connect(address: str | None = None) -> list[str]:
    """Join the cluster at address ('auto', 'ray://host:port'), or start a local one; return Ray's local
    directory, which the driver's write guard must allow (session logs and sockets, never image content)."""
    ray = require_ray()
    if not ray.is_initialized():
        check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(
                f"cannot connect to the Ray cluster at {address or 'a new local cluster'}: {exc}"
            ) from exc
    return ray_local_dirs()


def check_reachable(address: str | None) -> None:
    """Fail fast on a HOST:PORT nobody listens at: ray.init would retry it for minutes, looking hung."""
    if not address or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_CHECK_SECONDS).close()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no Ray cluster answers at {address} ({exc})") from exc


def ray_local_dirs() -> list[str]:
    """Where Ray keeps this node's session files (default /tmp/ray); none for a Ray Client (ray://) driver."""
    from ray._private.worker import global_worker

    node = getattr(global_worker, "node", None)
    return [node.get_temp_dir_path()] if node is not None else []


def scan(
    config: ScanConfig, restart: bool = False, make_progress: Callable[[Run], Progress] | None = None
) -> ScanResult:
    """Run a whole scan on Ray, resuming from committed units in config.out; same reports as a local scan."""
    return run(ScanJob(config), restart, make_progress)


def run(
    job: Job, restart: bool = False, make_progress: Callable[[Run], Progress] | None = None
) -> ScanResult:
    """Run a whole job (scan, rescan, rematch) on Ray; same reports as on the local runner. The driver and
    every actor are hardened (procguard): no core dumps, not dumpable."""
    procguard.harden()
    connect(job.config.run.ray_address)
    return execute(job, run_units, restart, make_progress)


class UnitWorker:
    """A Ray actor: the matcher (from the object store, once) and the job's unit work, opened on the first
    unit: for a scan or rescan a fetcher, a hashing process and opened shards or stored records.

    Bodies are hashed in a worker process of the actor's own, as the local runner hashes them (body arena,
    batches, a dead worker replaced and its body blamed alone), so a decode past hashing.decode_timeout
    costs its row (decode_timeout), not the actor and the unit with it.
    """

    def __init__(
        self, config: ScanConfig, matcher: Matcher, driver_version: str, work: UnitWork | None = None
    ) -> None:
        if driver_version != __version__:
            raise ConfigError(
                f"scanner {__version__} on this node, {driver_version} on the driver: install one version"
            )
        procguard.harden()  # before any body: no core dump of this actor, not dumpable
        nostore.install(())
        self._config = config
        self._matcher = matcher
        self._work = work if work is not None else ScanWork()
        self._processor: UnitProcessor | None = None
        self._hashing = contextlib.ExitStack()

    async def run_unit(self, unit: Any, kept: dict | None = None) -> UnitReport:
        """Process one unit (less the rows a local run committed in parts: `kept`); the report holds
        outcomes and match records, never image bytes. An actor commits whole units, no parts."""
        if self._processor is None:
            self._processor = self._start()
        return await self._processor.run_unit(unit, kept)

    async def close(self) -> None:
        """Close the fetcher's connections before the actor ends."""
        if self._processor is not None:
            await self._processor.aclose()
        self._hashing.close()

    def _start(self) -> UnitProcessor:
        """Open the work inside the actor's event loop (the fetcher's sessions belong to it)."""
        load_plugins(self._config.plugins)  # the registry as the driver has it
        heap.fewer_collections()
        hash_fn = None
        if self._work.hashing:
            # Its one hashing process is spawned: a template would save nothing for one process, and ray.kill
            # ends an actor without the exit handlers that remove a template's socket directory.
            workers = self._hashing.enter_context(hashing_workers(1))
            hash_fn = BatchingHasher(workers, hashing_job(self._config, self._matcher), 2)
        return self._work.open(self._config, self._matcher, hash_fn, None)


@dataclass(eq=False)
class _Slot:
    """One actor of the pool and the units it is running."""

    actor: Any
    running: int = 0


class Pool:
    """A fixed number of UnitWorker actors; a dead one is replaced, its units retried elsewhere."""

    def __init__(self, run: Run, size: int) -> None:
        ray = require_ray()
        self._ray = ray
        self._remote = ray.remote(num_cpus=1, max_concurrency=run.config.run.units_in_flight)(UnitWorker)
        self._config = run.config
        self._matcher = ray.put(run.matcher)
        self._work = ray.put(run.work())
        self.slots = [self._new_slot(i) for i in range(size)]

    def _new_slot(self, index: int) -> _Slot:
        name = f"scanner-unit-worker-{index}-{time.monotonic_ns()}"
        return _Slot(
            self._remote.options(name=name).remote(self._config, self._matcher, __version__, self._work)
        )

    def least_busy(self) -> _Slot:
        return min(self.slots, key=lambda slot: slot.running)

    def replace(self, dead: _Slot) -> None:
        """Swap a dead actor for a new one (once, however many of its units report the death)."""
        if dead in self.slots:
            self._ray.kill(dead.actor, no_restart=True)
            self.slots[self.slots.index(dead)] = self._new_slot(self.slots.index(dead))

    def close(self) -> None:
        """Let each actor close its connections, then end it."""
        self._ray.wait(
            [slot.actor.close.remote() for slot in self.slots], num_returns=len(self.slots), timeout=5
        )
        for slot in self.slots:
            self._ray.kill(slot.actor, no_restart=True)


def run_units(
    run: Run,
    units: list,
    progress: Progress | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> None:
    """Run units on the pool with at most units_in_flight per actor, committing each as it returns."""
    if not units:
        return
    ray = require_ray()
    pool = Pool(run, pool_size(run.config, ray))
    scheduler = _Scheduler(ray, pool, run, progress or Progress(), max_attempts)
    try:
        scheduler.run(units)
    finally:
        pool.close()
        scheduler.drain()


def pool_size(config: ScanConfig, ray: Any) -> int:
    """Actors to start: --workers, else one per cluster CPU; never more than it has, or some would wait."""
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < 1:
        raise ConfigError("the Ray cluster has no CPU for scanner workers")
    if config.run.workers > cpus:
        logger.warning(
            "%d workers asked for, the Ray cluster has %d CPUs: starting %d", config.run.workers, cpus, cpus
        )
    return min(config.run.workers or cpus, cpus)


class _Scheduler:
    """The driver's loop: a queue of units, the units in flight on the pool, and each unit's attempts."""

    def __init__(self, ray: Any, pool: Pool, run: Run, progress: Progress, max_attempts: int) -> None:
        self._ray = ray
        self._pool = pool
        self._run = run
        self._progress = progress
        self._max_attempts = max_attempts
        self._per_actor = run.config.run.units_in_flight
        self._queue: deque[Any] = deque()
        self._pending: dict[Any, tuple[Any, _Slot]] = {}
        self._attempts: Counter[int] = Counter()

    def run(self, units: list[Any]) -> None:
        """Keep every actor's slots full until every unit is committed, or one runs out of attempts."""
        self._queue.extend(units)
        while self._queue or self._pending:
            while self._queue and self._pool.least_busy().running < self._per_actor:
                self._submit(self._queue.popleft())
            ready, _ = self._ray.wait(list(self._pending), num_returns=1, timeout=STALL_WARNING_SECONDS)
            if not ready:
                logger.warning(
                    "no unit finished in %.0f s; %d in flight", STALL_WARNING_SECONDS, len(self._pending)
                )
            for ref in ready:
                self._collect(ref)

    def drain(self) -> None:
        """Collect what the units a failed scan left in flight became (their actors are gone), so Ray does
        not print each as an unhandled error."""
        if not self._pending:
            return
        ready, _ = self._ray.wait(list(self._pending), num_returns=len(self._pending), timeout=DRAIN_SECONDS)
        for ref in ready:
            with contextlib.suppress(self._ray.exceptions.RayError):
                self._ray.get(ref)

    def _submit(self, unit: Any) -> None:
        slot = self._pool.least_busy()
        slot.running += 1
        self._attempts[unit.id] += 1
        kept = self._run.checkpoint.kept(unit.id)
        self._pending[slot.actor.run_unit.remote(unit, kept)] = (unit, slot)

    def _collect(self, ref: Any) -> None:
        """Commit a returned unit, or queue a failed one again (first) while it has attempts left."""
        unit, slot = self._pending.pop(ref)
        slot.running -= 1
        errors = self._ray.exceptions
        try:
            report: UnitReport = self._ray.get(ref)
        except errors.RayActorError as exc:
            self._pool.replace(slot)
            self._retry(unit, f"its worker died ({type(exc).__name__})")
            return
        except errors.RayTaskError as exc:
            self._retry(unit, str(exc.cause or exc))
            return
        except errors.RayError as exc:
            self._retry(unit, exception_line(exc))
            return
        self._run.checkpoint.commit(report)
        for row_result in report.outcomes:
            self._progress.row_done(row_result)
        self._progress.matched(sum(1 for o in report.outcomes if o.outcome == Outcome.MATCH))
        self._progress.unit_done()

    def _retry(self, unit: Any, why: str) -> None:
        tried = self._attempts[unit.id]
        where = unit.where
        if tried >= self._max_attempts:
            raise ScannerError(
                f"{where} failed {tried} times, last because {why}; run the same command to resume"
            )
        logger.warning(
            "%s failed on attempt %d of %d because %s; retrying", where, tried, self._max_attempts, why
        )
        self._queue.appendleft(unit)

"""One run's lifecycle, whatever the job: scan, rematch and rescan are Jobs, and execute() runs any of them.

A Job says what its runs differ in (name, config, inputs and units, fingerprint, checks, manifest fields,
summary sections, its own merged files); execute owns what they share: the report-directory lock, the lists,
--out through the mirror and its checkpoint, a run already complete, the units left (through a runner's
run_units), and the finish (merge, summary, manifest, seal). A unit is processed by the job's UnitWork: a
picklable description (config, matcher and the job's read-only context) that opens a UnitProcessor once per
process, so a runner can run units in-process, in a worker process or in a Ray actor alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from scanner import procguard
from scanner.config import ScanConfig
from scanner.lists import HashList, Matcher
from scanner.lists.deferred import DeferredList
from scanner.pipeline import HashFn, Progress
from scanner.reports.records import UnitReport
from scanner.reports.review import Review
from scanner.run import lifecycle
from scanner.run.checkpoint import Checkpoint, may_resume, open_out
from scanner.run.lifecycle import ScanResult
from scanner.run.reportlock import report_lock
from scanner.screen import hash_types
from scanner.workers import HashJob


class Unit(Protocol):
    """A unit of work, checkpointing and retry: a scan's WorkUnit, a rematch's or rescan's StoredUnit."""

    id: int

    @property
    def rows(self) -> int: ...

    @property
    def where(self) -> str: ...


class UnitProcessor(Protocol):
    """Processes units one after another (or several at once, in one event loop) in one process."""

    async def run_unit(self, unit: Any, kept: Mapping[int, UnitReport] | None = None) -> UnitReport:
        """The unit's report; `kept`: its rows committed in parts earlier, by position, not run again."""
        ...

    async def aclose(self) -> None: ...


class UnitWork(Protocol):
    """What a runner sends to each process that runs units: picklable, opened there once."""

    hashing: bool  # whether units hash bodies (the runner then gives open() a hash function)

    def open(
        self, config: ScanConfig, matcher: Matcher, hash_fn: HashFn | None, progress: Progress | None
    ) -> UnitProcessor: ...


class Job:
    """What scan, rematch and rescan differ in; execute() does the rest. Defaults suit a job with none of
    the hook's kind (no resumed-checkpoint check, no summary section, no file of its own)."""

    name: str  # the lock's command: "scan", "rematch", "rescan"
    config: ScanConfig
    hashing: bool = True  # whether its units hash bodies: a local runner starts hashing workers early
    # Whether its units match image hashes only off the event loop (the pipeline's batches), so image-hash
    # lists may load while its first units run (lists/deferred.py); a job that matches in the loop waits.
    lists_later: bool = False

    def check(self) -> None:
        """Refuse a run that could not start, before anything is locked, loaded or started."""

    def load(self) -> list[Any]:
        """Inside the lock, before the lists: read the inputs and return every unit, in order."""
        raise NotImplementedError

    def check_matcher(self, matcher: Matcher) -> None:
        """Refuse inputs the lists cannot be matched against, before --out is opened."""

    def fingerprint(self, lists: list[HashList]) -> dict:
        """What must not change between a run and its resumption (lifecycle.fingerprint)."""
        raise NotImplementedError

    def check_resumed(self, checkpoint: Checkpoint, units: list[Any]) -> None:
        """Refuse a resumed checkpoint whose committed units do not hold these units' rows."""

    def work(self, run: Run) -> UnitWork:
        """The unit work the runner's processes open."""
        raise NotImplementedError

    def manifest(self, run: Run, summary: dict) -> dict:
        """manifest.json's fields (lifecycle.manifest); finish adds the times."""
        raise NotImplementedError

    def summary_sections(self, run: Run) -> dict:
        """Sections of summary.json only this job writes."""
        return {}

    def merge_more(self, run: Run) -> None:
        """Merge the job's own unit files into its report files."""

    def keep_hashes(self) -> bool:
        """Whether hashes.parquet is merged."""
        return True

    def skipped(self) -> dict[str, str]:
        """Inputs skipped as bad, by path, with why."""
        return {}


@dataclass(slots=True)
class Run:
    """A job opened in its --out: its lists, checkpoint and units (the ones done are committed)."""

    job: Job
    lists: list[HashList | DeferredList]  # image-hash lists may still be loading (lists/deferred.py)
    matcher: Matcher
    out: Path
    checkpoint: Checkpoint
    units: list[Any]
    done: set[int]

    @property
    def config(self) -> ScanConfig:
        return self.job.config

    @property
    def todo(self) -> list[Any]:
        return [u for u in self.units if u.id not in self.done]

    def work(self) -> UnitWork:
        return self.job.work(self)

    @property
    def kept_rows(self) -> int:
        """Rows earlier runs committed: the done units' and the parts of the others."""
        ids = {u.id for u in self.units}
        return self.checkpoint.committed_rows(ids & self.done) + self.checkpoint.kept_rows(ids - self.done)


RunUnits = Callable[[Run, list[Any], "Progress | None"], None]
"""A runner's way to process units and commit each as it finishes: run_units(run, units, progress)."""


def hashing_job(config: ScanConfig, matcher: Matcher) -> HashJob:
    """The hashing job (body -> hashes, reason) for these settings; picklable, for worker processes."""
    return HashJob(hash_types(matcher, config.audit), config.hashing, config.plugins)


def open_run(job: Job, restart: bool = False) -> Run:
    """Read the job's inputs, load the lists, and adopt (or start) the checkpoint in --out. A resumed run
    takes its image lists' digests now, to compare with its checkpoint's before any request; a fresh run's
    loads take them (lists/deferred.py), and its checkpoint records them before its first commit."""
    job.check()
    units = job.load()
    fresh = restart or not may_resume(job.config.out)
    lists, matcher = lifecycle.load_lists(job.config, job.lists_later, fresh)
    job.check_matcher(matcher)
    fingerprint = job.fingerprint(lists)
    settle = partial(lifecycle.settled, fingerprint, lists) if lifecycle.digests_pending(lists) else None
    out, checkpoint = open_out(job.config.out, fingerprint, restart, settle)
    job.check_resumed(checkpoint, units)
    return Run(job, lists, matcher, out, checkpoint, units, checkpoint.done())


def execute(
    job: Job,
    run_units: RunUnits,
    restart: bool = False,
    make_progress: Callable[[Run], Progress] | None = None,
) -> ScanResult:
    """A whole run: lock --out, open it, skip it if complete, run the units left, finish."""
    started_at = time.time()
    job.check()
    procguard.harden()  # no core dump, not dumpable, before any input, record or body is read
    with report_lock(job.config.out, job.name):
        run = open_run(job, restart)
        done = lifecycle.already_done(run.out, run.checkpoint)
        if done is not None:
            return done
        kept = run.kept_rows
        progress = make_progress(run) if make_progress else None
        try:
            run_units(run, run.todo, progress)
        finally:
            if progress is not None:
                progress.close()
        result = finish(run, started_at)
        result.kept_rows = kept
        return result


def finish(run: Run, started_at: float) -> ScanResult:
    """Merge every unit into the report files (and the job's own), write summary and manifest, seal."""
    job = run.job
    return lifecycle.finish(
        run.out,
        run.checkpoint,
        [u.id for u in run.units],
        started_at,
        lambda summary: job.manifest(run, summary),
        skipped=job.skipped(),
        extra={**lifecycle.skipped_entries(run.lists), **job.summary_sections(run)},
        keep_hashes=job.keep_hashes(),
        merge_more=lambda: job.merge_more(run),
        review=Review(job.config.review, run.matcher.negative),
    )

"""Run a job's units on this machine: a thin coordinator that plans and commits, and unit worker processes
that each fetch and match whole units, each feeding hashing processes (run.workers of those in all, else one
per core; runners/procs.py hashers_layout)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

from scanner import procguard
from scanner.config import ScanConfig
from scanner.pipeline import Progress
from scanner.run.job import Job, Run, execute
from scanner.run.lifecycle import ScanResult
from scanner.run.reportlock import report_lock
from scanner.run.scan import ScanJob
from scanner.runners.procs import UnitWorkers, body_budget_note, hashers_layout, run_units


def scan(
    config: ScanConfig, restart: bool = False, make_progress: Callable[[Run], Progress] | None = None
) -> ScanResult:
    """Run a whole scan locally, resuming from committed units in config.out."""
    return run(ScanJob(config), restart, make_progress)


def run(
    job: Job, restart: bool = False, make_progress: Callable[[Run], Progress] | None = None
) -> ScanResult:
    """Run a whole job whose units go through a runner (scan, rescan) locally, resuming from committed units
    in its --out.

    The unit workers start (a process and its imports each, and for a job that hashes each its hashing
    process) while this process loads the lists. This process and every one it starts are hardened first
    (procguard): no core dumps, not dumpable, no orphans.
    """
    job.check()
    procguard.harden()
    hashers = hashers_layout(job.config, job.hashing)
    note = body_budget_note(job.config, len(hashers))
    if note is not None and make_progress is not None and not job.config.audit.no_fetch:  # not with --quiet
        print(note, file=sys.stderr, flush=True)
    with ExitStack() as stack:
        stack.enter_context(report_lock(job.config.out, job.name))
        pool = stack.enter_context(UnitWorkers(job.config, hashers))
        return execute(job, partial(run_units, pool=pool), restart, make_progress)

"""Run units on this machine: a thin coordinator that plans and commits, and unit worker processes (as many
as run.workers, else the cores) that each fetch, hash and match whole units (runners/procs.py)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from scanner import procguard
from scanner.config import ScanConfig
from scanner.pipeline import Progress
from scanner.run.reportlock import report_lock
from scanner.run.scan import Prepared, ScanResult, check_config, run_scan
from scanner.runners.procs import UnitWorkers, run_units


def scan(
    config: ScanConfig, restart: bool = False, make_progress: Callable[[Prepared], Progress] | None = None
) -> ScanResult:
    """Run a whole scan locally, resuming from committed units in config.out.

    The unit workers start (a process and its imports each, and each its hashing process) while this
    process loads the lists. This process and every one it starts are hardened first (procguard): no core
    dumps, not dumpable, no orphans.
    """
    check_config(config)
    procguard.harden()
    with report_lock(config.out, "scan"), UnitWorkers(config, config.run.worker_count) as pool:
        return run_scan(config, restart, make_progress, partial(run_units, pool=pool))

"""Run units on this machine: one asyncio loop fetching, a pool of processes hashing bytes sent over pipes."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from scanner.config import ScanConfig
from scanner.pipeline import Progress
from scanner.planner import WorkUnit
from scanner.scan import Prepared, ScanResult, already_done, finish, hashing_job, prepare, unit_pipeline
from scanner.workers import init_worker


def scan(
    config: ScanConfig, restart: bool = False, make_progress: Callable[[Prepared], Progress] | None = None
) -> ScanResult:
    """Run a whole scan locally, resuming from committed units in config.out."""
    started_at = time.time()
    prepared = prepare(config, restart)
    done = already_done(prepared)
    if done is not None:
        return done
    progress = make_progress(prepared) if make_progress else None
    try:
        run_units(prepared, prepared.todo, progress)
    finally:
        if progress is not None:
            progress.close()
    return finish(prepared, started_at)


def run_units(prepared: Prepared, units: list[WorkUnit], progress: Progress | None = None) -> None:
    """Fetch in this process and hash in worker processes; each finished unit is committed at once."""
    if not units:
        return
    config = prepared.config
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        config.run.worker_count, mp_context=context, initializer=init_worker, initargs=((str(prepared.out),),)
    ) as pool:
        asyncio.run(_run(prepared, units, pool, progress))


async def _run(
    prepared: Prepared, units: list[WorkUnit], pool: ProcessPoolExecutor, progress: Progress | None
) -> None:
    config = prepared.config
    job = hashing_job(config, prepared.matcher)
    hash_fn = partial(asyncio.get_running_loop().run_in_executor, pool, job)
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

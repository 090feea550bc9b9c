"""Run units on this machine: one asyncio loop fetching, a pool of processes hashing bytes sent over pipes."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from scanner.config import ScanConfig
from scanner.fetch import make_fetcher
from scanner.pipeline import Pipeline, Progress, Stages
from scanner.planner import WorkUnit
from scanner.scan import Prepared, ScanResult, already_done, finish, prepare
from scanner.workers import hash_job, init_worker


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
    loop = asyncio.get_running_loop()
    want = prepared.hash_types
    job = partial(hash_job, want=want, limits=config.hashing)
    fetcher = make_fetcher(config.fetch)
    try:
        hash_fn = partial(loop.run_in_executor, pool, job)
        stages = Stages(fetcher, hash_fn, prepared.matcher, config.audit)
        pipeline = Pipeline(
            stages,
            prepared.plan.sources,
            config.run.rows_in_flight,
            progress,
            skip_bad_shards=config.run.on_bad_shard == "skip",
        )
        gate = asyncio.Semaphore(config.run.units_in_flight)

        async def run_one(unit: WorkUnit) -> None:
            async with gate:
                report = await pipeline.run_unit(unit)
            prepared.checkpoint.commit(report)

        await asyncio.gather(*(run_one(u) for u in units))
    finally:
        await fetcher.aclose()

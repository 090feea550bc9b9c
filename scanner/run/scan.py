"""A whole scan: plan, load lists, resume, run the units with a runner, merge the reports."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from scanner.config import ScanConfig
from scanner.errors import ConfigError
from scanner.fetch import make_fetcher
from scanner.lists import HashList, Matcher
from scanner.pipeline import HashFn, Pipeline, Progress, Stages
from scanner.planner import Plan, WorkUnit, plan
from scanner.run import lifecycle
from scanner.run.checkpoint import Checkpoint, open_out
from scanner.run.lifecycle import ScanResult
from scanner.run.reportlock import report_lock
from scanner.screen import hash_types
from scanner.sources import Source, expand_inputs
from scanner.sources.storage import input_signature
from scanner.workers import HashJob


@dataclass(slots=True)
class Prepared:
    """Everything a runner needs: the plan, the loaded lists, the checkpoint and what is left to do."""

    config: ScanConfig
    out: Path
    plan: Plan
    lists: list[HashList]
    matcher: Matcher
    checkpoint: Checkpoint
    done: set[int]

    @property
    def todo(self) -> list:
        return [u for u in self.plan.units if u.id not in self.done]

    @property
    def hash_types(self) -> frozenset[str]:
        """What the hashing stage computes for every body (see scanner.screen.hash_types)."""
        return hash_types(self.matcher, self.config.audit)


def hashing_job(config: ScanConfig, matcher: Matcher) -> HashJob:
    """The hashing job (body -> hashes, reason) for these settings; picklable, for worker processes."""
    return HashJob(hash_types(matcher, config.audit), config.hashing)


def unit_pipeline(
    config: ScanConfig,
    matcher: Matcher,
    sources: Mapping[str, Source],
    hash_fn: HashFn,
    progress: Progress | None = None,
) -> Pipeline:
    """The stages every runner drives, built one way, so a unit is checked alike on any runner.
    The caller owns the fetcher: close it with `await pipeline.stages.fetcher.aclose()`."""
    stages = Stages(make_fetcher(config.fetch), hash_fn, matcher, config.audit)
    skip = config.run.on_bad_shard == "skip"
    return Pipeline(
        stages,
        sources,
        config.run.rows_in_flight,
        progress,
        skip_bad_shards=skip,
        max_url_length=config.fetch.max_url_length,
    )


def check_config(config: ScanConfig) -> None:
    """Refuse a scan that could not start, before anything is loaded or started."""
    if not config.inputs:
        raise ConfigError("no input shards given")
    if not config.hashlists:
        raise ConfigError(
            "no hash list given: a scan needs at least one --hashlist PATH (formats: hashlists/README.md)"
        )


def prepare(config: ScanConfig, restart: bool = False) -> Prepared:
    """Validate inputs and lists before any fetch, and pick up a previous run's committed units."""
    check_config(config)
    work = plan(expand_inputs(list(config.inputs)), config.source, config.run.on_bad_shard)
    lists, matcher = lifecycle.load_lists(config)
    out, checkpoint = open_out(config.out, fingerprint(config, work, lists), restart)
    checkpoint.check_rows({u.id: (u.shard, u.span.start, u.span.stop) for u in work.units})
    return Prepared(config, out, work, lists, matcher, checkpoint, checkpoint.done())


def fingerprint(config: ScanConfig, work: Plan, lists: list[HashList]) -> dict:
    """What must not change between a scan and its resumption: inputs, lists and result-affecting settings."""
    return lifecycle.fingerprint(
        config,
        lists,
        inputs=[[p, *input_signature(p)] for p in work.sources],
        skipped=sorted(work.skipped),
    )


def finish(prepared: Prepared, started_at: float) -> ScanResult:
    """Merge every unit into the final reports, write summary and manifest, and drop the units."""
    return lifecycle.finish(
        prepared.out,
        prepared.checkpoint,
        [u.id for u in prepared.plan.units],
        started_at,
        lambda summary_data: manifest(prepared, summary_data),
        skipped=prepared.plan.skipped,
        keep_hashes=prepared.config.audit.keep_hashes,
    )


def run_scan(
    config: ScanConfig,
    restart: bool,
    make_progress: Callable[[Prepared], Progress] | None,
    run_units: Callable[[Prepared, list[WorkUnit], Progress | None], None],
) -> ScanResult:
    """A whole scan with a runner's run_units: lock --out, prepare, skip if complete, run what is left,
    finish."""
    started_at = time.time()
    check_config(config)
    with report_lock(config.out, "scan"):
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


def already_done(prepared: Prepared) -> ScanResult | None:
    """The result of a scan that already completed in this --out with the same inputs, lists and settings."""
    return lifecycle.already_done(prepared.out, prepared.checkpoint)


def manifest(prepared: Prepared, summary_data: dict) -> dict:
    """Provenance (scanner.run.lifecycle.manifest) with the inputs' kinds and sizes, the skipped shards
    and the unit count; finish adds the times."""
    config = prepared.config
    return lifecycle.manifest(
        config,
        prepared.lists,
        [
            {"path": path, "kind": source.kind, "signature": input_signature(path)}
            for path, source in prepared.plan.sources.items()
        ],
        allow_private_networks=config.fetch.allow_private_networks,
        skipped_shards=summary_data["skipped_shards"],
        units=len(prepared.plan.units),
    )

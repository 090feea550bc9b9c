"""Runs one work unit through source -> fetch -> hash -> match; the only place the stages meet. A row policy
(FetchPolicy for a scan, a rescan's own) decides per row; the pipeline owns the window and the matching."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from scanner.config import ScanConfig
from scanner.errors import CheckpointError, SourceError
from scanner.fetch import Fetcher, FetchResult, make_fetcher
from scanner.hashing import ImageHashes
from scanner.hashtypes import recorded_types
from scanner.lists import Match, Matcher, Query
from scanner.outcomes import ChangeReason, FetchOutcome, FetchReason, Liveness, Outcome, SourceReason
from scanner.planner import WorkUnit
from scanner.reports.hashes import hash_record
from scanner.reports.records import RowResult, UnitReport, combined
from scanner.screen import AuditConfig, Screen, Screened, changed_distance, content_changed
from scanner.sources import Row, Source

HashFn = Callable[[bytes], Awaitable[tuple[ImageHashes | None, str | None]]]
# Hashed rows matched together: a batch costs a few ms against 1M-entry lists, so a unit's end waits little.
MATCH_BATCH = 256


class Progress:
    """Receives per-row and per-unit events; the default ignores them."""

    def row_done(self, result: RowResult) -> None:
        """A row finished fetching and hashing (its final outcome may still become match; its liveness is
        final)."""

    def rows_done(self, counts: Mapping[tuple[str, str | None, Liveness], int]) -> None:
        """Rows finished in another process (a unit worker), counted by (outcome, reason, liveness): what
        row_done would have seen of them, sent in batches."""

    def matched(self, rows: int) -> None:
        """A unit's rows were all matched; this many of them match."""

    def unit_done(self) -> None:
        """A unit's outputs were committed."""

    takes_parts = False  # whether part() commits: a pipeline sends parts only to a progress that does

    def part(self, unit_id: int, rows: list[tuple[int, UnitReport]]) -> None:
        """Rows of a unit still running, finished and matched, each as its own report with its position in
        the unit, for the runner to commit: a killed run goes on from them."""

    def close(self) -> None:
        """The scan is over."""


@dataclass(slots=True)
class Stages:
    """The stage objects a pipeline drives, built once per process by a runner."""

    fetcher: Fetcher
    hash: HashFn
    matcher: Matcher
    audit: AuditConfig = field(default_factory=AuditConfig)


def build_stages(config: ScanConfig, hash_fn: HashFn | None, matcher: Matcher) -> Stages:
    """The stages for these settings, one way for every job: a fetcher whose bodies share the run's byte
    budget (run.body_bytes_in_flight) and, where the hash function says how many it can take at once
    (bodies_wanted), no more bodies read ahead of it than that; the hash function, the matcher."""
    wanted = getattr(hash_fn, "bodies_wanted", None)
    fetcher = make_fetcher(config.fetch, body_budget=config.run.body_bytes_in_flight, ready_bodies=wanted)
    return Stages(fetcher, hash_fn, matcher, config.audit)


@dataclass(slots=True)
class Checked:
    """A row after its policy checked it (fetched, hashed, or not), waiting for its batched match."""

    result: RowResult
    query: Query | None = None
    fetch: FetchResult | None = None
    hashes: ImageHashes | None = None
    matches: list[Match] = field(default_factory=list)  # found before any fetch, or on a redirect


class RowPolicy(Protocol):
    """What a job decides per row, while the pipeline owns the window of rows in flight, the batched
    matching and the progress: which rows a unit has (screened before any request), how one row is
    checked (no request, liveness only, a plain or a conditional GET) and how the checked rows become
    the unit's report. `state` is the policy's own per-row data, passed back to check."""

    stages: Stages

    def rows(self, unit: Any) -> Iterator[tuple[Row, Screened, Any]]: ...

    async def check(self, row: Row, screened: Screened, state: Any) -> Checked: ...

    def report(self, unit_id: int, checked: list[Checked]) -> UnitReport: ...


@dataclass(frozen=True, slots=True)
class CommitEvery:
    """When a unit still running commits its finished rows: this often, or once this many wait."""

    seconds: float
    rows: int


def commit_every(config: ScanConfig) -> CommitEvery:
    """The run's settings for committing units in parts (a unit worker's share of the rows)."""
    return CommitEvery(config.run.commit_every_s, config.run.commit_every_rows)


@dataclass(slots=True)
class _UnitRun:
    """A unit being run: its matching, its rows committed in parts, and its finished rows not yet in one."""

    id: int
    matching: _BatchMatching
    kept: dict[int, UnitReport]  # by position in the unit: committed by an earlier run, or by this one
    finished: dict[int, Checked] = field(default_factory=dict)


class Pipeline:
    """Drives rows through the stages with a bound on rows in flight (and so on bodies in memory). With
    `commit`, and a progress that takes parts, a unit's finished rows are committed in parts while it runs."""

    def __init__(
        self,
        policy: RowPolicy,
        rows_in_flight: int,
        progress: Progress | None = None,
        commit: CommitEvery | None = None,
    ) -> None:
        self.policy = policy
        self.stages = policy.stages
        self._slots = asyncio.Semaphore(rows_in_flight)
        self._progress = progress or Progress()
        self._commit = commit if self._progress.takes_parts else None
        self._units: dict[int, _UnitRun] = {}  # units running that commit parts
        self._waiting = 0  # their finished rows in no part yet
        self._last_part = time.monotonic()
        self._parting: asyncio.Task[None] | None = None
        self._part_error: BaseException | None = None
        self._matching = asyncio.Lock()  # one batch at a time, whatever its unit
        # One unit at a time takes rows in flight: the others only finish theirs, so a unit's rows wait for
        # their outcomes in memory one unit at a time, not interleaved over all the units in flight.
        self._dispatching = asyncio.Lock()

    async def run_unit(self, unit: Any, kept: Mapping[int, UnitReport] | None = None) -> UnitReport:
        """Check every row of the unit and return exactly one outcome per row, in row order. `kept`: the
        unit's rows committed in parts by an earlier run, by position, which are not checked again."""
        tasks: list[asyncio.Task[Checked]] = []
        positions: list[int] = []
        matching = _BatchMatching(self.stages.matcher, self._matching, self.stages.audit.keep_hashes)
        run = _UnitRun(unit.id, matching, dict(kept or {}))
        if self._commit is not None:
            self._units[unit.id] = run
        seen = 0
        try:
            async with self._dispatching:
                for position, (row, screened, state) in enumerate(self.policy.rows(unit)):
                    seen = position + 1
                    if position in run.kept:
                        _check_kept(unit, row, run.kept[position])
                        continue
                    await self._slots.acquire()
                    tasks.append(
                        asyncio.create_task(self._check(row, screened, state, matching, run, position))
                    )
                    positions.append(position)
            _check_kept_positions(unit, run.kept, seen)
        except Exception:
            self._end(run)
            for task in tasks:
                task.cancel()
            await matching.finish()
            raise
        except BaseException:  # cancelled (Ctrl-C): no row may go on fetching after the unit is abandoned
            self._end(run)
            for task in tasks:
                task.cancel()
            raise
        try:
            checked = list(await asyncio.gather(*tasks))
            await matching.finish()
        finally:
            self._end(run)
        if self._part_error is not None:
            raise self._part_error
        report = self._report(unit.id, run, positions, checked)
        self._progress.matched(sum(1 for o in report.outcomes if o.outcome == Outcome.MATCH))
        return report

    def _report(
        self, unit_id: int, run: _UnitRun, positions: list[int], checked: list[Checked]
    ) -> UnitReport:
        """The unit's report: the policy's over its rows, or, when some were committed in parts, the rows'
        reports in order (the same records: a policy's report is made row by row)."""
        if not run.kept:
            return self.policy.report(unit_id, checked)
        rows = dict(run.kept)
        for position, item in zip(positions, checked, strict=True):
            if position not in rows:
                rows[position] = self.policy.report(unit_id, [item])
        return combined(unit_id, (rows[p] for p in sorted(rows)))

    def _end(self, run: _UnitRun) -> None:
        """The unit is over: its finished rows are committed with it (or lost with it), never in a part."""
        if self._units.get(run.id) is run:
            del self._units[run.id]
            self._waiting -= len(run.finished)

    def _row_finished(self, run: _UnitRun, position: int, checked: Checked) -> None:
        if self._units.get(run.id) is not run or self._commit is None:
            return
        run.finished[position] = checked
        self._waiting += 1
        due = time.monotonic() - self._last_part >= self._commit.seconds
        if (self._waiting >= self._commit.rows or due) and (self._parting is None or self._parting.done()):
            self._parting = asyncio.create_task(self._commit_parts())

    async def _commit_parts(self) -> None:
        """Send each running unit's finished rows as a part, once they are matched."""
        self._last_part = time.monotonic()
        try:
            for run in list(self._units.values()):
                if run.finished:
                    await run.matching.finish()  # what waits for a batch now; the unit goes on
                    self._send_part(run)
        except Exception as exc:  # raised by the unit's run_unit, so the runner says it
            self._part_error = exc

    def _send_part(self, run: _UnitRun) -> None:
        if self._units.get(run.id) is not run:
            return  # the unit ended meanwhile: its rows went with it
        ready = sorted(p for p, item in run.finished.items() if item.query is None)
        rows = [(p, self.policy.report(run.id, [run.finished.pop(p)])) for p in ready]
        if rows:
            run.kept.update(rows)
            self._waiting -= len(rows)
            self._progress.part(run.id, rows)

    async def aclose(self) -> None:
        """Close the fetcher's connections."""
        if self._parting is not None:
            self._parting.cancel()
        await self.stages.fetcher.aclose()

    async def _check(
        self, row: Row, screened: Screened, state: Any, matching: _BatchMatching, run: _UnitRun, position: int
    ) -> Checked:
        try:
            checked = await self.policy.check(row, screened, state)
        finally:
            self._slots.release()
        if checked.query is not None:
            matching.add(checked)
        self._progress.row_done(checked.result)
        self._row_finished(run, position, checked)
        return checked


def _check_kept(unit: Any, row: Row, kept: UnitReport) -> None:
    """A row committed in a part is the row the unit has at its position (a part copied from another unit,
    or from a scan of other inputs, is refused rather than merged)."""
    outcomes = kept.outcomes
    if len(outcomes) != 1 or (outcomes[0].shard, outcomes[0].row) != (row.shard, row.row):
        raise CheckpointError(
            f"{unit.where}: a part committed for it holds another row than {row.shard} row {row.row}; "
            "run the same command with --restart to start over"
        )


def _check_kept_positions(unit: Any, kept: Mapping[int, UnitReport], rows: int) -> None:
    if any(p >= rows or p < 0 for p in kept):
        raise CheckpointError(
            f"{unit.where}: a part committed for it holds rows past its end; "
            "run the same command with --restart to start over"
        )


class FetchPolicy:
    """A scan's rows: read from the sources, screened, fetched (unless screening settled them) and hashed."""

    def __init__(
        self,
        stages: Stages,
        sources: Mapping[str, Source],
        skip_bad_shards: bool = False,
        max_url_length: int = 4096,
    ) -> None:
        self.stages = stages
        self.sources = sources
        self._skip_bad_shards = skip_bad_shards
        self._max_url_length = max_url_length
        self._screen = Screen(stages.matcher, stages.audit)

    def rows(self, unit: WorkUnit) -> Iterator[tuple[Row, Screened, None]]:
        """The unit's rows, screened a source batch at a time; with skip_bad_shards, the rows a corrupt
        shard could not give back are rows that carry that reason (still exactly one outcome each)."""
        next_row = unit.span.start
        try:
            for batch in self.sources[unit.shard].read(unit.span):
                for row, screened in zip(batch, self._screen.rows(batch), strict=True):
                    yield row, screened, None
                    next_row = row.row + 1
            if next_row != unit.span.stop:
                raise SourceError(unit.shard, f"gave rows up to {next_row}, not {unit.span.stop} as planned")
        except SourceError:
            if not self._skip_bad_shards:
                raise
            for row in range(next_row, unit.span.stop):
                yield Row(unit.shard, row, None, None, error=SourceReason.UNREADABLE_SHARD), Screened(), None

    async def check(self, row: Row, screened: Screened, state: None = None) -> Checked:
        # A URL too long to fetch is reported cut to the limit: hostile rows cannot inflate memory or reports.
        url = row.url[: self._max_url_length] if row.url else row.url
        row_result = RowResult(row.shard, row.row, url, row.key, Outcome.INVALID, member=row.member)
        if row.error is not None:
            row_result.reason = row.error
            return Checked(row_result)
        if screened.matches:
            return Checked(row_result, matches=screened.matches)  # never fetched
        if row.body is not None:
            return await self._hash(row_result, row.body, None, screened)
        if row.url is None:
            row_result.reason = FetchReason.EMPTY_URL
            return Checked(row_result)
        if self.stages.audit.no_fetch:
            row_result.outcome = Outcome.CLEAN if screened.checked else Outcome.UNCHECKED
            return Checked(row_result)
        hop = self._screen.hop(screened)
        fetcher = self.stages.fetcher
        result = await (fetcher.fetch(row.url, screen=hop) if hop else fetcher.fetch(row.url))
        body, result.body = result.body, None
        row_result.http_status, row_result.fetched_at = result.status, result.fetched_at
        if hop is not None and hop.matches:
            return Checked(row_result, fetch=result, matches=hop.matches)  # a redirect to a listed URL
        if result.outcome != FetchOutcome.OK:
            row_result.outcome, row_result.reason = result.outcome.row_outcome, result.reason
            return Checked(row_result)
        if body is None:  # a 304 to a request that was not conditional (invalid, as in a rescan)
            row_result.reason = FetchReason.BAD_RESPONSE
            return Checked(row_result)
        return await self._hash(row_result, body, result, screened)

    async def _hash(
        self, row_result: RowResult, body: bytes, fetched: FetchResult | None, screened: Screened
    ) -> Checked:
        row_result.bytes = len(body)
        try:
            hashes, row_result.reason = await self.stages.hash(body)
        finally:
            if fetched is not None:
                fetched.release()  # the body's bytes leave the fetcher's budget once hashed
        if row_result.reason is None:
            row_result.outcome = Outcome.CLEAN
        if hashes is not None and content_changed(screened.claimed, hashes):
            row_result.outcome = Outcome.CHANGED
            self._compare_looks(row_result, screened, hashes)
        query = None if hashes is None else to_query(hashes)
        return Checked(row_result, query, fetched, hashes)

    def _compare_looks(self, row_result: RowResult, screened: Screened, hashes: ImageHashes) -> None:
        """A changed row's distance from the dataset's own perceptual hash, and whether that is within the
        type's match threshold (near-identical: re-encoded, not replaced)."""
        compared = changed_distance(screened.looks, hashes)
        if compared is None:
            return
        name, row_result.perceptual_distance = compared
        threshold = self.stages.matcher.config.threshold("", name)
        near = row_result.perceptual_distance <= threshold
        row_result.reason = ChangeReason.NEAR_IDENTICAL if near else ChangeReason.LOOKS_DIFFERENT

    def report(self, unit_id: int, checked: list[Checked]) -> UnitReport:
        """The unit's report from its checked and matched rows."""
        report = UnitReport(unit_id, [c.result for c in checked])
        for item in checked:
            if item.matches:
                item.result.outcome = Outcome.MATCH
                report.matches.extend(match_record(item.result, m) for m in item.matches)
                report.evidence.append(evidence_record(item.result, item.fetch))
        if self.stages.audit.keep_hashes:
            report.hashes = [hash_record(c.result, c.hashes, c.fetch) for c in checked]
        return report


class _BatchMatching:
    """Matches a unit's hashed rows a batch at a time in a thread, while its other rows are still fetched and
    hashed: the search kernels release the GIL, and the unit's end waits only for its last batch. A matched
    row keeps only what its report needs: hashes and response details only for a match, or to keep hashes."""

    def __init__(self, matcher: Matcher, lock: asyncio.Lock, keep_hashes: bool) -> None:
        self._matcher = matcher
        self._lock = lock
        self._keep_hashes = keep_hashes
        self._waiting: list[Checked] = []
        self._running: list[asyncio.Task[None]] = []

    def add(self, item: Checked) -> None:
        """Queue a hashed row; a full batch starts matching."""
        self._waiting.append(item)
        if len(self._waiting) >= MATCH_BATCH:
            self._start()

    async def finish(self) -> None:
        """Match what is queued and wait for every batch."""
        self._start()
        await asyncio.gather(*self._running)

    def _start(self) -> None:
        if self._waiting:
            batch, self._waiting = self._waiting, []
            self._running.append(asyncio.create_task(self._match(batch)))

    async def _match(self, batch: list[Checked]) -> None:
        queries = [item.query for item in batch if item.query is not None]
        async with self._lock:
            found = await asyncio.get_running_loop().run_in_executor(None, self._matcher.match_batch, queries)
        for item, matches in zip(batch, found, strict=True):
            item.matches.extend(matches)
            item.query = None
            if not item.matches and not self._keep_hashes:
                item.fetch = item.hashes = None


def to_query(hashes: ImageHashes) -> Query:
    """The hash values a matcher looks up, from the hashing stage's result."""
    values = {t.name: value for t in recorded_types() if (value := hashes.get(t.name)) is not None}
    return Query(values, hashes.pdq_quality, tuple(hashes.pdq_dihedral or ()))


def match_record(row_result: RowResult, match: Match) -> dict:
    """One line of matches.jsonl: the fewest fields a referral needs."""
    record = {
        "shard": row_result.shard,
        "row": row_result.row,
        "url": row_result.url,
        "key": row_result.key,
        "list": match.list,
        "entry_id": match.entry_id,
        "category": match.category,
        "hash_type": match.hash_type,
        "distance": match.distance,
        "quality": match.quality,
    }
    if match.transform:
        record["transform"] = match.transform
    if match.value:
        record["hash"] = match.value  # the row's own hash that matched (never the image)
    if match.entry:
        record["entry"] = dict(match.entry)  # the list's own columns, namespaced (NCMEC member, pytx tags)
    if row_result.member:
        record["member"] = row_result.member
    return record


def evidence_record(row_result: RowResult, fetch: FetchResult | None) -> dict:
    """What a referral form asks about the response that carried a matched image."""
    fetched = fetch.fetched_at if fetch else None
    return {
        "shard": row_result.shard,
        "row": row_result.row,
        "url": row_result.url,
        "final_url": fetch.final_url if fetch else None,
        "http_status": row_result.http_status,
        "server_ip": fetch.server_ip if fetch else None,
        "content_type": fetch.content_type if fetch else None,
        "content_length": row_result.bytes,
        "observed_at": datetime.fromtimestamp(fetched, tz=timezone.utc).isoformat() if fetched else None,
    }

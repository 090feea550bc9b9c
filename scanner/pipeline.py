"""Runs one work unit through source -> fetch -> hash -> match; the only place the stages meet."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from scanner.errors import SourceError
from scanner.fetch import Fetcher, FetchResult
from scanner.hashing import ImageHashes
from scanner.hashtypes import recorded_types
from scanner.lists import Match, Matcher, Query
from scanner.outcomes import FetchOutcome, FetchReason, Outcome, SourceReason
from scanner.planner import WorkUnit
from scanner.reports.hashes import hash_record
from scanner.reports.records import RowResult, UnitReport
from scanner.screen import AuditConfig, Screen, Screened, content_changed
from scanner.sources import Row, Source

HashFn = Callable[[bytes], Awaitable[tuple[ImageHashes | None, str | None]]]
# Hashed rows matched together: a batch costs a few ms against 1M-entry lists, so a unit's end waits little.
MATCH_BATCH = 256


class Progress:
    """Receives per-row and per-unit events; the default ignores them."""

    def row_done(self, outcome: Outcome) -> None:
        """A row finished fetching and hashing (its final outcome may still become match)."""

    def rows_done(self, outcomes: Mapping[Outcome, int]) -> None:
        """Rows finished elsewhere (a unit worker), counted by outcome: row_done for each by default."""
        for outcome, rows in outcomes.items():
            for _ in range(rows):
                self.row_done(outcome)

    def matched(self, rows: int) -> None:
        """A unit's rows were all matched; this many of them match."""

    def unit_done(self) -> None:
        """A unit's outputs were committed."""

    def close(self) -> None:
        """The scan is over."""


@dataclass(slots=True)
class Stages:
    """The stage objects a pipeline drives, built once per process by a runner."""

    fetcher: Fetcher
    hash: HashFn
    matcher: Matcher
    audit: AuditConfig = field(default_factory=AuditConfig)


@dataclass(slots=True)
class _Checked:
    """A row after fetching and hashing, waiting for its batched match."""

    result: RowResult
    query: Query | None = None
    fetch: FetchResult | None = None
    hashes: ImageHashes | None = None
    matches: list[Match] = field(default_factory=list)  # found before any fetch, or on a redirect


class Pipeline:
    """Drives rows through the stages with a bound on rows in flight (and so on bodies in memory)."""

    def __init__(
        self,
        stages: Stages,
        sources: dict[str, Source],
        rows_in_flight: int,
        progress: Progress | None = None,
        skip_bad_shards: bool = False,
        max_url_length: int = 4096,
    ) -> None:
        self.stages = stages
        self.sources = sources
        self._skip_bad_shards = skip_bad_shards
        self._max_url_length = max_url_length
        self._slots = asyncio.Semaphore(rows_in_flight)
        self._progress = progress or Progress()
        self._screen = Screen(stages.matcher, stages.audit)
        self._matching = asyncio.Lock()  # one batch at a time, whatever its unit
        # One unit at a time takes rows in flight: the others only finish theirs, so a unit's rows wait for
        # their outcomes in memory one unit at a time, not interleaved over all the units in flight.
        self._dispatching = asyncio.Lock()

    async def run_unit(self, unit: WorkUnit) -> UnitReport:
        """Check every row of the unit and return exactly one outcome per row, in row order."""
        tasks: list[asyncio.Task[_Checked]] = []
        unreadable: list[_Checked] = []
        matching = _BatchMatching(self.stages.matcher, self._matching, self.stages.audit.keep_hashes)
        next_row = unit.span.start
        try:
            async with self._dispatching:
                for batch in self.sources[unit.shard].read(unit.span):
                    for row, screened in zip(batch, self._screen.rows(batch), strict=True):
                        await self._slots.acquire()
                        tasks.append(asyncio.create_task(self._check(row, screened, matching)))
                        next_row = row.row + 1
            if next_row != unit.span.stop:
                raise SourceError(unit.shard, f"gave rows up to {next_row}, not {unit.span.stop} as planned")
        except SourceError:
            if not self._skip_bad_shards:
                for task in tasks:
                    task.cancel()
                await matching.finish()
                raise
            unreadable = [self._unreadable(unit.shard, row) for row in range(next_row, unit.span.stop)]
        except BaseException:  # cancelled (Ctrl-C): no row may go on fetching after the unit is abandoned
            for task in tasks:
                task.cancel()
            raise
        checked = [*await asyncio.gather(*tasks), *unreadable]
        await matching.finish()
        return self._report(unit.id, checked)

    def _unreadable(self, shard: str, row: int) -> _Checked:
        """A row the shard could not give back (corrupt data): still exactly one outcome."""
        self._progress.row_done(Outcome.INVALID)
        return _Checked(
            RowResult(shard, row, None, None, Outcome.INVALID, reason=SourceReason.UNREADABLE_SHARD)
        )

    async def _check(self, row: Row, screened: Screened, matching: _BatchMatching) -> _Checked:
        try:
            checked = await self._fetch_and_hash(row, screened)
        finally:
            self._slots.release()
        if checked.query is not None:
            matching.add(checked)
        self._progress.row_done(checked.result.outcome)
        return checked

    async def _fetch_and_hash(self, row: Row, screened: Screened) -> _Checked:
        # A URL too long to fetch is reported cut to the limit: hostile rows cannot inflate memory or reports.
        url = row.url[: self._max_url_length] if row.url else row.url
        row_result = RowResult(row.shard, row.row, url, row.key, Outcome.INVALID, member=row.member)
        if row.error is not None:
            row_result.reason = row.error
            return _Checked(row_result)
        if screened.matches:
            return _Checked(row_result, matches=screened.matches)  # never fetched
        if row.body is not None:
            return await self._hash(row_result, row.body, None, screened)
        if row.url is None:
            row_result.reason = FetchReason.EMPTY_URL
            return _Checked(row_result)
        if self.stages.audit.no_fetch:
            row_result.outcome = Outcome.CLEAN if screened.checked else Outcome.UNCHECKED
            return _Checked(row_result)
        hop = self._screen.hop(screened)
        fetcher = self.stages.fetcher
        result = await (fetcher.fetch(row.url, screen=hop) if hop else fetcher.fetch(row.url))
        body, result.body = result.body, None
        row_result.http_status, row_result.fetched_at = result.status, result.fetched_at
        if hop is not None and hop.matches:
            return _Checked(row_result, fetch=result, matches=hop.matches)  # a redirect to a listed URL
        if result.outcome != FetchOutcome.OK:
            row_result.outcome, row_result.reason = result.outcome.row_outcome, result.reason
            return _Checked(row_result)
        if body is None:  # a 304 to a request that was not conditional (invalid, as in a rescan)
            row_result.reason = FetchReason.BAD_RESPONSE
            return _Checked(row_result)
        return await self._hash(row_result, body, result, screened)

    async def _hash(
        self, row_result: RowResult, body: bytes, fetched: FetchResult | None, screened: Screened
    ) -> _Checked:
        row_result.bytes = len(body)
        hashes, row_result.reason = await self.stages.hash(body)
        if row_result.reason is None:
            row_result.outcome = Outcome.CLEAN
        if hashes is not None and content_changed(screened.claimed, hashes):
            row_result.outcome = Outcome.CHANGED
        query = None if hashes is None else to_query(hashes)
        return _Checked(row_result, query, fetched, hashes)

    def _report(self, unit_id: int, checked: list[_Checked]) -> UnitReport:
        """The unit's report from its checked and matched rows."""
        report = UnitReport(unit_id, [c.result for c in checked])
        for item in checked:
            if item.matches:
                item.result.outcome = Outcome.MATCH
                report.matches.extend(match_record(item.result, m) for m in item.matches)
                report.evidence.append(evidence_record(item.result, item.fetch))
        if self.stages.audit.keep_hashes:
            report.hashes = [hash_record(c.result, c.hashes, c.fetch) for c in checked]
        self._progress.matched(sum(1 for o in report.outcomes if o.outcome == Outcome.MATCH))
        return report


class _BatchMatching:
    """Matches a unit's hashed rows a batch at a time in a thread, while its other rows are still fetched and
    hashed: the search kernels release the GIL, and the unit's end waits only for its last batch. A matched
    row keeps only what its report needs: hashes and response details only for a match, or to keep hashes."""

    def __init__(self, matcher: Matcher, lock: asyncio.Lock, keep_hashes: bool) -> None:
        self._matcher = matcher
        self._lock = lock
        self._keep_hashes = keep_hashes
        self._waiting: list[_Checked] = []
        self._running: list[asyncio.Task[None]] = []

    def add(self, item: _Checked) -> None:
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

    async def _match(self, batch: list[_Checked]) -> None:
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

"""scanner rescan: re-check a previous scan's rows without downloading what is already known, and say what
changed since.

Before any request each row is screened again (URL lists) and its stored hashes are matched against the
current lists. A row whose URL or domain is listed is never requested, not even for liveness. A row known
to match by content (it matched before, or its stored hashes match now) is checked for liveness only:
HEAD, or a GET whose body is never read, so takedowns can be followed up without fetching the material
again; a redirect to a listed URL is not followed, and counts as live. Every other row is requested
conditionally (If-None-Match, else If-Modified-Since, from its hash record): a 304 re-uses the stored
hashes, a 200 is hashed and compared with them (outcome `changed` when its bytes differ). Rows that went
dead keep their last hash record, so a later rescan still knows what they served. With dihedral matching on
(the previous scan's --pdq-dihedral) the stored rotated and flipped PDQ hashes are matched too; a row whose
record holds a PDQ hash without them is requested unconditionally, so its body is hashed again with them;
records older than version 2 from a scan that matched through a transform are refused (the rescan would
report those matches gone). The report adds changes.jsonl and a `changes` section (newly dead, newly live,
new matches, matches gone, content changed) and appends the previous scan to the summary's `history`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scanner import procguard
from scanner.audits.stored import StoredRow, StoredRun, StoredScan, write_unit_changes
from scanner.config import HashListSpec, ScanConfig, build_config
from scanner.errors import InputError
from scanner.fetch import FetchResult, make_fetcher
from scanner.lists import Match, Matcher, Query
from scanner.outcomes import LIVE, FetchOutcome, FetchReason, Outcome, unmatched
from scanner.pipeline import Progress, Stages, evidence_record, match_record, to_query
from scanner.reports import jsonl
from scanner.reports.files import write_json
from scanner.reports.hashes import hash_record
from scanner.reports.records import RowResult, UnitReport
from scanner.run.checkpoint import Checkpoint
from scanner.run.reportlock import report_lock
from scanner.run.scan import ScanResult, hashing_job
from scanner.runners.hashpool import BatchingHasher, WorkerPool, hashing_workers
from scanner.screen import Screen, Screened, content_changed, content_digests

COUNTS_SUFFIX = ".rescan.json"
CHANGE_KINDS = {  # change record name -> summary count name
    "newly_dead": "newly_dead",
    "newly_live": "newly_live",
    "new_match": "new_matches",
    "match_gone": "matches_gone",
    "content_changed": "content_changed",
}


@dataclass(slots=True)
class Rechecked:
    """One stored row after its re-check, waiting for the unit's batched match."""

    result: RowResult
    record: dict  # its hash record in the new hashes.parquet
    matches: list[Match] = field(default_factory=list)
    query: Query | None = None  # hashes still to match: a new body's, or the stored ones after a 304
    fetch: FetchResult | None = None
    content_changed: bool = False
    not_modified: bool = False
    liveness_only: bool = False


def rescan(
    previous: str | Path,
    out: str,
    hashlists: Sequence[str] = (),
    overrides: dict | None = None,
    restart: bool = False,
    make_progress: Callable[[StoredRun], Progress] | None = None,
) -> ScanResult:
    """Re-check the scan in `previous` (a report directory written with --keep-hashes) into `out`, showing
    progress through `make_progress` unless the rescan's run.progress (the previous scan's) is off."""
    started_at = time.time()
    procguard.harden()  # no core dump, not dumpable, before any stored record or body is read
    with report_lock(out, "rescan"):
        stored = _stored_scan(Path(previous))
        config = rescan_config(stored.manifest(), out, hashlists, overrides or {})
        run = StoredRun.start(config, [stored], restart)
        if run.finished is not None:
            return run.finished
        _check_dihedral(stored, run.matcher)
        if run.todo:
            progress = make_progress(run) if make_progress is not None and config.run.progress else Progress()
            try:
                with hashing_workers(config.run.worker_count) as workers:
                    asyncio.run(
                        _run(config, run.matcher, stored, run.todo, run.checkpoint, workers, progress)
                    )
            finally:
                progress.close()
        extra = _summary_sections(stored, run.checkpoint, [u.id for u in run.units])
        previous = {
            "out": str(stored.dir.resolve()),
            "manifest_sha256": hashlib.sha256((stored.dir / "manifest.json").read_bytes()).hexdigest(),
        }
        manifest = run.manifest(allow_private_networks=config.fetch.allow_private_networks, previous=previous)
        return run.finish(started_at, manifest, extra)


def rescan_config(manifest: dict, out: str, hashlists: Sequence[str], overrides: dict) -> ScanConfig:
    """The previous scan's settings (fetch, hashing, match, run), hash records kept, flags on top; its lists
    unless new ones are given (their per-list thresholds then go with them)."""
    saved = manifest.get("config") or {}
    data: dict = {name: dict(saved.get(name) or {}) for name in ("fetch", "hashing", "match", "run")}
    data["audit"] = {"keep_hashes": True}
    data["out"] = out
    if hashlists:
        data["match"].pop("list_thresholds", None)
    flags: dict = {}
    for dotted, value in overrides.items():
        if value is not None:
            section, _, key = dotted.rpartition(".")
            (data.setdefault(section, {}) if section else data)[key] = value
            (flags.setdefault(section, {}) if section else flags)[key] = value
    build_config(flags, "flags")  # a flag out of range is the flag's fault, not the manifest's: say so
    config = build_config(data, "the previous scan's manifest.json")
    saved_lists = [HashListSpec(s["spec"], s.get("thresholds") or {}) for s in saved.get("hashlists", [])]
    specs = tuple(HashListSpec(spec) for spec in hashlists) or tuple(saved_lists)
    return dataclasses.replace(config, hashlists=specs)


class Rescanner:
    """Re-checks the stored rows of one unit at a time, with a bound on rows in flight."""

    def __init__(self, stages: Stages, rows_in_flight: int, progress: Progress | None = None) -> None:
        self.stages = stages
        self.screen = Screen(stages.matcher)
        self.progress = progress or Progress()
        self._slots = asyncio.Semaphore(rows_in_flight)
        self._dihedral = "pdq_dihedral" in stages.matcher.needed_hash_types

    async def run_unit(
        self, unit_id: int, rows: list[StoredRow], evidence: dict
    ) -> tuple[UnitReport, list, dict]:
        """The unit's report (hash records included), its change records and its counts."""
        screened = self.screen.rows([r.row for r in rows])
        known = self._stored_matches(rows)
        checked = await asyncio.gather(
            *(self._bounded(r, pre, k) for r, pre, k in zip(rows, screened, known, strict=True))
        )
        pending = [c for c in checked if c.query is not None]
        found = self.stages.matcher.match_batch([c.query for c in pending]) if pending else []
        for item, matches in zip(pending, found, strict=True):
            item.matches.extend(matches)
        self.progress.matched(sum(1 for item in checked if item.matches))
        report = UnitReport(unit_id, [c.result for c in checked], hashes=[c.record for c in checked])
        changes: list[dict] = []
        counts: Counter = Counter()
        for row, item in zip(rows, checked, strict=True):
            if item.matches:
                item.result.outcome = Outcome.MATCH
                report.matches.extend(match_record(item.result, m) for m in _ordered(item.matches))
                key = (item.result.shard, item.result.row)
                report.evidence.append(evidence.get(key) or evidence_record(item.result, item.fetch))
            kinds = change_kinds(row.previous, item.result, item.content_changed)
            changes.extend(_change_record(row.previous, item.result, kind) for kind in kinds)
            counts.update(CHANGE_KINDS[kind] for kind in kinds)
            counts.update(not_modified=int(item.not_modified), liveness_only=int(item.liveness_only))
        return report, changes, dict(counts)

    def _stored_matches(self, rows: list[StoredRow]) -> list[list[Match]]:
        """What each row's stored hashes match in the current lists (before any request)."""
        with_hashes = [i for i, r in enumerate(rows) if r.hashes is not None]
        found = self.stages.matcher.match_batch([to_query(rows[i].hashes) for i in with_hashes])
        known: list[list[Match]] = [[] for _ in rows]
        for i, matches in zip(with_hashes, found, strict=True):
            known[i] = matches
        return known

    async def _bounded(self, row: StoredRow, screened: Screened, known: list[Match]) -> Rechecked:
        async with self._slots:
            checked = await self.recheck(row, screened, known)
        self.progress.row_done(checked.result.outcome)
        return checked

    async def recheck(self, row: StoredRow, screened: Screened, known: list[Match]) -> Rechecked:
        """One row: no request if its URL is listed, liveness only if known to match, else conditional."""
        previous = row.previous
        if not row.record["url"]:
            row_result = dataclasses.replace(previous)
            return Rechecked(row_result, dict(row.record), known if previous.outcome in LIVE else [])
        row_result = RowResult(
            previous.shard, previous.row, previous.url, previous.key, Outcome.INVALID, member=previous.member
        )
        if screened.matches:  # a listed URL or domain is never requested, not even for liveness
            return Rechecked(row_result, dict(row.record), [*screened.matches, *known])
        if previous.outcome == Outcome.MATCH or known:
            return await self._liveness(row, screened, known, row_result)
        return await self._refetch(row, screened, row_result)

    async def _liveness(
        self, row: StoredRow, screened: Screened, known: list[Match], row_result: RowResult
    ) -> Rechecked:
        hop = self.screen.hop(screened)
        result = await self.stages.fetcher.fetch(row.record["url"], read_body=False, screen=hop)
        row_result.http_status, row_result.fetched_at = result.status, result.fetched_at
        checked = Rechecked(row_result, dict(row.record), fetch=result, liveness_only=True)
        redirected = hop.matches if hop is not None else []
        if result.outcome != FetchOutcome.OK and not redirected:
            row_result.outcome, row_result.reason = result.outcome.row_outcome, result.reason
            return checked
        checked.matches = [*known, *redirected]
        checked.content_changed = _validators_differ(row.record, result)
        if not checked.matches:  # the list entry it matched was withdrawn; the stored hashes say the rest
            row_result.outcome = unmatched(row.hashes is not None, row.previous.reason)
        return checked

    async def _refetch(self, row: StoredRow, screened: Screened, row_result: RowResult) -> Rechecked:
        hop = self.screen.hop(screened)
        headers = None if self._lacks_dihedral(row) else _conditional_headers(row)
        result = await self.stages.fetcher.fetch(row.record["url"], headers=headers, screen=hop)
        body, result.body = result.body, None
        row_result.http_status, row_result.fetched_at = result.status, result.fetched_at
        carried = dict(row.record)  # a row that gives nothing new keeps its last hash record
        if hop is not None and hop.matches:
            return Rechecked(row_result, carried, hop.matches, fetch=result)
        if result.outcome != FetchOutcome.OK:
            row_result.outcome, row_result.reason = result.outcome.row_outcome, result.reason
            return Rechecked(row_result, carried, fetch=result)
        if body is None:  # a 304: only requests made with stored hashes are conditional
            return _not_modified(row, row_result, result)
        row_result.bytes = len(body)
        hashes, row_result.reason = await self.stages.hash(body)
        row_result.outcome = Outcome.CLEAN if row_result.reason is None else Outcome.INVALID
        changed = hashes is not None and row.hashes is not None and content_changed(_digests(row), hashes)
        if changed:
            row_result.outcome = Outcome.CHANGED
        query = to_query(hashes) if hashes is not None else None
        return Rechecked(
            row_result, hash_record(row_result, hashes, result), [], query, result, content_changed=changed
        )

    def _lacks_dihedral(self, row: StoredRow) -> bool:
        """A stored PDQ hash without the rotated and flipped ones that dihedral matching needs."""
        stored = row.hashes
        return self._dihedral and stored is not None and stored.pdq is not None and not stored.pdq_dihedral


def change_kinds(previous: RowResult, current: RowResult, content_changed: bool) -> list[str]:
    """What changed for one row between two scans (a row may show several kinds)."""
    before, now = previous.outcome, current.outcome
    kinds = []
    if before in LIVE and now == Outcome.DEAD:
        kinds.append("newly_dead")
    if before == Outcome.DEAD and now in LIVE:
        kinds.append("newly_live")
    if now == Outcome.MATCH and before != Outcome.MATCH:
        kinds.append("new_match")
    if before == Outcome.MATCH and now != Outcome.MATCH:
        kinds.append("match_gone")
    if content_changed:
        kinds.append("content_changed")
    return kinds


def _not_modified(row: StoredRow, row_result: RowResult, result: FetchResult) -> Rechecked:
    """A 304: the stored hashes still describe what the URL serves; nothing was downloaded."""
    stored = row.hashes
    if stored is None:  # a 304 to a request that was not conditional
        row_result.reason = FetchReason.BAD_RESPONSE
        return Rechecked(row_result, dict(row.record), fetch=result)
    row_result.outcome = Outcome.CLEAN if stored.width is not None else Outcome.INVALID
    row_result.reason = row.previous.reason if row_result.outcome == Outcome.INVALID else None
    record = {
        **row.record,
        "etag": result.etag or row.record["etag"],
        "last_modified": result.last_modified or row.record["last_modified"],
        "fetched_at": result.fetched_at,
    }
    return Rechecked(row_result, record, [], to_query(stored), result, not_modified=True)


def _conditional_headers(row: StoredRow) -> dict[str, str] | None:
    """If-None-Match with the stored ETag, else If-Modified-Since; only worth sending with stored hashes.

    One validator, the strongest: some servers answer 304 when either of two matches, and a Last-Modified
    (one-second resolution, often fixed) would then hide changed bytes behind an unchanged date.
    """
    if row.hashes is None:
        return None
    if row.record["etag"]:
        return {"If-None-Match": row.record["etag"]}
    if row.record["last_modified"]:
        return {"If-Modified-Since": row.record["last_modified"]}
    return None


def _validators_differ(record: dict, result: FetchResult) -> bool:
    """For rows never downloaded again: an ETag or Last-Modified unlike the stored one means new content."""
    pairs = ((record["etag"], result.etag), (record["last_modified"], result.last_modified))
    return any(old and new and old != new for old, new in pairs)


def _digests(row: StoredRow) -> dict[str, bytes]:
    stored = row.hashes
    return {name: value for name in content_digests() if (value := stored.get(name)) is not None}


def _ordered(matches: list[Match]) -> list[Match]:
    """The matcher's order (list, hash type, distance, entry id) for matches gathered from several lookups."""
    return sorted(matches, key=lambda m: (m.list, m.hash_type, m.distance, m.entry_id))


def _change_record(previous: RowResult, current: RowResult, kind: str) -> dict:
    return {
        "shard": current.shard,
        "row": current.row,
        "url": current.url,
        "key": current.key,
        "change": kind,
        "previous": previous.outcome,
        "current": current.outcome,
    }


async def _run(
    config: ScanConfig,
    matcher: Matcher,
    stored: StoredScan,
    units: list,
    checkpoint: Checkpoint,
    workers: WorkerPool,
    progress: Progress,
) -> None:
    hash_fn = BatchingHasher(workers, hashing_job(config, matcher), 2 * config.run.worker_count)
    fetcher = make_fetcher(config.fetch)
    try:
        stages = Stages(fetcher, hash_fn, matcher, config.audit)
        rescanner = Rescanner(stages, config.run.rows_in_flight, progress)
        evidence = stored.evidence()
        for unit in units:
            rows = stored.read(unit.start, unit.stop)
            report, changes, counts = await rescanner.run_unit(unit.id, rows, evidence)
            write_unit_changes(checkpoint, unit.id, changes)
            write_json(checkpoint.dir / f"u{unit.id:06d}{COUNTS_SUFFIX}", counts)
            checkpoint.commit(report)
            progress.unit_done()
    finally:
        await fetcher.aclose()


def _stored_scan(previous: Path) -> StoredScan:
    """The previous scan, which must have kept its hash records and finished its reports."""
    if not (previous / "hashes.parquet").is_file():
        raise InputError(
            str(previous),
            "no hashes.parquet: that scan ran without --keep-hashes, and a rescan needs its stored hashes "
            "and validators (scan again with --keep-hashes)",
        )
    stored = StoredScan(previous)
    if stored.outcomes is None or not (previous / "summary.json").is_file():
        raise InputError(str(previous), "not a finished scan: outcomes.parquet or summary.json is missing")
    return stored


def _check_dihedral(stored: StoredScan, matcher: Matcher) -> None:
    """Refuse a dihedral rescan of records without dihedral hashes from a scan that matched through them:
    those rows would get liveness checks only, with nothing to match, and be reported as matches gone."""
    if "pdq_dihedral" not in matcher.needed_hash_types or stored.has_dihedral:
        return
    path = stored.dir / "matches.jsonl"
    if not path.is_file():
        return
    rows = {(m["shard"], m["row"]) for m in jsonl.read_records(path) if m.get("transform")}
    if rows:
        raise InputError(
            str(stored.hashes_path),
            f"{len(rows)} rows matched through a rotation or flip, but these hash records (older than "
            "version 2) keep no dihedral PDQ hashes, so a rescan cannot tell whether those matches hold "
            "(and they are never downloaded again to find out); scan again with --pdq-dihedral --keep-hashes",
        )


def _summary_sections(stored: StoredScan, checkpoint: Checkpoint, unit_ids: list[int]) -> dict:
    """The `changes` section and the `history` the previous scan joins."""
    counts: Counter = Counter()
    for path in checkpoint.side_files(unit_ids, COUNTS_SUFFIX):
        counts.update(json.loads(path.read_text(encoding="utf-8")))
    before = json.loads((stored.dir / "summary.json").read_text(encoding="utf-8"))
    names = [*CHANGE_KINDS.values(), "not_modified", "liveness_only"]
    changes = {
        "previous": {"out": str(stored.dir.resolve()), "finished_at": before["finished_at"]},
        **{name: int(counts.get(name, 0)) for name in names},  # units before the fix counted with bools
    }
    entry = {key: before[key] for key in ("finished_at", "rows", "outcomes", "live_rate")}
    return {"changes": changes, "history": [*before.get("history", []), entry]}

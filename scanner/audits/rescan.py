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
new matches, matches back, matches gone, content changed) and appends the previous scan to the summary's
`history`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scanner import procguard
from scanner.audits.stored import StoredJob, StoredRow, StoredScan, StoredScans, StoredUnit
from scanner.config import HashListSpec, ScanConfig, build_config
from scanner.errors import InputError
from scanner.fetch import FetchResult
from scanner.lists import ListSpec, Match, Matcher
from scanner.lists.hashlist import NAMED_SPEC
from scanner.outcomes import (
    CONTENT,
    MATCHED,
    FetchOutcome,
    FetchReason,
    Liveness,
    Outcome,
    liveness,
    unmatched,
)
from scanner.pipeline import (
    Checked,
    HashFn,
    Pipeline,
    Progress,
    Stages,
    build_stages,
    commit_every,
    evidence_record,
    match_record,
    to_query,
)
from scanner.reports import jsonl
from scanner.reports.files import atomic_open
from scanner.reports.hashes import hash_record
from scanner.reports.records import RowResult, UnitReport
from scanner.run.checkpoint import Checkpoint
from scanner.run.job import Run
from scanner.run.lifecycle import ScanResult
from scanner.runners import local
from scanner.screen import Screen, Screened, content_changed, content_digests
from scanner.sources import Row

CHANGES_FILE = "changes.jsonl"
CHANGES_SUFFIX = ".changes.jsonl"
COUNTS_SUFFIX = ".rescan.json"
MAX_CHAIN = 100  # earlier runs a rescan looks back through (manifest `previous` links) for matches back
CHANGE_KINDS = {  # change record name -> summary count name
    "newly_dead": "newly_dead",
    "newly_live": "newly_live",
    "new_match": "new_matches",
    "match_back": "matches_back",
    "match_gone": "matches_gone",
    "content_changed": "content_changed",
}


@dataclass(slots=True)
class Rechecked(Checked):
    """One stored row after its re-check, waiting for the unit's batched match (`query`: a new body's
    hashes, or the stored ones after a 304)."""

    record: dict = field(default_factory=dict)  # its hash record in the new hashes.parquet
    previous: RowResult | None = None
    evidence: dict | None = None  # the previous scan's evidence record of the row, if it matched
    content_changed: bool = False
    not_modified: bool = False
    liveness_only: bool = False


def rescan(
    previous: str | Path,
    out: str,
    hashlists: Sequence[str] = (),
    overrides: dict | None = None,
    restart: bool = False,
    make_progress: Callable[[Run], Progress] | None = None,
) -> ScanResult:
    """Re-check the scan in `previous` (a report directory written with --keep-hashes) into `out` on this
    machine, showing progress through `make_progress` unless the rescan's run.progress (the previous scan's)
    is off. On Ray: `scanner rescan --runner ray`, or scanner.runners.ray.run(RescanJob(...))."""
    procguard.harden()  # no core dump, not dumpable, before any stored record or body is read
    job = RescanJob(previous, out, hashlists, overrides or {})
    shown = make_progress if job.config.run.progress else None
    return local.run(job, restart, shown)


class RescanJob(StoredJob):
    """A previous scan's rows checked again under its own settings: the rules of RescanPolicy."""

    name = "rescan"

    def __init__(self, previous: str | Path, out: str, hashlists: Sequence[str], overrides: dict) -> None:
        self.stored = _stored_scan(Path(previous))
        self.scans = [self.stored]
        manifest = self.stored.manifest()
        self.config = rescan_config(manifest, out, hashlists, overrides)
        self.private_networks_dropped = private_networks_dropped(manifest, self.config)
        self.earlier = earlier_matches(manifest)

    def check_matcher(self, matcher: Matcher) -> None:
        _check_dihedral(self.stored, matcher)

    def work(self, run: Run) -> RescanWork:
        return RescanWork(StoredScans([str(self.stored.hashes_path)]), self.earlier)

    def manifest(self, run: Run, summary: dict) -> dict:
        stored = self.stored
        previous = {
            "out": str(stored.dir.resolve()),
            "manifest_sha256": hashlib.sha256((stored.dir / "manifest.json").read_bytes()).hexdigest(),
        }
        allow = self.config.fetch.allow_private_networks
        return self.stored_manifest(run, allow_private_networks=allow, previous=previous)

    def summary_sections(self, run: Run) -> dict:
        return _summary_sections(self.stored, run.checkpoint, [u.id for u in run.units])

    def merge_more(self, run: Run) -> None:
        super().merge_more(run)
        _merge_changes(run.out, run.checkpoint, [u.id for u in run.units])


class RescanWork:
    """A rescan's units in any process: stored rows read there from the previous scan's hash records, each
    row re-checked by RescanPolicy in the pipeline."""

    hashing = True

    def __init__(self, scans: StoredScans, earlier: frozenset[tuple[str, int]] = frozenset()) -> None:
        self.scans = scans
        self.earlier = earlier

    def open(
        self, config: ScanConfig, matcher: Matcher, hash_fn: HashFn | None, progress: Progress | None
    ) -> Pipeline:
        stages = build_stages(config, hash_fn, matcher)
        policy = RescanPolicy(stages, self.scans, self.earlier)
        return Pipeline(policy, config.run.rows_in_flight, progress, commit_every(config))


# Without plug-ins a rescan would skip their lists' entries and report their matches gone; without the
# review rules a known false positive (negative list) or a held flood would come back as a match.
INHERITED = ("fetch", "hashing", "match", "run", "plugins", "review")


def rescan_config(manifest: dict, out: str, hashlists: Sequence[str], overrides: dict) -> ScanConfig:
    """The previous scan's settings (fetch, hashing, match, run, and its plug-ins and review rules: negative
    lists, floods), hash records kept, flags on top; its lists unless new ones are given (their per-list
    thresholds then go with them). Private networks are never inherited: a rescan reaches them only when
    asked again (see `private_networks_dropped`)."""
    saved = manifest.get("config") or {}
    data: dict = {name: dict(saved.get(name) or {}) for name in INHERITED}
    data["fetch"].pop("allow_private_networks", None)
    for where in ("runner", "ray_address"):  # where a rescan runs is its own flags' choice
        data["run"].pop(where, None)
    data["audit"] = {"keep_hashes": True}
    data["out"] = out
    if hashlists:
        data["match"].pop("list_thresholds", None)
    overrides = _negative_lists_added(data["review"], overrides)
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


def _negative_lists_added(review: dict, overrides: dict) -> dict:
    """The overrides with --negative-list's lists after the previous scan's own: a rescan adds negative lists,
    so a false positive reviewed before stays suppressed."""
    added = overrides.get("review.negative_lists")
    if not added:
        return overrides
    kept = list(review.get("negative_lists") or [])
    files = {ListSpec.parse(spec).path.resolve() for spec in kept}
    names = {ListSpec.parse(spec).name for spec in kept}
    for spec in added:
        parsed = ListSpec.parse(spec)
        if parsed.path.resolve() in files:
            continue  # given again: once is enough
        name, more = parsed.name, 2
        while name in names and not NAMED_SPEC.match(spec):  # this week's neg.csv beside last's
            name, more = f"{parsed.name}-{more}", more + 1
        kept.append(spec if name == parsed.name else f"{name}={spec}")
        files.add(parsed.path.resolve())
        names.add(name)
    return {**overrides, "review.negative_lists": kept}


def private_networks_dropped(manifest: dict, config: ScanConfig) -> bool:
    """The previous scan reached private networks and this rescan, not asked again, will not."""
    saved = (manifest.get("config") or {}).get("fetch") or {}
    return saved.get("allow_private_networks") is True and not config.fetch.allow_private_networks


class RescanPolicy:
    """The pipeline's row policy of a rescan: each stored row screened and its stored hashes matched before
    any request, then no request, liveness only, or a conditional GET (see the module's docstring)."""

    def __init__(
        self, stages: Stages, scans: StoredScans, earlier: frozenset[tuple[str, int]] = frozenset()
    ) -> None:
        self.stages = stages
        self.scans = scans
        self.earlier = earlier  # rows matched in a run before the previous one: a match now is back
        self.screen = Screen(stages.matcher)
        self._dihedral = "pdq_dihedral" in stages.matcher.needed_hash_types

    def rows(self, unit: StoredUnit) -> Iterator[tuple[Row, Screened, tuple]]:
        """The unit's stored rows, screened, each with what its stored hashes match and its evidence."""
        rows = self.scans.read(unit)
        evidence = self.scans.evidence(unit.scan)
        screened = self.screen.rows([r.row for r in rows])
        known = self._stored_matches(rows)
        for row, pre, matches in zip(rows, screened, known, strict=True):
            key = (row.previous.shard, row.previous.row)
            yield row.row, pre, (row, matches, evidence.get(key))

    async def check(self, row: Row, screened: Screened, state: tuple) -> Rechecked:
        stored, known, evidence = state
        checked = await self.recheck(stored, screened, known)
        checked.previous, checked.evidence = stored.previous, evidence
        return checked

    def report(self, unit_id: int, checked: list[Checked]) -> UnitReport:
        """The unit's report (hash records included), with its change records and counts as side files."""
        items = [item for item in checked if isinstance(item, Rechecked)]
        report = UnitReport(unit_id, [c.result for c in items], hashes=[c.record for c in items])
        changes: list[dict] = []
        counts: Counter = Counter()
        for item in items:
            if item.matches:
                item.result.outcome = Outcome.MATCH
                report.matches.extend(match_record(item.result, m) for m in _ordered(item.matches))
                report.evidence.append(item.evidence or evidence_record(item.result, item.fetch))
            back = (item.result.shard, item.result.row) in self.earlier
            kinds = change_kinds(item.previous, item.result, item.content_changed, back)
            changes.extend(_change_record(item.previous, item.result, kind) for kind in kinds)
            counts.update(CHANGE_KINDS[kind] for kind in kinds)
            counts.update(not_modified=int(item.not_modified), liveness_only=int(item.liveness_only))
        report.side = {CHANGES_SUFFIX: changes, COUNTS_SUFFIX: dict(counts)}
        return report

    def _stored_matches(self, rows: list[StoredRow]) -> list[list[Match]]:
        """What each row's stored hashes match in the current lists (before any request)."""
        with_hashes = [i for i, r in enumerate(rows) if r.hashes is not None]
        found = self.stages.matcher.match_batch([to_query(rows[i].hashes) for i in with_hashes])
        known: list[list[Match]] = [[] for _ in rows]
        for i, matches in zip(with_hashes, found, strict=True):
            known[i] = matches
        return known

    async def recheck(self, row: StoredRow, screened: Screened, known: list[Match]) -> Rechecked:
        """One row: no request if its URL is listed, liveness only if known to match, else conditional."""
        previous = row.previous
        if not row.record["url"]:
            row_result = dataclasses.replace(previous)
            return Rechecked(
                row_result, record=dict(row.record), matches=known if previous.outcome in CONTENT else []
            )
        row_result = RowResult(
            previous.shard, previous.row, previous.url, previous.key, Outcome.INVALID, member=previous.member
        )
        if screened.matches:  # a listed URL or domain is never requested, not even for liveness
            return Rechecked(row_result, record=dict(row.record), matches=[*screened.matches, *known])
        if previous.outcome in MATCHED or known:
            return await self._liveness(row, screened, known, row_result)
        return await self._refetch(row, screened, row_result)

    async def _liveness(
        self, row: StoredRow, screened: Screened, known: list[Match], row_result: RowResult
    ) -> Rechecked:
        hop = self.screen.hop(screened)
        result = await self.stages.fetcher.fetch(row.record["url"], read_body=False, screen=hop)
        row_result.http_status, row_result.fetched_at = result.status, result.fetched_at
        checked = Rechecked(row_result, fetch=result, record=dict(row.record), liveness_only=True)
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
            return Rechecked(row_result, fetch=result, matches=hop.matches, record=carried)
        if result.outcome != FetchOutcome.OK:
            row_result.outcome, row_result.reason = result.outcome.row_outcome, result.reason
            return Rechecked(row_result, fetch=result, record=carried)
        if body is None:  # a 304: only requests made with stored hashes are conditional
            return _not_modified(row, row_result, result)
        row_result.bytes = len(body)
        try:
            hashes, row_result.reason = await self.stages.hash(body)
        finally:
            result.release()  # the body's bytes leave the fetcher's budget once hashed
        row_result.outcome = Outcome.CLEAN if row_result.reason is None else Outcome.INVALID
        changed = hashes is not None and row.hashes is not None and content_changed(_digests(row), hashes)
        if changed:
            row_result.outcome = Outcome.CHANGED
        query = to_query(hashes) if hashes is not None else None
        record = hash_record(row_result, hashes, result)
        return Rechecked(row_result, query, result, record=record, content_changed=changed)

    def _lacks_dihedral(self, row: StoredRow) -> bool:
        """A stored PDQ hash without the rotated and flipped ones that dihedral matching needs."""
        stored = row.hashes
        return self._dihedral and stored is not None and stored.pdq is not None and not stored.pdq_dihedral


def change_kinds(
    previous: RowResult, current: RowResult, content_changed: bool, matched_earlier: bool = False
) -> list[str]:
    """What changed for one row between two scans (a row may show several kinds). A match that the
    previous run did not have is new, or back when a run before that one had it."""
    before, now = previous.outcome, current.outcome
    was, is_now = (liveness(r.outcome, r.reason, r.fetched_at) for r in (previous, current))
    kinds = []
    if was == Liveness.LIVE and is_now == Liveness.DEAD:
        kinds.append("newly_dead")
    if was == Liveness.DEAD and is_now == Liveness.LIVE:
        kinds.append("newly_live")
    if now in MATCHED and before not in MATCHED:  # held and suppressed rows matched too
        kinds.append("match_back" if matched_earlier else "new_match")
    if before in MATCHED and now not in MATCHED:
        kinds.append("match_gone")
    if content_changed:
        kinds.append("content_changed")
    return kinds


def earlier_matches(manifest: dict) -> frozenset[tuple[str, int]]:
    """The rows matched in the runs before the previous one: its manifest's `previous` link (a rescan's)
    followed back through each run's matches.jsonl, until a run that had none or is no longer there."""
    rows: set[tuple[str, int]] = set()
    for _ in range(MAX_CHAIN):
        link = manifest.get("previous")
        out = Path(link["out"]) if isinstance(link, dict) and isinstance(link.get("out"), str) else None
        if out is None or not (out / "matches.jsonl").is_file() or not (out / "manifest.json").is_file():
            break
        rows.update((str(m["shard"]), int(m["row"])) for m in jsonl.read_records(out / "matches.jsonl"))
        manifest = StoredScan.read_manifest(out)
    return frozenset(rows)


def _not_modified(row: StoredRow, row_result: RowResult, result: FetchResult) -> Rechecked:
    """A 304: the stored hashes still describe what the URL serves; nothing was downloaded."""
    stored = row.hashes
    if stored is None:  # a 304 to a request that was not conditional
        row_result.reason = FetchReason.BAD_RESPONSE
        return Rechecked(row_result, fetch=result, record=dict(row.record))
    row_result.outcome = Outcome.CLEAN if stored.width is not None else Outcome.INVALID
    row_result.reason = row.previous.reason if row_result.outcome == Outcome.INVALID else None
    record = {
        **row.record,
        "etag": result.etag or row.record["etag"],
        "last_modified": result.last_modified or row.record["last_modified"],
        "fetched_at": result.fetched_at,
    }
    return Rechecked(row_result, to_query(stored), result, record=record, not_modified=True)


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
    entry = {
        key: before[key]
        for key in ("finished_at", "rows", "outcomes", "live_rate", "liveness")
        if key in before
    }
    return {"changes": changes, "history": [*before.get("history", []), entry]}


def _merge_changes(out: Path, checkpoint: Checkpoint, unit_ids: list[int]) -> None:
    """changes.jsonl, from the units' change records, when every unit wrote them."""
    changes = list(checkpoint.side_files(unit_ids, CHANGES_SUFFIX))
    if changes and all(path.exists() for path in changes):
        with atomic_open(out / CHANGES_FILE, "w") as handle:
            for path in changes:
                jsonl.write_records(handle, jsonl.read_records(path))

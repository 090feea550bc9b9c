"""scanner rematch: stored hash records against new or updated lists, with no network access at all.

Every row gets the matches a fresh scan with these lists would give for the same responses: its URL is
screened (url, url_* and domain entries) and, if that finds nothing, the hashes stored for it are matched,
for rows that served something in the scan that stored them. Other rows keep their outcome; a row matched
before and not now becomes clean (invalid if its body was no usable image), or unchecked when it was never
fetched (screened) and so has no hashes to say more. A row matched before at a redirect target is screened
at that URL again (the evidence keeps it); other redirect targets are not recorded, so a newly listed one
is found by a rescan or a scan, not by rematch. With --pdq-dihedral the rotated and flipped PDQ hashes a
--pdq-dihedral scan stored are matched too (matches name the transform, as a scan's do); records without
them (a scan without --pdq-dihedral, or hash records older than version 2) are refused, since those hashes
need the image, which is never stored. The report files are a scan's, plus hashes.parquet: a rematch can
be rematched or rescanned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scanner.audits.stored import StoredJob, StoredRow, StoredScan, StoredScans, StoredUnit
from scanner.config import ScanConfig
from scanner.errors import ConfigError
from scanner.fetch import FetchResult
from scanner.lists import Match, Matcher
from scanner.outcomes import CONTENT, MATCHED, Outcome, unmatched
from scanner.pipeline import HashFn, Progress, evidence_record, match_record, to_query
from scanner.reports.records import RowResult, UnitReport
from scanner.run.job import Run, execute
from scanner.run.lifecycle import ScanResult
from scanner.screen import Screen
from scanner.urls.normal import normalise


def rematch(hashes: Sequence[str], config: ScanConfig, restart: bool = False) -> ScanResult:
    """Re-match the hash records in `hashes` (files or report directories) against config's lists."""
    return execute(RematchJob(hashes, config), run_here, restart)


def run_here(run: Run, units: list[StoredUnit], progress: Progress | None = None) -> None:
    """The units one after another in this process, with no event loop: a rematch opens no socket, not
    even an event loop's wake-up pair."""
    rematcher = run.work().open(run.config, run.matcher, None, progress)
    for unit in units:
        run.checkpoint.commit(rematcher.rematch(unit))
        if progress is not None:
            progress.unit_done()


class RematchJob(StoredJob):
    """Stored rows matched again, screened again; no request, no hashing."""

    name = "rematch"
    hashing = False

    def __init__(self, hashes: Sequence[str], config: ScanConfig) -> None:
        self.hashes = list(hashes)
        self.config = config
        self.scans = []

    def check(self) -> None:
        if not self.hashes:
            raise ConfigError("no hash records given (a hashes.parquet, or a report directory holding one)")
        if not self.config.hashlists:
            raise ConfigError("no hash list given (--hashlist PATH)")

    def load(self) -> list[StoredUnit]:
        self.scans = [StoredScan(path) for path in self.hashes]
        if self.config.match.pdq_dihedral:
            _check_dihedral(self.scans)
        return super().load()

    def work(self, run: Run) -> RematchWork:
        return RematchWork(StoredScans([str(scan.hashes_path) for scan in self.scans]))

    def manifest(self, run: Run, summary: dict) -> dict:
        return self.stored_manifest(run, rematched=[str(scan.hashes_path) for scan in self.scans])


class RematchWork:
    """A rematch's units in any process: each reads its stored rows and matches them (no network)."""

    hashing = False

    def __init__(self, scans: StoredScans) -> None:
        self.scans = scans

    def open(
        self, config: ScanConfig, matcher: Matcher, hash_fn: HashFn | None, progress: Progress | None
    ) -> Rematcher:
        return Rematcher(self.scans, Screen(matcher), matcher)


@dataclass(slots=True)
class Rematcher:
    """A rematch's unit processor: stored rows read, screened and matched; no request, no hashing."""

    scans: StoredScans
    screen: Screen
    matcher: Matcher

    def rematch(self, unit: StoredUnit) -> UnitReport:
        rows = self.scans.read(unit)
        return rematch_unit(unit.id, rows, self.screen, self.matcher, self.scans.evidence(unit.scan))

    async def run_unit(self, unit: StoredUnit, kept: Mapping[int, UnitReport] | None = None) -> UnitReport:
        """The unit whole: a rematch commits no part (it runs here, never on unit workers), so keeps none."""
        return self.rematch(unit)

    async def aclose(self) -> None:
        """Nothing to close: a rematch opens no connection."""


def _check_dihedral(scans: list[StoredScan]) -> None:
    """Refuse dihedral matching over records that hold a PDQ hash without its rotated and flipped ones."""
    for scan in scans:
        lacking = scan.first_without_dihedral()
        if lacking is not None:
            raise ConfigError(
                f"rematch cannot match rotations and flips (pdq_dihedral) in {scan.hashes_path}: "
                f"shard {lacking['shard']} row {lacking['row']} holds the plain PDQ hash only (its scan ran "
                "without --pdq-dihedral, or before hash records kept the dihedral hashes), and the rotated "
                "and flipped ones need the image, which is never stored; scan again with --pdq-dihedral "
                "--keep-hashes"
            )


def rematch_unit(
    unit_id: int,
    rows: list[StoredRow],
    screen: Screen,
    matcher: Matcher,
    evidence: dict[tuple[str, int], dict],
) -> UnitReport:
    """One unit's outcomes, matches and evidence from its stored rows, and the rows' records unchanged."""
    screened = screen.rows([r.row for r in rows])
    hashed = [
        i
        for i, (row, pre) in enumerate(zip(rows, screened, strict=True))
        if not pre.matches and row.hashes is not None and row.previous.outcome in CONTENT
    ]
    found = matcher.match_batch([to_query(rows[i].hashes) for i in hashed]) if hashed else []
    matches: list[list[Match]] = [pre.matches for pre in screened]
    for i, row_matches in zip(hashed, found, strict=True):
        matches[i] = row_matches
    for i, row in enumerate(rows):
        if not matches[i] and row.hashes is None and row.previous.outcome in MATCHED:
            matches[i] = _redirect_matches(screen, evidence.get((row.previous.shard, row.previous.row)))
    report = UnitReport(unit_id, [], hashes=[row.record for row in rows])
    rematched = set(hashed)
    for i, row in enumerate(rows):
        row_result = _rematched(row.previous, bool(matches[i]), i in rematched)
        report.outcomes.append(row_result)
        if matches[i]:
            report.matches.extend(match_record(row_result, m) for m in matches[i])
            report.evidence.append(
                evidence.get((row_result.shard, row_result.row)) or _evidence(row_result, row)
            )
    return report


def _redirect_matches(screen: Screen, evidence: dict | None) -> list[Match]:
    """A row matched before at a redirect target (its evidence's final URL) is screened there again."""
    final_url = evidence.get("final_url") if evidence else None
    if not final_url or final_url == evidence.get("url"):
        return []
    try:
        return screen.url_matches(normalise(final_url))
    except ValueError:
        return []


def _rematched(previous: RowResult, matched: bool, hashed: bool) -> RowResult:
    row_result = dataclasses.replace(previous)
    if matched:
        row_result.outcome = Outcome.MATCH
    elif previous.outcome in MATCHED:
        row_result.outcome = unmatched(hashed, previous.reason)
    return row_result


def _evidence(row_result: RowResult, row: StoredRow) -> dict:
    """Evidence of a new match: what the stored record knows (when its hashes were observed)."""
    return evidence_record(
        row_result, FetchResult(row_result.url, fetched_at=row.record["fetched_at"] or 0.0)
    )

"""Merge committed units into the final reports and write summary.json and manifest.json."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from scanner.outcomes import (
    LIVENESS,
    OUTCOMES,
    ChangeReason,
    Liveness,
    Outcome,
    SourceReason,
    live_rate,
    liveness,
)
from scanner.reports import jsonl
from scanner.reports.files import atomic_open, sha256_file, write_json
from scanner.reports.html import checked_manifest, write_html_report
from scanner.reports.records import OUTCOME_SCHEMA, UnitFiles
from scanner.reports.review import Review, merge_reviewed

SUMMARY_SCHEMA_VERSION = 2
REPORT_FILES = (
    "outcomes.parquet",
    "matches.jsonl",
    "evidence.jsonl",
    "summary.json",
    "report.html",
    "hashes.parquet",
    "changes.jsonl",
    "held.jsonl",
    "suppressed.jsonl",
)


@dataclass(slots=True)
class Tally:
    """Counts gathered while merging, the raw material of summary.json."""

    rows: int = 0
    outcomes: Counter = field(default_factory=Counter)
    status_classes: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    matches: int = 0
    by_list: dict[str, dict[str, int]] = field(default_factory=dict)
    by_category: Counter = field(default_factory=Counter)
    by_hash_type: Counter = field(default_factory=Counter)
    matched_rows_by_list: dict[str, set] = field(default_factory=dict)
    unreadable: Counter = field(default_factory=Counter)
    liveness: Counter = field(default_factory=Counter)
    floods: list[dict] | None = None  # entries that matched too many rows (reviewed runs)


def merge_reports(
    out_dir: Path, checkpoint: UnitFiles, unit_ids: list[int], review: Review | None = None
) -> Tally:
    """Concatenate the units' outputs, in unit order, into outcomes.parquet, matches.jsonl, evidence.jsonl;
    with `review`, held and suppressed rows are set aside as they are written (reports/review.py)."""
    tally = Tally()
    if review is not None:
        counts = (lambda table: _count_outcomes(tally, table.to_pydict()), lambda m: _count_match(tally, m))
        tally.floods = merge_reviewed(out_dir, checkpoint, unit_ids, review, counts)
        return tally
    with (
        atomic_open(out_dir / "outcomes.parquet") as handle,
        pq.ParquetWriter(handle, OUTCOME_SCHEMA) as writer,
    ):
        for path in checkpoint.outcome_files(unit_ids):
            table = pq.read_table(path, schema=OUTCOME_SCHEMA)
            writer.write_table(table, row_group_size=64 * 1024)
            _count_outcomes(tally, table.to_pydict())
    with atomic_open(out_dir / "matches.jsonl", "w") as handle:
        for path in checkpoint.side_files(unit_ids, ".matches.jsonl"):
            for match in jsonl.read_records(path):
                jsonl.write_records(handle, [match])
                _count_match(tally, match)
    with atomic_open(out_dir / "evidence.jsonl", "w") as handle:
        for path in checkpoint.side_files(unit_ids, ".evidence.jsonl"):
            jsonl.write_records(handle, jsonl.read_records(path))
    return tally


def _count_outcomes(tally: Tally, columns: dict[str, list]) -> None:
    tally.rows += len(columns["outcome"])
    tally.outcomes.update(columns["outcome"])
    tally.status_classes.update(f"{s // 100}xx" if s else "none" for s in columns["http_status"])
    tally.reasons.update(r for r in columns["reason"] if r)
    rows = zip(columns["outcome"], columns["reason"], columns["fetched_at"], strict=True)
    tally.liveness.update(liveness(*row) for row in rows)
    reasons = zip(columns["shard"], columns["reason"], strict=True)
    tally.unreadable.update(shard for shard, reason in reasons if reason == SourceReason.UNREADABLE_SHARD)


def _count_match(tally: Tally, match: dict) -> None:
    tally.matches += 1
    name = match["list"]
    tally.matched_rows_by_list.setdefault(name, set()).add((match["shard"], match["row"]))
    tally.by_list.setdefault(name, {"matches": 0})["matches"] += 1
    tally.by_category[match.get("category") or "uncategorised"] += 1
    tally.by_hash_type[match["hash_type"]] += 1


def summary(tally: Tally, started_at: float, finished_at: float, skipped: dict[str, str]) -> dict:
    """The documented, versioned summary (schema: scanner/schemas/summary.schema.json)."""
    duration = max(finished_at - started_at, 1e-9)
    for name, rows in tally.matched_rows_by_list.items():
        tally.by_list[name]["rows"] = len(rows)
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "rows": tally.rows,
        "outcomes": {
            o: tally.outcomes.get(o, 0) for o in (*OUTCOMES, *sorted(set(tally.outcomes) - set(OUTCOMES)))
        },
        "live_rate": live_rate(tally.liveness[Liveness.LIVE], tally.liveness[Liveness.DEAD]),
        "liveness": {kind: tally.liveness.get(kind, 0) for kind in LIVENESS},
        "http_status_classes": dict(sorted(tally.status_classes.items())),
        "reasons": dict(sorted(tally.reasons.items())),
        "matches": {
            "total": tally.matches,
            "rows": tally.outcomes.get(Outcome.MATCH, 0),
            "by_list": dict(sorted(tally.by_list.items())),
            "by_category": dict(sorted(tally.by_category.items())),
            "by_hash_type": dict(sorted(tally.by_hash_type.items())),
        },
        "skipped_shards": dict(sorted(skipped.items())),
        "unreadable_rows_by_shard": dict(sorted(tally.unreadable.items())),
        **({"floods": tally.floods} if tally.floods is not None else {}),
        "started_at": _iso(started_at),
        "finished_at": _iso(finished_at),
        "duration_seconds": round(duration, 3),
        "rows_per_second": round(tally.rows / duration, 1),
        **_changed_looks(tally),
    }


def _changed_looks(tally: Tally) -> dict:
    """How the changed rows look beside the dataset's perceptual hashes (only when some rows changed)."""
    rows = tally.outcomes.get(Outcome.CHANGED, 0)
    if not rows:
        return {}
    near = tally.reasons.get(ChangeReason.NEAR_IDENTICAL, 0)
    compared = near + tally.reasons.get(ChangeReason.LOOKS_DIFFERENT, 0)
    return {"changed_looks": {"rows": rows, "compared": compared, "within_threshold": near}}


def write_summary_and_manifest(out_dir: Path, summary_data: dict, manifest: dict) -> None:
    """Write summary.json and report.html, then manifest.json naming every report file with its SHA-256."""
    write_json(out_dir / "summary.json", summary_data)
    write_html_report(out_dir, manifest=manifest)
    files = {name: sha256_file(out_dir / name) for name in REPORT_FILES if (out_dir / name).exists()}
    write_json(out_dir / "manifest.json", {**manifest, "files": files})


def refresh_digests(out_dir: str | Path, names: list[str]) -> None:
    """Record new SHA-256s in manifest.json for report files regenerated after the scan (report.html)."""
    path = Path(out_dir) / "manifest.json"
    manifest = checked_manifest(path)  # a regular file of bounded size, with its map of digests
    manifest["files"].update({name: sha256_file(Path(out_dir) / name) for name in names})
    write_json(path, manifest)


def _iso(timestamp: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="milliseconds")

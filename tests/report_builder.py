"""A finished scan's report directory, built with the project's own writers from a small, known scenario."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from scanner import __version__
from scanner.reports.records import RowResult, UnitReport
from scanner.reports.writer import merge_reports, summary, write_summary_and_manifest
from scanner.run.checkpoint import Checkpoint

OBSERVED = 1_760_000_000.0
# Per shard: (outcome, http_status, reason) for each row, in row order.
SHARD_ROWS: dict[str, list[tuple[str, int | None, str | None]]] = {
    "part-00000.parquet": [("clean", 200, None)] * 25
    + [("dead", 404, "http_404")] * 7
    + [("dead", None, "dns")] * 2
    + [("invalid", 200, "not_an_image"), ("blocked", None, "private_address")]
    + [("match", 200, None)] * 4,
    "part-00001.parquet": [("clean", 200, None)] * 10
    + [("dead", 410, "http_410")] * 8
    + [("match", 200, None), ("invalid", None, "empty_url")]
    + [("changed", 200, None)] * 3
    + [("unchecked", None, None)] * 2
    + [("held", 200, None), ("suppressed", 200, None)],  # set aside by review (docs/review.md)
}
# (shard, row, list, entry_id, category, hash_type, distance, quality)
MATCHES = [
    ("part-00000.parquet", 36, "ncmec", "n-1", "A1", "md5", 0, None),
    ("part-00000.parquet", 37, "iwf", "i-7", "B", "pdq", 12, 90),
    ("part-00000.parquet", 38, "iwf", "i-9", "B", "pdq", 25, 100),
    ("part-00000.parquet", 38, "ncmec", "n-2", "A1", "md5", 0, None),
    ("part-00000.parquet", 39, "iwf", "i-3", None, "dhash", 4, None),
    ("part-00001.parquet", 18, "ncmec", "n-5", "A2", "pdq", 3, 80),
]
HOSTILE_URLS = {
    ("part-00000.parquet", 36): "http://a.example/x.jpg?q=<script>alert(1)</script>",
    ("part-00000.parquet", 37): 'http://b.example/"><svg onload=alert(1)>.jpg',
}
HOSTILE_KEYS = {("part-00000.parquet", 38): '=2+5+cmd|" /C calc"!A0'}
LISTS = [
    {"name": "ncmec", "path": "/lists/ncmec.csv", "digest": "ab" * 32, "counts": {"md5": 2, "pdq": 1}},
    {"name": "iwf", "path": "/lists/iwf.csv", "digest": "cd" * 32, "counts": {"pdq": 2, "dhash": 1}},
]


@dataclass(slots=True)
class BuiltReport:
    out: Path
    shards: dict[str, Path]
    summary: dict


def url_of(name: str, row: int) -> str:
    return HOSTILE_URLS.get((name, row), f"http://img{row}.example/{name}/{row}.jpg")


def key_of(name: str, row: int) -> str:
    return HOSTILE_KEYS.get((name, row), f"k{row}")


def caption_of(name: str, row: int) -> str:
    return f"caption {row} of {name}"


def build_report(tmp: Path, history: list[dict] | None = None, changes: dict | None = None) -> BuiltReport:
    """Write the shards, commit a unit per shard, then merge and summarise as a scan's finish does (a
    rescan's `history` and `changes` sections added when given)."""
    shards = {name: _write_shard(tmp / "data", name) for name in SHARD_ROWS}
    out = tmp / "out"
    checkpoint = Checkpoint(out, {"test": True})
    for unit_id, (name, path) in enumerate(shards.items()):
        checkpoint.commit(_unit(unit_id, name, str(path)))
    tally = merge_reports(out, checkpoint, list(range(len(shards))))
    summary_data = summary(tally, OBSERVED - 30, OBSERVED + 30, {})
    if history is not None:
        summary_data["history"] = history
    if changes is not None:
        summary_data["changes"] = changes
    write_summary_and_manifest(out, summary_data, _manifest(shards, summary_data))
    checkpoint.seal()
    return BuiltReport(out, shards, summary_data)


def expected_outcomes() -> Counter:
    return Counter(outcome for rows in SHARD_ROWS.values() for outcome, _, _ in rows)


def _write_shard(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows = range(len(SHARD_ROWS[name]))
    table = pa.table(
        {
            "SAMPLE_ID": [key_of(name, r) for r in rows],
            "URL": [url_of(name, r) for r in rows],
            "TEXT": [caption_of(name, r) for r in rows],
        }
    )
    pq.write_table(table, directory / name, row_group_size=8)
    return directory / name


def _unit(unit_id: int, name: str, shard: str) -> UnitReport:
    outcomes = [
        RowResult(
            shard,
            r,
            url_of(name, r),
            key_of(name, r),
            o,
            status,
            reason,
            OBSERVED + r,
            1000 + r if status else None,
        )
        for r, (o, status, reason) in enumerate(SHARD_ROWS[name])
    ]
    matches = [_match(shard, name, *m[1:]) for m in MATCHES if m[0] == name]
    matched_rows = sorted({m[1] for m in MATCHES if m[0] == name})
    evidence = [_evidence(shard, name, r) for r in matched_rows]
    return UnitReport(unit_id, outcomes, matches, evidence)


def _match(
    shard: str, name: str, row: int, hashlist: str, entry: str, category, hash_type, distance, quality
) -> dict:
    return {
        "shard": shard,
        "row": row,
        "url": url_of(name, row),
        "key": key_of(name, row),
        "list": hashlist,
        "entry_id": entry,
        "category": category,
        "hash_type": hash_type,
        "distance": distance,
        "quality": quality,
    }


def _evidence(shard: str, name: str, row: int) -> dict:
    return {
        "shard": shard,
        "row": row,
        "url": url_of(name, row),
        "final_url": url_of(name, row),
        "http_status": 200,
        "server_ip": f"192.0.2.{row}",
        "content_type": "image/jpeg",
        "content_length": 1000 + row,
        "observed_at": f"2025-10-09T08:{row:02d}:00+00:00",
    }


def _manifest(shards: dict[str, Path], summary_data: dict) -> dict:
    return {
        "scanner_version": __version__,
        "command": ["scanner", "scan", "<test>"],
        "config": {"match": {"pdq_threshold": 31}, "inputs": [str(p) for p in shards.values()]},
        "lists": LISTS,
        "inputs": [{"path": str(p), "kind": "parquet", "bytes": p.stat().st_size} for p in shards.values()],
        "skipped_shards": {},
        "units": len(shards),
        "started_at": summary_data["started_at"],
        "finished_at": summary_data["finished_at"],
    }

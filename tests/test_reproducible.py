"""Two scans of the same inputs against the same responses give the same reports, timings aside."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from scanner.config import build_config
from scanner.demo import demo_routes, serve, write_demo_list, write_demo_shard
from scanner.reports.verify import verify_report
from scanner.runners.local import scan

TIMING_FIELDS = ("started_at", "finished_at", "duration_seconds", "rows_per_second")


def scan_into(out: Path, shard: Path, hashlist: Path, run: dict) -> None:
    """A real scan of the shard; run settings differ between the two scans and must not change any result."""
    config = build_config(
        {
            "inputs": [str(shard)],
            "out": str(out),
            "hashlist": [f"demo={hashlist}"],
            "fetch": {"allow_private_networks": True},
            "source": {"rows_per_unit": 8},
            "run": {"progress": False, **run},
        },
        "test",
    )
    scan(config, restart=True)


def test_two_scans_give_identical_reports(tmp_path: Path) -> None:
    routes, paths, bodies = demo_routes(16)
    hashlist, shard = tmp_path / "list.csv", tmp_path / "shard.parquet"
    write_demo_list(hashlist, bodies)
    with serve(routes) as base:
        write_demo_shard(shard, base, paths)
        scan_into(tmp_path / "a", shard, hashlist, {"workers": 1, "rows_in_flight": 4, "units_in_flight": 1})
        scan_into(tmp_path / "b", shard, hashlist, {"workers": 2, "rows_in_flight": 64, "units_in_flight": 3})
    a, b = tmp_path / "a", tmp_path / "b"

    outcomes_a, outcomes_b = (pq.read_table(d / "outcomes.parquet") for d in (a, b))
    assert outcomes_a.num_rows == pq.ParquetFile(shard).metadata.num_rows
    assert outcomes_a.drop_columns(["fetched_at"]).equals(outcomes_b.drop_columns(["fetched_at"]))
    assert outcomes_a.column("row").to_pylist() == sorted(outcomes_a.column("row").to_pylist())

    matches = (a / "matches.jsonl").read_bytes()
    assert matches and matches == (b / "matches.jsonl").read_bytes()
    evidence_a, evidence_b = (without_field(d / "evidence.jsonl", "observed_at") for d in (a, b))
    assert evidence_a == evidence_b

    summary_a, summary_b = (untimed_lines(d / "summary.json") for d in (a, b))
    assert summary_a == summary_b
    assert all(verify_report(d).ok for d in (a, b))


def without_field(path: Path, name: str) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records and all(r.pop(name) for r in records)
    return records


def untimed_lines(path: Path) -> list[str]:
    """summary.json's text (one key a line), minus the timing lines: the rest must match byte for byte."""
    lines = path.read_text().splitlines()
    kept = [line for line in lines if not line.strip().startswith(tuple(f'"{f}"' for f in TIMING_FIELDS))]
    assert len(lines) - len(kept) == len(TIMING_FIELDS)
    return kept

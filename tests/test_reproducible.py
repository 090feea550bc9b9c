"""Two scans of the same inputs against the same responses give the same reports, timings aside."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scanner.cli.demo import demo_routes, serve, write_demo_list, write_demo_shard
from scanner.config import build_config
from scanner.reports.export import write_referrals
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


@pytest.fixture(scope="module")
def two_scans(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The demo's inputs scanned twice against one loopback server: (scan a, scan b, shard)."""
    tmp = tmp_path_factory.mktemp("scans")
    routes, paths, bodies = demo_routes(16)
    hashlist, shard = tmp / "list.csv", tmp / "shard.parquet"
    write_demo_list(hashlist, bodies)
    with serve(routes) as base:
        write_demo_shard(shard, base, paths)
        scan_into(tmp / "a", shard, hashlist, {"workers": 1, "rows_in_flight": 4, "units_in_flight": 1})
        scan_into(tmp / "b", shard, hashlist, {"workers": 2, "rows_in_flight": 64, "units_in_flight": 3})
    return tmp / "a", tmp / "b", shard


def test_two_scans_give_identical_reports(two_scans: tuple[Path, Path, Path]) -> None:
    a, b, shard = two_scans

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


def test_a_real_scan_reports_exports_and_verifies(two_scans: tuple[Path, Path, Path]) -> None:
    out = two_scans[0]
    summary = json.loads((out / "summary.json").read_text())
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f"{summary['rows']:,}" in page and f"{100 * summary['live_rate']:.1f}%" in page
    assert "://" not in page
    path, count = write_referrals(out, "csv", with_captions=True)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert count == len(rows) == summary["matches"]["total"] > 0
    for row in rows:
        assert row["server_ip"] == "127.0.0.1" and row["http_status"] == "200" and row["caption"]
        assert int(row["content_length"]) > 0 and row["content_type"].startswith("image/")
    assert verify_report(out).ok


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

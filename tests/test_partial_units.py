"""A unit still running commits its finished rows in parts: a kill of the scan or of a unit worker, mid-unit,
loses at most run.commit_every_s of work, and the reports come out as an uninterrupted run's."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from audit_support import run_scan, write_shard
from images import encode, make_image
from loopback import LoopbackServer

from scanner.audits.rescan import RescanJob
from scanner.config import build_config
from scanner.errors import CheckpointError
from scanner.hashing import hash_image
from scanner.outcomes import Outcome
from scanner.pipeline import Progress
from scanner.reports.records import RowResult, UnitReport, combined, from_row_record, row_record
from scanner.run.checkpoint import Checkpoint
from scanner.run.job import Job, hashing_job
from scanner.run.lifecycle import load_lists
from scanner.run.scan import ScanJob

REPO = Path(__file__).resolve().parents[1]
ROWS = 400  # one unit (rows_per_unit is 500 by default)
HUNG = 3  # a row that hangs until the fetch timeout: the rows after it finish first
PER_HOST = 4
SLOW = 0.05  # seconds per slow row: 4 at once, about 80 rows a second
COMMIT_EVERY_S = 0.5
# Rows that may be lost: those finished in the last commit interval (and the one before it, for the part
# on its way), the rows in flight and the hung one.
MAY_LOSE = int(2 * COMMIT_EVERY_S * PER_HOST / SLOW) + PER_HOST + 1 + 20
IMAGES = [encode(make_image(700 + i, (96, 72)), "JPEG") for i in range(5)]


def url(server: LoopbackServer, row: int) -> str:
    if row == HUNG:
        return server.url(f"/slow?seconds=60&i={row}")
    if row % 40 == 10:
        return server.url(f"/img/{row // 40 % 5}.jpg?i={row}")
    return server.url(f"/slow?seconds={SLOW}&i={row}")


@pytest.fixture(scope="module")
def server():
    with LoopbackServer({f"/img/{i}.jpg": body for i, body in enumerate(IMAGES)}) as running:
        yield running


@pytest.fixture(scope="module")
def inputs(server, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("partial")
    pq.write_table(
        pa.table({"key": [f"k{i}" for i in range(ROWS)], "url": [url(server, i) for i in range(ROWS)]}),
        tmp / "shard.parquet",
    )
    (tmp / "list.txt").write_text(hash_image(IMAGES[2], frozenset({"md5"})).md5.hex() + "\n")
    (tmp / "scan.toml").write_text(f"[run]\ncommit_every_s = {COMMIT_EVERY_S}\nprogress = false\n")
    return tmp


def command(tmp: Path, out: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "scanner", "scan", str(tmp / "shard.parquet")),
        *("--hashlist", f"md5:{tmp / 'list.txt'}", "--out", str(out), "--config", str(tmp / "scan.toml")),
        *("--allow-private-networks", "--workers", "1", "--per-host", str(PER_HOST)),
        *("--timeout", "6"),
    ]


def scan(tmp: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command(tmp, out), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def start(tmp: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        command(tmp, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_requests(server: LoopbackServer, count: int) -> None:
    deadline = time.monotonic() + 120
    while server.total_hits < count:
        assert time.monotonic() < deadline, "the scan never got that far"
        time.sleep(0.05)


def reports(out: Path) -> tuple[list[dict], str, str, list[int]]:
    """What a run reports, less the times (fetched_at, observed_at), and outcomes.parquet's row groups."""
    outcomes = pq.ParquetFile(out / "outcomes.parquet")
    groups = [outcomes.metadata.row_group(i).num_rows for i in range(outcomes.num_row_groups)]
    rows = outcomes.read().drop_columns(["fetched_at"]).to_pylist()
    evidence = re.sub(r'"observed_at":"[^"]*"', "", (out / "evidence.jsonl").read_text())
    return rows, (out / "matches.jsonl").read_text(), evidence, groups


@pytest.fixture(scope="module")
def reference(server, inputs) -> tuple:
    scan(inputs, inputs / "reference")
    return reports(inputs / "reference")


def kept_rows(stdout: str) -> int:
    found = re.search(rf"resumed: ([\d,]+) of {ROWS} rows already done", stdout)
    assert found, stdout
    return int(found[1].replace(",", ""))


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_scan_stopped_mid_unit_keeps_the_rows_it_finished(server, inputs, reference, tmp_path, how):
    out = tmp_path / "out"
    server.reset_hits()
    process = start(inputs, out)
    wait_for_requests(server, ROWS // 2)
    time.sleep(2 * COMMIT_EVERY_S)
    requested = server.total_hits
    process.send_signal(how)  # the scan's own process: its unit worker dies with it (SIGKILL, SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode != 0, "the scan finished before it was stopped: make it slower"
    assert not list((out / ".units").glob("u*.done.json")), "the one unit was committed whole"
    server.reset_hits()
    kept = kept_rows(scan(inputs, out).stdout)
    print(f"{how.name}: {requested} rows requested before, {kept} kept")
    assert kept >= requested - MAY_LOSE
    assert server.total_hits <= ROWS - kept + PER_HOST + 1  # the kept rows were not requested again
    assert reports(out) == reference


def test_a_unit_worker_killed_mid_unit_loses_only_its_uncommitted_rows(server, inputs, reference, tmp_path):
    out = tmp_path / "out"
    server.reset_hits()
    process = start(inputs, out)
    wait_for_requests(server, ROWS // 2)
    time.sleep(2 * COMMIT_EVERY_S)
    workers = [
        child
        for child in psutil.Process(process.pid).children()
        if "spawn_main" in " ".join(child.cmdline()) and child.children()  # not the resource tracker
    ]
    assert len(workers) == 1
    requested = server.total_hits
    workers[0].kill()
    _stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    print(f"unit worker killed: {requested} rows requested before, {server.total_hits} in all for {ROWS}")
    # Rerun on a fresh worker, the unit requests only the rows its parts do not hold.
    assert server.total_hits <= ROWS + MAY_LOSE
    assert requested > MAY_LOSE
    assert reports(out) == reference


def row_report(unit_id: int, row: int, matched: bool) -> UnitReport:
    where = ("s\u202e.parquet", row, f"http://h/{row}\u2028", None)  # hidden characters read back exact
    result = RowResult(*where, Outcome.CLEAN, 200, None, 1.5 + row)
    report = UnitReport(unit_id, [result], hashes=[{"row": row, "md5": "ab" * 16, "fetched_at": 1.25}])
    if matched:
        result.outcome = Outcome.MATCH
        report.matches = [{"row": row, "list": "l"}, {"row": row, "list": "m"}]
        report.evidence = [{"row": row, "observed_at": None}]
    changes = [{"row": row}] if matched else []
    report.side = {".changes.jsonl": changes, ".rescan.json": {"gone": int(matched)}}
    return report


def test_rows_committed_in_parts_read_back_and_combine_in_row_order(tmp_path):
    checkpoint = Checkpoint(tmp_path, {"inputs": []})
    rows = {p: row_report(7, 100 + p, p % 3 == 0) for p in range(6)}
    checkpoint.commit_part(7, [(p, rows[p]) for p in (4, 0, 5)])
    checkpoint.commit_part(7, [(p, rows[p]) for p in (1, 2, 3)])
    reopened = Checkpoint(tmp_path, {"inputs": []})
    assert reopened.kept_rows({7}) == 6 and reopened.kept_rows({8}) == 0
    kept = reopened.kept(7)
    assert kept == rows
    whole = combined(7, (kept[p] for p in sorted(kept)))
    assert [o.row for o in whole.outcomes] == list(range(100, 106))
    assert [m["row"] for m in whole.matches] == [100, 100, 103, 103]
    assert whole.hashes == [r.hashes[0] for r in rows.values()]
    assert whole.side == {".changes.jsonl": [{"row": 100}, {"row": 103}], ".rescan.json": {"gone": 2}}
    reopened.commit(whole)
    assert not list((tmp_path / ".units").glob("p*"))  # the unit's own files hold its rows now


def test_a_damaged_part_is_named_and_a_committed_units_parts_are_dropped(tmp_path):
    checkpoint = Checkpoint(tmp_path, {"inputs": []})
    checkpoint.commit_part(3, [(0, row_report(3, 0, False))])
    checkpoint.commit_part(4, [(0, row_report(4, 0, False))])
    checkpoint.commit(UnitReport(4, [row_report(4, 0, False).outcomes[0]]))
    left = tmp_path / ".units" / "p000004.0001.jsonl"
    left.write_text((tmp_path / ".units" / "p000003.0000.jsonl").read_text())  # a kill after the commit
    part = tmp_path / ".units" / "p000003.0000.jsonl"
    part.write_text(part.read_text().replace('"position":0', '"position":"0"'))
    with pytest.raises(CheckpointError, match=r"p000003\.0000\.jsonl is not a part its unit committed"):
        Checkpoint(tmp_path, {"inputs": []})
    assert not left.exists()
    part.unlink()
    assert Checkpoint(tmp_path, {"inputs": []}).kept(3) == {}


def test_a_row_record_keeps_every_value_exact():
    report = row_report(1, 9, True)
    assert from_row_record(1, row_record(5, report)) == (5, report)
    with pytest.raises(ValueError):
        from_row_record(1, {**row_record(5, report), "extra": 1})


class _Parts(Progress):
    """What a unit worker's progress passes on: every part, by unit and position."""

    takes_parts = True

    def __init__(self) -> None:
        self.parts: dict[int, dict[int, UnitReport]] = {}

    def part(self, unit_id: int, rows: list[tuple[int, UnitReport]]) -> None:
        self.parts.setdefault(unit_id, {}).update(rows)


def _run_units(job: Job, commit_rows: int, kept: dict | None = None) -> tuple[list[UnitReport], dict]:
    """The job's units run in this process through its row policy, hashing here, parts committed every
    commit_rows rows; `kept`: rows given as committed by an earlier run."""
    units = job.load()
    _, matcher = load_lists(job.config)
    config = dataclasses.replace(
        job.config, run=dataclasses.replace(job.config.run, commit_every_rows=commit_rows)
    )
    hashes = hashing_job(config, matcher)
    progress = _Parts()

    async def hash_fn(body: bytes) -> tuple:
        return hashes(body)

    async def run() -> list[UnitReport]:
        processor = job.work(None).open(config, matcher, hash_fn, progress)  # type: ignore[arg-type]
        try:
            return [await processor.run_unit(unit, (kept or {}).get(unit.id)) for unit in units]
        finally:
            await processor.aclose()

    return asyncio.run(run()), progress.parts


def _timeless(reports: list[UnitReport]) -> list[UnitReport]:
    """Reports less what differs from one run to the next: when each row was fetched."""
    for report in reports:
        for row in report.outcomes:
            row.fetched_at = None
        for record in [*(report.hashes or []), *report.side.get(".changes.jsonl", [])]:
            record.update({k: None for k in ("fetched_at", "etag", "last_modified") if k in record})
        for record in report.evidence:
            record["observed_at"] = None
    return reports


def _check_parts_change_nothing(job: Job) -> None:
    whole, none = _run_units(job, 10**9)
    parted, parts = _run_units(job, 1)
    assert none == {} and sum(len(rows) for rows in parts.values()) >= 10
    assert _timeless(parted) == _timeless(whole)
    half = {unit: dict(list(rows.items())[::2]) for unit, rows in parts.items()}
    resumed, _ = _run_units(job, 10**9, half)
    assert _timeless(resumed) == _timeless(whole)


def test_a_unit_committed_in_parts_reports_what_it_would_at_once_scan_and_rescan(server, tmp_path):
    urls = [server.url(f"/img/{i % 5}.jpg?i={i}" if i % 7 else f"/status/404?i={i}") for i in range(24)]
    shard = write_shard(tmp_path / "shard.parquet", {"url": urls, "key": [f"k{i}" for i in range(24)]})
    listed = tmp_path / "list.txt"
    listed.write_text(hash_image(IMAGES[2], frozenset({"md5"})).md5.hex() + "\n")
    settings = {
        "inputs": [str(shard)],
        "out": str(tmp_path / "first"),
        "hashlist": [f"md5:{listed}"],
        "fetch": {"allow_private_networks": True},
        "audit": {"keep_hashes": True},
        "source": {"rows_per_unit": 10},
    }
    _check_parts_change_nothing(ScanJob(build_config(settings, "test")))
    run_scan(
        shard,
        tmp_path / "first",
        [f"md5:{listed}"],
        audit={"keep_hashes": True},
        source={"rows_per_unit": 10},
    )
    overrides = {"fetch.allow_private_networks": True, "source.rows_per_unit": 10}
    _check_parts_change_nothing(RescanJob(tmp_path / "first", str(tmp_path / "second"), (), overrides))

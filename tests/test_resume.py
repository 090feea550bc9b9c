"""Crash safety: a killed scan resumes with every row exactly once; changed inputs are refused."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from images import encode, make_image
from loopback import LoopbackServer

from scanner.config import build_config
from scanner.errors import ResumeError, SourceError
from scanner.hashing import hash_image
from scanner.runners.local import scan

REPO = Path(__file__).resolve().parents[1]
ROWS = 1500
IMAGES = [encode(make_image(500 + i, (160, 120)), "JPEG") for i in range(30)]


def build_inputs(tmp: Path, server: LoopbackServer) -> tuple[Path, Path]:
    """Two shards of repeated images (distinct URLs), a few dead rows, and a list matching two images."""
    paths = []
    for shard in range(2):
        urls = []
        for i in range(ROWS // 2):
            n = shard * ROWS + i
            urls.append(
                server.url(f"/status/404?i={n}") if n % 37 == 0 else server.url(f"/img/{n % 30}.jpg?i={n}")
            )
        path = tmp / f"shard-{shard}.parquet"
        pq.write_table(
            pa.table({"key": [f"s{shard}-{i}" for i in range(len(urls))], "url": urls}),
            path,
            row_group_size=100,
        )
        paths.append(path)
    listfile = tmp / "list.txt"
    listfile.write_text("".join(hash_image(IMAGES[i], frozenset({"md5"})).md5.hex() + "\n" for i in (3, 17)))
    return tmp, listfile


def scan_command(tmp: Path, out: Path, listfile: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "scanner",
        "scan",
        str(tmp / "shard-0.parquet"),
        str(tmp / "shard-1.parquet"),
        "--hashlist",
        f"md5:{listfile}",
        "--out",
        str(out),
        "--allow-private-networks",
        "--quiet",
        "--rows-per-unit",
        "50",
        "--workers",
        "1",
    ]


def reports(out: Path) -> tuple[list[dict], list[str]]:
    table = pq.read_table(out / "outcomes.parquet").drop_columns(["fetched_at"]).to_pylist()
    return table, sorted((out / "matches.jsonl").read_text().splitlines())


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_result(tmp_path):
    files = {f"/img/{i}.jpg": body for i, body in enumerate(IMAGES)}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random(20261125)
    with LoopbackServer(files) as server:
        tmp, listfile = build_inputs(tmp_path, server)
        reference = tmp / "reference"
        done = subprocess.run(
            scan_command(tmp, reference, listfile), env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        killed = tmp / "killed"
        kills = 0
        for _attempt in range(4):
            process = subprocess.Popen(
                scan_command(tmp, killed, listfile),
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(1.5, 4.0))
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                kills += 1
            process.wait()
        assert kills >= 2, "the scan finished before it could be killed: make it bigger"
        done = subprocess.run(
            scan_command(tmp, killed, listfile), env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
    expected_outcomes, expected_matches = reports(reference)
    outcomes, matches = reports(killed)
    assert len(outcomes) == ROWS
    assert outcomes == expected_outcomes
    assert matches == expected_matches
    assert (
        json.loads((killed / "summary.json").read_text())["outcomes"]
        == json.loads((reference / "summary.json").read_text())["outcomes"]
    )


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path):
    files = {f"/img/{i}.jpg": body for i, body in enumerate(IMAGES)}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with LoopbackServer(files) as server:
        tmp, listfile = build_inputs(tmp_path, server)
        out = tmp / "out"
        process = subprocess.Popen(
            scan_command(tmp, out, listfile),
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2.5)
        os.killpg(process.pid, signal.SIGINT)
        _stdout, stderr = process.communicate(timeout=60)
        if process.returncode != 0:
            assert process.returncode == 130, stderr
            assert "resume" in stderr and "Traceback" not in stderr
        done = subprocess.run(
            scan_command(tmp, out, listfile), env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
    outcomes, _matches = reports(out)
    assert [(r["shard"].rsplit("/", 1)[1], r["row"]) for r in outcomes] == [
        (f"shard-{s}.parquet", i) for s in range(2) for i in range(ROWS // 2)
    ]


def committed_units(out: Path) -> int:
    return len(list((out / ".units").glob("u*.done.json"))) if (out / ".units").is_dir() else 0


def test_a_rerun_says_what_it_kept_what_was_complete_and_which_settings_differ(tmp_path):
    """Through the real command: SIGINT after some units, the rerun names the rows kept; a rerun of the
    finished scan says so instead of passing the old summary off as new; a changed setting is named."""
    files = {f"/img/{i}.jpg": body for i, body in enumerate(IMAGES)}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with LoopbackServer(files) as server:
        tmp, listfile = build_inputs(tmp_path, server)
        out = tmp / "out"
        command = [arg for arg in scan_command(tmp, out, listfile) if arg != "--quiet"]
        process = subprocess.Popen(
            command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while committed_units(out) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the scan finished before it could be interrupted: make it bigger"
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 130
        kept = 50 * committed_units(out)
        assert 0 < kept < ROWS
        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.splitlines()[0] == f"resumed: {kept:,} of {ROWS:,} rows already done"
        bar = [line for line in re.split(r"[\r\n]", resumed.stderr) if "row" in line]
        assert f"{kept}/{ROWS}" in bar[0] and f"units {ROWS // 50}/{ROWS // 50}" in bar[-1], resumed.stderr
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        first = again.stdout.splitlines()[0]
        assert first.startswith(f"already complete: {out} ") and "--restart" in first, again.stdout
        assert "resumed" not in again.stdout and f"scanned {ROWS} rows" in again.stdout
        changed = subprocess.run(
            [*command, "--timeout", "20"], env=env, capture_output=True, text=True, timeout=300
        )
    assert changed.returncode == 1 and changed.stdout == ""
    assert len(changed.stderr.splitlines()) == 1, changed.stderr
    assert "settings (fetch.total_timeout: 30.0 -> 20.0)" in changed.stderr, changed.stderr


def test_a_checkpoint_without_settings_by_name_resumes_and_is_refused_as_before(tmp_path):
    """Fingerprints written before they kept the settings by name: the same run still resumes (their
    hash decides), and a changed setting gets the message of old."""
    shard = tmp_path / "s.txt"
    shard.write_text("file:///x\n")
    listfile = tmp_path / "l.txt"
    listfile.write_text("0" * 32 + "\n")
    first = scan(small_config(tmp_path, shard, listfile))
    path = tmp_path / "out" / ".units" / "fingerprint.json"
    old = json.loads(path.read_text())
    assert old.pop("settings_shown")["match.pdq_threshold"] == 31
    path.write_text(json.dumps(old))
    again = scan(small_config(tmp_path, shard, listfile))
    assert again.earlier and again.summary == first.summary
    with pytest.raises(ResumeError, match=r"different settings; use a new --out"):
        scan(small_config(tmp_path, shard, listfile, pdq_threshold=20))


def small_config(tmp: Path, shard: Path, listfile: Path, **match: object) -> object:
    return build_config(
        {
            "inputs": [str(shard)],
            "out": str(tmp / "out"),
            "hashlist": [f"md5:{listfile}"],
            "match": match,
            "run": {"workers": 1},
        },
        "test",
    )


def test_changed_inputs_or_lists_are_refused_unless_restart(tmp_path):
    shard = tmp_path / "s.txt"
    shard.write_text("file:///x\n")
    listfile = tmp_path / "l.txt"
    listfile.write_text("0" * 32 + "\n")
    first = scan(small_config(tmp_path, shard, listfile))
    assert first.summary["outcomes"]["blocked"] == 1
    again = scan(small_config(tmp_path, shard, listfile))
    assert again.summary == first.summary, "a completed scan is not run twice"
    assert again.earlier and not first.earlier
    listfile.write_text("1" * 32 + "\n")
    with pytest.raises(ResumeError, match="lists"):
        scan(small_config(tmp_path, shard, listfile))
    shard.write_text("file:///x\nfile:///y\n")
    with pytest.raises(ResumeError, match="inputs"):
        scan(small_config(tmp_path, shard, listfile))
    with pytest.raises(ResumeError, match=r"settings \(match.pdq_threshold: 31 -> 20\)"):
        scan(small_config(tmp_path, shard, listfile, pdq_threshold=20))
    redone = scan(small_config(tmp_path, shard, listfile), restart=True)
    assert redone.summary["rows"] == 2


def corrupt_first_row_group(path: Path) -> None:
    """Overwrite the first row group's page header with garbage; the footer stays readable."""
    offset = pq.ParquetFile(path).metadata.row_group(0).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset + 40 : offset + 400] = b"\xab" * 360
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_corrupt_row_group_found_mid_scan(tmp_path, policy):
    shard = tmp_path / "c.parquet"
    urls = [f"file:///row/{i}/" + "x" * 40 for i in range(2000)]
    pq.write_table(pa.table({"url": urls}), shard, row_group_size=1000)
    corrupt_first_row_group(shard)
    listfile = tmp_path / "l.txt"
    listfile.write_text("0" * 32 + "\n")
    config = build_config(
        {
            "inputs": [str(shard)],
            "out": str(tmp_path / "out"),
            "hashlist": [f"md5:{listfile}"],
            "source": {"rows_per_unit": 1000},
            "run": {"workers": 1, "on_bad_shard": policy},
        },
        "t",
    )
    if policy == "fail":
        with pytest.raises(SourceError, match=r"c.parquet: corrupt data near row 0"):
            scan(config)
        return
    result = scan(config)
    outcomes = pq.read_table(tmp_path / "out" / "outcomes.parquet").to_pylist()
    assert [r["row"] for r in outcomes] == list(range(2000))
    assert {(r["outcome"], r["reason"]) for r in outcomes[:1000]} == {("invalid", "unreadable_shard")}
    assert {r["outcome"] for r in outcomes[1000:]} == {"blocked"}
    assert result.summary["unreadable_rows_by_shard"] == {str(shard): 1000}


def test_a_checkpoint_that_kept_nothing_takes_the_new_fingerprint(tmp_path):
    """A run that stopped before it committed anything (a bad image list found while rows were fetched)
    must not block the rerun with the lists fixed; one that kept a unit or a part still refuses."""
    from scanner.reports.records import RowResult, UnitReport
    from scanner.run.checkpoint import Checkpoint

    out = tmp_path / "out"
    Checkpoint(out, {"lists": ["old"]})
    Checkpoint(out, {"lists": ["new"]})  # nothing kept: adopted
    row = RowResult("s", 0, "http://a/", None, "dead", reason="dns_failure")
    Checkpoint(out, {"lists": ["new"]}).commit_part(0, [(0, UnitReport(0, [row]))])
    with pytest.raises(ResumeError, match="different lists"):
        Checkpoint(out, {"lists": ["newer"]})


def test_a_fingerprint_left_to_settle_is_written_before_the_first_commit_or_never(tmp_path):
    """A fresh run whose lists take their digests as they load: its fingerprint is written before the first
    thing it guards; a load that fails writes nothing, and the rerun starts afresh."""
    from scanner.errors import HashListError
    from scanner.reports.records import RowResult, UnitReport
    from scanner.run.checkpoint import Checkpoint

    out = tmp_path / "out"
    path = out / ".units" / "fingerprint.json"
    row = RowResult("s", 0, "http://a/", None, "dead", reason="dns_failure")

    def broken() -> dict:
        raise HashListError("l.txt", "bad line", 7)

    failing = Checkpoint(out, {"lists": [["l", None]]}, settle=broken)
    with pytest.raises(HashListError, match="bad line"):
        failing.commit_part(0, [(0, UnitReport(0, [row]))])
    assert not path.exists() and not list((out / ".units").glob("p*"))
    settled = Checkpoint(out, {"lists": [["l", None]]}, settle=lambda: {"lists": [["l", "abc"]]})
    assert not path.exists()
    settled.commit_part(0, [(0, UnitReport(0, [row]))])
    assert json.loads(path.read_text()) == {"lists": [["l", "abc"]]}
    with pytest.raises(ResumeError, match="different lists"):
        Checkpoint(out, {"lists": [["l", None]]}, settle=lambda: {"lists": [["l", "other"]]})

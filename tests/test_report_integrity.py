"""Report-directory integrity (issue 14 items 7, 8, 11): one command at a time in a report directory, damaged
checkpoints refused by name, reports checked for their own consistency, no symlink followed inside --out."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from audit_support import images, run_scan, write_list, write_shard
from conftest import REPO
from loopback import LoopbackServer

from scanner.run.checkpoint import DONE_SUFFIX, UNITS_DIR

SLOW_ROWS = 6
LOCKED = "in use by another scanner process (pid {pid}"


def scanner_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "scanner", *args]


def scanner_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        scanner_command(*args), env=scanner_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The single line a refused command prints: exit 1, no traceback."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scanner: error: "), done.stderr
    return lines[0]


@pytest.fixture
def slow_server() -> Iterator[LoopbackServer]:
    with LoopbackServer({}) as server:
        yield server


def slow_scan_args(tmp_path: Path, server: LoopbackServer, seconds: float) -> list[str]:
    """A scan of SLOW_ROWS distinct URLs, each answered after `seconds`, one at a time, a unit per row."""
    urls = [server.url(f"/slow?seconds={seconds}&n={i}") for i in range(SLOW_ROWS)]
    shard = write_list(tmp_path / "slow.txt", urls)
    listed = write_list(tmp_path / "md5.txt", ["0" * 32])
    return [
        "scan",
        str(shard),
        "--hashlist",
        f"md5:{listed}",
        "--out",
        str(tmp_path / "out"),
        "--allow-private-networks",
        "--max-in-flight",
        "1",
        "--rows-per-unit",
        "1",
        "--workers",
        "1",
        "--quiet",
    ]


def requests_per_url(server: LoopbackServer) -> Counter:
    return Counter(path for method, path, _ in server.requests() if path.startswith("/slow"))


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_second_scan_into_a_locked_out_stops_at_once_naming_the_first(tmp_path, slow_server):
    args = slow_scan_args(tmp_path, slow_server, 0.5)
    first = subprocess.Popen(
        scanner_command(*args), env=scanner_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: slow_server.total_hits > 0)
        started = time.monotonic()
        second = run_cli(*args)
        refused_after = time.monotonic() - started
        line = one_error_line(second)
        assert LOCKED.format(pid=first.pid) in line and str(tmp_path / "out") in line, line
        assert "scan" in line  # the other process's command line
        seen = slow_server.total_hits
        assert first.wait(timeout=120) == 0, first.stderr.read() if first.stderr else ""
    finally:
        first.kill()
        first.wait()
    assert refused_after < 30 and seen < SLOW_ROWS, (refused_after, seen)
    assert requests_per_url(slow_server) == Counter(
        {f"/slow?seconds=0.5&n={i}": 1 for i in range(SLOW_ROWS)}
    ), "the refused scan must not have requested anything"
    table = pq.read_table(tmp_path / "out" / "outcomes.parquet")
    assert table.column("row").to_pylist() == list(range(SLOW_ROWS))
    assert not (tmp_path / "out" / ".scanner.lock").exists(), "the lock file goes with its holder"
    assert run_cli("verify", str(tmp_path / "out")).returncode == 0


def test_a_killed_scan_leaves_no_lock_and_the_next_one_resumes(tmp_path, slow_server):
    args = slow_scan_args(tmp_path, slow_server, 0.3)
    first = subprocess.Popen(scanner_command(*args), env=scanner_env(), stdout=subprocess.DEVNULL)
    units = tmp_path / "out" / UNITS_DIR
    try:  # killed once a unit has committed, whenever its hashing processes came up
        wait_for(lambda: slow_server.total_hits >= 3 and any(units.glob(f"*{DONE_SUFFIX}")))
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
    committed = len(list(units.glob(f"*{DONE_SUFFIX}")))
    assert committed < SLOW_ROWS, "every unit committed before the kill: nothing was left to resume"
    fetched_before = requests_per_url(slow_server)
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    table = pq.read_table(tmp_path / "out" / "outcomes.parquet")
    assert table.column("row").to_pylist() == list(range(SLOW_ROWS))
    after = requests_per_url(slow_server)
    assert set(after) == {f"/slow?seconds=0.3&n={i}" for i in range(SLOW_ROWS)}
    assert sum(after.values()) - sum(fetched_before.values()) < SLOW_ROWS, "committed units are not redone"


HOLD = """
import sys, time
from scanner.run.reportlock import report_lock
with report_lock(sys.argv[1], "scan"):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture(scope="module")
def finished_scan(tmp_path_factory) -> Iterator[Path]:
    """A finished scan with hash records (3 images, one of them listed by MD5), for rematch, rescan, clean."""
    tmp = tmp_path_factory.mktemp("finished")
    bodies = images(3)
    with LoopbackServer({f"/{i}.jpg": body for i, body in enumerate(bodies)}) as server:
        shard = write_shard(tmp / "shard.parquet", {"url": [server.url(f"/{i}.jpg") for i in range(3)]})
        listed = write_list(tmp / "md5.txt", [hashlib.md5(bodies[1]).hexdigest()])
        run_scan(shard, tmp / "scan", [f"md5:{listed}"], audit={"keep_hashes": True})
        yield tmp


@pytest.mark.parametrize("command", ["scan", "rematch", "rescan", "clean"])
def test_every_writing_command_is_refused_while_another_holds_out(tmp_path, finished_scan, command):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], env=scanner_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        args = _command_args(command, finished_scan, out)
        line = one_error_line(run_cli(*args))
        assert LOCKED.format(pid=holder.pid) in line, line
        assert sorted(p.name for p in out.iterdir()) == [".scanner.lock"], "nothing was written"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        done = run_cli(*args)  # the kernel released the dead holder's lock: a stale lock file stops nothing
        assert done.returncode == 0, done.stderr
        assert not (out / ".scanner.lock").exists()
    finally:
        holder.kill()
        holder.wait()


def _report_writer_args(command: str, out: Path, key: Path) -> list[str]:
    """A command that writes into a finished report directory (not a scan's --out)."""
    if command == "report":
        return ["report", str(out)]
    if command == "export":
        return ["export", str(out), "--format", "jsonl"]  # DIR/referrals.jsonl
    return ["sign", str(out), "--key", str(key)]


def _written_state(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.iterdir() if p.is_file()}


@pytest.mark.parametrize("command", ["report", "export", "sign"])
def test_report_export_and_sign_are_refused_while_another_holds_the_directory(
    tmp_path, finished_scan, command
):
    """report (report.html, manifest.json), export into DIR (referrals) and sign (manifest.json.sig) write
    into a report directory: a second writer holding it stops them at once, naming its pid, with nothing
    written; once it is gone they run and leave no lock behind. An export written elsewhere only reads: it is
    never refused."""
    from scanner.reports.signing import generate_keypair

    out = tmp_path / "scan"
    shutil.copytree(finished_scan / "scan", out)
    key = generate_keypair(tmp_path / "key")[0]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], env=scanner_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        before = _written_state(out)
        args = _report_writer_args(command, out, key)
        line = one_error_line(run_cli(*args))
        assert LOCKED.format(pid=holder.pid) in line and str(out) in line, line
        assert _written_state(out) == before, "nothing was written"
        if command == "export":
            elsewhere = run_cli("export", str(out), "--output", str(tmp_path / "referrals.csv"))
            assert elsewhere.returncode == 0, elsewhere.stderr
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr
        assert not (out / ".scanner.lock").exists()
        assert _written_state(out) != before
    finally:
        holder.kill()
        holder.wait()


def test_a_running_scan_refuses_report_export_and_sign_in_its_directory(tmp_path, slow_server):
    """While a scan writes its --out, report, export and sign into it each stop at once naming the scan."""
    from scanner.reports.signing import generate_keypair

    key = generate_keypair(tmp_path / "key")[0]
    args = slow_scan_args(tmp_path, slow_server, 2)  # 12 s: longer than the three refusals take
    scan = subprocess.Popen(
        scanner_command(*args), env=scanner_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: slow_server.total_hits > 0)
        for command in ("report", "export", "sign"):
            line = one_error_line(run_cli(*_report_writer_args(command, tmp_path / "out", key)))
            assert LOCKED.format(pid=scan.pid) in line and "scan" in line, (command, line)
        assert scan.poll() is None, "the scan was still running when they were refused"
        assert scan.wait(timeout=120) == 0, scan.stderr.read() if scan.stderr else ""
    finally:
        scan.kill()
        scan.wait()
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert "referrals.jsonl" not in written and "manifest.json.sig" not in written, written


def _command_args(command: str, finished: Path, out: Path) -> list[str]:
    listed = str(finished / "md5.txt")
    if command == "scan":
        return ["scan", str(finished / "shard.parquet"), "--hashlist", f"md5:{listed}", "--out", str(out),
                "--allow-private-networks", "--workers", "1", "--quiet"]  # fmt: skip
    if command == "rematch":
        return [
            "rematch",
            str(finished / "scan"),
            "--hashlist",
            f"md5:{listed}",
            "--out",
            str(out),
            "--quiet",
        ]
    if command == "rescan":
        return [
            "rescan",
            str(finished / "scan"),
            "--out",
            str(out),
            "--workers",
            "1",
            "--quiet",
            "--allow-private-networks",
        ]
    return ["clean", str(finished / "shard.parquet"), "--report", str(finished / "scan"), "--out", str(out)]


# Item 8: damaged checkpoints. One scan is killed once its first units are committed; each case damages a
# copy of its report directory and resumes it with the real CLI.


@pytest.fixture(scope="module")
def killed_scan(tmp_path_factory) -> Iterator[tuple[Path, list[str], list[int]]]:
    """(report directory of a killed scan, its command's arguments, ids of units it committed)."""
    tmp = tmp_path_factory.mktemp("killed")
    with LoopbackServer({}) as server:
        args = slow_scan_args(tmp, server, 0.3)
        units = tmp / "out" / ".units"
        scan = subprocess.Popen(scanner_command(*args), env=scanner_env(), stdout=subprocess.DEVNULL)
        try:
            wait_for(lambda: len(list(units.glob("u*.outcomes.parquet"))) >= 3)
        finally:
            scan.send_signal(signal.SIGKILL)
            scan.wait()
        markers = {int(p.name[1:7]) for p in units.glob("u*.done.json")}
        committed = sorted(
            int(p.name[1:7])
            for p in units.glob("u*.outcomes.parquet")
            if not markers or int(p.name[1:7]) in markers
        )
        assert len(committed) >= 2
        yield tmp / "out", args, committed


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x40
    path.write_bytes(bytes(data))


def truncate(path: Path, fraction: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * fraction)])


def swap(a: Path, b: Path) -> None:
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


def unit_file(units: Path, unit: int, suffix: str) -> Path:
    return units / f"u{unit:06d}{suffix}"


def outcomes_of(units: Path, unit: int) -> Path:
    return unit_file(units, unit, ".outcomes.parquet")


def _copy_marker(units: Path, a: int, b: int) -> None:
    unit_file(units, a, ".done.json").write_bytes(unit_file(units, b, ".done.json").read_bytes())


# case: (damage(units, a, b), the units whose files the message may name)
DAMAGE = {
    "truncated outcomes": (lambda u, a, b: truncate(outcomes_of(u, a)), "a"),
    "outcomes bit flip in the footer": (lambda u, a, b: flip(outcomes_of(u, a), -12), "a"),
    "outcomes bit flip in the magic": (lambda u, a, b: flip(outcomes_of(u, a), 1), "a"),
    "outcomes bit flip in the data": (lambda u, a, b: flip(outcomes_of(u, a), 40), "a"),
    "outcomes bit flip mid-file": (
        lambda u, a, b: flip(outcomes_of(u, a), outcomes_of(u, a).stat().st_size // 2),
        "a",
    ),
    "empty outcomes": (lambda u, a, b: outcomes_of(u, a).write_bytes(b""), "a"),
    "two outcomes files swapped": (lambda u, a, b: swap(outcomes_of(u, a), outcomes_of(u, b)), "ab"),
    "matches file deleted": (lambda u, a, b: unit_file(u, a, ".matches.jsonl").unlink(), "a"),
    "matches not UTF-8": (lambda u, a, b: unit_file(u, a, ".matches.jsonl").write_bytes(b"\xff{\n"), "a"),
    "garbage done marker": (lambda u, a, b: unit_file(u, a, ".done.json").write_bytes(b"{\x00garbage"), "a"),
    "another unit's done marker": (_copy_marker, "a"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_unit_stops_the_resume_naming_it(tmp_path, killed_scan, case):
    original, args, (a, b, *_) = killed_scan
    out = tmp_path / "out"
    shutil.copytree(original, out)
    damage, which = DAMAGE[case]
    damage(out / ".units", a, b)
    args = [*args[: args.index("--out") + 1], str(out), *args[args.index("--out") + 2 :]]
    line = one_error_line(run_cli(*args))
    named = [f"u{unit:06d}." for unit in (a, b)[: len(which)]]
    assert str(out / ".units") in line and any(name in line for name in named), line
    assert f"delete {out / '.units'}/u" in line and "--restart" in line, line


@pytest.mark.parametrize("damage", [truncate, Path.unlink])
def test_a_damaged_fingerprint_stops_the_resume_naming_it(tmp_path, killed_scan, damage):
    original, args, _ = killed_scan
    out = tmp_path / "out"
    shutil.copytree(original, out)
    damage(out / ".units" / "fingerprint.json")
    args = [*args[: args.index("--out") + 1], str(out), *args[args.index("--out") + 2 :]]
    line = one_error_line(run_cli(*args))
    assert str(out / ".units" / "fingerprint.json") in line and "--restart" in line, line


def test_units_are_checked_again_as_they_are_merged(tmp_path):
    """A unit damaged after the run started (between commit and merge) is caught by the merge."""
    from scanner.errors import CheckpointError
    from scanner.reports.records import RowResult, UnitReport
    from scanner.reports.writer import merge_reports
    from scanner.run.checkpoint import Checkpoint

    checkpoint = Checkpoint(tmp_path / "out", {"test": True})
    for unit in (0, 1):
        outcomes = [
            RowResult("a.txt", 10 * unit + r, f"http://a.example/{r}", None, "dead") for r in range(10)
        ]
        checkpoint.commit(UnitReport(unit, outcomes))
    flip(checkpoint.dir / "u000001.outcomes.parquet", -12)
    with pytest.raises(
        CheckpointError, match=r"u000001\.outcomes\.parquet is not the file its unit committed"
    ):
        merge_reports(tmp_path / "out", checkpoint, [0, 1])
    with pytest.raises(CheckpointError, match="unit 2 was never committed"):
        merge_reports(tmp_path / "out", checkpoint, [0, 2])


# Item 8: verify checks the reports against each other. Each case edits a finished report and records the
# edited files' new digests in the manifest, so only the consistency checks can catch it.


def edit_outcomes(out: Path, change) -> None:
    table = pq.read_table(out / "outcomes.parquet")
    pq.write_table(
        pa.Table.from_pylist(change(table.to_pylist()), schema=table.schema), out / "outcomes.parquet"
    )


def redigest(out: Path, *names: str) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    for name in names:
        manifest["files"][name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))


def _duplicate_row(rows: list[dict]) -> list[dict]:
    rows[2]["row"] = rows[0]["row"]  # row 0 twice, row 2 gone: the outcome counts do not change
    return rows


def _swap_match_outcome(rows: list[dict]) -> list[dict]:
    rows[0]["outcome"], rows[1]["outcome"] = rows[1]["outcome"], rows[0]["outcome"]  # counts unchanged
    return rows


def _change_summary(out: Path) -> None:
    summary = json.loads((out / "summary.json").read_text())
    summary["outcomes"]["clean"] += 1
    summary["rows"] += 1
    (out / "summary.json").write_text(json.dumps(summary))


def _rows_as_text(out: Path) -> None:
    table = pq.read_table(out / "outcomes.parquet")
    rows = table.column("row").cast(pa.string())
    pq.write_table(
        table.set_column(table.schema.get_field_index("row"), "row", rows), out / "outcomes.parquet"
    )


VERIFY_CASES = {
    "row numbers as text": (_rows_as_text, "outcomes.parquet", "no row column of the outcome schema's type"),
    "a row twice": (lambda out: edit_outcomes(out, _duplicate_row), "outcomes.parquet", "row 0"),
    "a match's outcome changed": (
        lambda out: edit_outcomes(out, _swap_match_outcome),
        "outcomes.parquet",
        "whose outcome in outcomes.parquet is not match",
    ),
    "summary counts changed": (_change_summary, "summary.json", "outcomes.clean is"),
    "a match record moved to another row": (
        lambda out: (out / "matches.jsonl").write_text(
            (out / "matches.jsonl").read_text().replace('"row":1', '"row":2')
        ),
        "matches.jsonl",
        "no record in matches.jsonl",
    ),
}


@pytest.mark.parametrize("case", sorted(VERIFY_CASES))
def test_verify_finds_reports_that_disagree(tmp_path, finished_scan, case):
    out = tmp_path / "scan"
    shutil.copytree(finished_scan / "scan", out)
    assert run_cli("verify", str(out)).returncode == 0
    assert pq.read_table(out / "outcomes.parquet").column("outcome").to_pylist() == [
        "clean",
        "match",
        "clean",
    ]
    edit, name, expected = VERIFY_CASES[case]
    edit(out)
    redigest(out, name)
    done = run_cli("verify", str(out))
    assert done.returncode == 1 and "Traceback" not in done.stderr, (done.stdout, done.stderr)
    assert done.stdout.startswith("FAILED") and expected in done.stdout, done.stdout
    assert "changed:" not in done.stdout, "the digests were updated: only consistency can catch this"


MALFORMED_MATCH_LINES = {
    "not UTF-8": (b'{"shard": "\xff"}\n', "not valid UTF-8 (invalid start byte at byte 11)"),
    "nested too deeply": (b"[" * 200_000 + b"]" * 200_000 + b"\n", "not JSON (nested too deeply)"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_MATCH_LINES))
def test_verify_names_a_malformed_matches_line_as_every_report_reader_does(tmp_path, finished_scan, case):
    """verify's consistency check reads matches.jsonl with the reports' one reader (jsonl.read_lines), as
    export does: a damaged line is a problem naming its number and what is wrong, in the same words, and a
    line nested too deep for the JSON parser is one too, never an internal error."""
    out = tmp_path / "scan"
    shutil.copytree(finished_scan / "scan", out)
    line, reason = MALFORMED_MATCH_LINES[case]
    with open(out / "matches.jsonl", "ab") as handle:
        handle.write(line)
    number = (out / "matches.jsonl").read_bytes().count(b"\n")
    redigest(out, "matches.jsonl")
    done = run_cli("verify", str(out))
    assert done.returncode == 1 and "Traceback" not in done.stderr, (done.stdout, done.stderr)
    assert f"matches.jsonl: line {number}: {reason}" in done.stdout, done.stdout
    exported = one_error_line(run_cli("export", str(out), "--output", str(tmp_path / "referrals.csv")))
    assert exported.endswith(f"matches.jsonl:{number}: {reason}"), exported


# Item 11: a symbolic link inside --out is never followed.


@pytest.mark.parametrize("command", ["scan", "rematch"])
def test_a_units_symlink_is_refused_and_its_target_left_alone(tmp_path, finished_scan, command):
    target = tmp_path / "elsewhere"
    target.mkdir()
    target.chmod(0o755)
    (target / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".units").symlink_to(target)
    line = one_error_line(run_cli(*_command_args(command, finished_scan, out)))
    assert str(out / ".units") in line and "symbolic link" in line, line
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    line = one_error_line(run_cli(*_command_args(command, finished_scan, out), "--restart"))
    assert str(out / ".units") in line and "symbolic link" in line, line
    assert stat.S_IMODE(target.stat().st_mode) == 0o755 and (target / "keep.txt").read_text() == "mine"


def test_a_lock_file_symlink_is_refused_and_its_target_left_alone(tmp_path, finished_scan):
    target = tmp_path / "elsewhere.txt"
    target.write_text("mine")
    target.chmod(0o644)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".scanner.lock").symlink_to(target)
    line = one_error_line(run_cli(*_command_args("rematch", finished_scan, out)))
    assert str(out / ".scanner.lock") in line, line  # the write guard, or the lock itself, refuses the link
    assert target.read_text() == "mine" and stat.S_IMODE(target.stat().st_mode) == 0o644

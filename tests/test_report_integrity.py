"""Report-directory integrity (issue 14 items 7, 8, 11): one command at a time in a report directory, damaged
checkpoints refused by name, reports checked for their own consistency, no symlink followed inside --out."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from audit_support import images, run_scan, write_list, write_shard
from conftest import REPO
from loopback import LoopbackServer

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
    try:
        wait_for(lambda: slow_server.total_hits >= 3)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
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
from scanner.reportlock import report_lock
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
        return ["rescan", str(finished / "scan"), "--out", str(out), "--workers", "1", "--quiet"]
    return ["clean", str(finished / "shard.parquet"), "--report", str(finished / "scan"), "--out", str(out)]

"""Hashing processes forked from a warm template (runners/hashfork.py): real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scanner.runners import hashfork

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not hashfork.forking(), reason="no forkserver with a pidfd here")

OWNER = """
import json, os, sys, time
from scanner import nostore
from scanner.runners import hashfork, hashpool


def probe():
    import sys
    kernels = sys.modules.get("scanner.hashing._pdq_kernels")
    return {"pid": os.getpid(), "ppid": os.getppid(),
            "warm": kernels is not None and bool(kernels.luma_from_rgb.signatures)}


def main():
    hashfork.start_template()
    nostore.install(())  # as in a unit worker: the pools start after the write guard
    with hashpool.hashing_workers(1) as first, hashpool.hashing_workers(1) as second:
        seen = [pool.executor.submit(probe).result(120) for pool in (first, second)]
        print(json.dumps({"owner": os.getpid(), "workers": seen}), flush=True)
        if sys.argv[1] == "wait":
            time.sleep(120)
        if sys.argv[1] == "busy":  # a job stuck in C code that holds the GIL, as a decoder or plug-in may be
            first.executor.submit(backtrack)
            time.sleep(120)


def backtrack():
    import re
    print(json.dumps({"busy": os.getpid()}), flush=True)
    re.match(r"(a+)+$", "a" * 40 + "b")


if __name__ == "__main__":
    main()
"""


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _owner(tmp_path: Path, mode: str) -> subprocess.Popen:
    (tmp_path / "owner.py").write_text(OWNER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    return subprocess.Popen(
        [sys.executable, "owner.py", mode], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )


def test_hashing_processes_come_warm_from_one_template_and_leave_no_socket_behind(tmp_path) -> None:
    """Both pools' processes are children of one template whose parent is the pool's owner, and PDQ's kernels
    are compiled in them before their first job; the template's socket directory is gone after the owner."""
    owner = _owner(tmp_path, "exit")
    out, _ = owner.communicate(timeout=180)
    assert owner.returncode == 0
    report = json.loads(out.splitlines()[-1])
    templates = {worker["ppid"] for worker in report["workers"]}
    assert len(templates) == 1 and templates != {report["owner"]}
    assert all(worker["warm"] for worker in report["workers"]), report
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("mode", ["wait", "busy"])
def test_a_killed_owner_takes_its_hashing_processes_and_template_with_it(tmp_path, mode) -> None:
    """kill -9 of the process that started the pools (a unit worker, as the OOM killer does): the processes
    forked from the template, which is not their owner's child, and the template are gone within 5 s, also
    while one of them runs code that holds the GIL for minutes."""
    owner = _owner(tmp_path, mode)
    try:
        report = json.loads(owner.stdout.readline())
        if mode == "busy":
            assert json.loads(owner.stdout.readline())["busy"] in [w["pid"] for w in report["workers"]]
        workers = [worker["pid"] for worker in report["workers"]]
        template = report["workers"][0]["ppid"]
        assert _parent(template) == owner.pid
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 5
        while any(map(_alive, [*workers, template])) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [pid for pid in [*workers, template] if _alive(pid)]
    finally:
        owner.kill()
        owner.wait(10)
    for pid in left:  # before reading on: they hold the owner's stdout
        os.kill(pid, signal.SIGKILL)
    owner.stdout.close()
    assert left == []

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

from scanner.runners import hashfork, hashpool

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


def _owner_env(tmp_path: Path, script: str, **modules: str) -> dict[str, str]:
    """Write an owner script (and the modules its template preloads) in tmp_path; the environment that runs
    it with the scanner and its own TMPDIR."""
    for name, text in {"owner": script, **modules}.items():
        (tmp_path / f"{name}.py").write_text(text)
    (tmp_path / "tmp").mkdir()
    return {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path / "tmp")}


def _owner(tmp_path: Path, mode: str) -> subprocess.Popen:
    env = _owner_env(tmp_path, OWNER)
    return subprocess.Popen(
        [sys.executable, "owner.py", mode], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )


def _run_owner(tmp_path: Path, script: str, *args: str, **modules: str) -> subprocess.CompletedProcess:
    env = _owner_env(tmp_path, script, **modules)
    command = [sys.executable, "owner.py", *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)


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


REFUSING = """
import errno, os
_fork = os.fork
_forked = 0


def fork():  # the first process forks, its replacement is refused, as when memory or process slots run out
    global _forked
    if _forked:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
    _forked += 1
    return _fork()


os.fork = fork
"""

RESTART = """
import asyncio, io, json, os, signal, sys
from PIL import Image
from scanner import nostore
from scanner.runners import hashfork, hashpool
from scanner.workers import HashJob


def picture(seed):
    encoded = io.BytesIO()
    Image.effect_noise((64, 48 + seed), 40).convert("RGB").save(encoded, "PNG")
    return encoded.getvalue()


async def hash_all(pool):
    hasher = hashpool.BatchingHasher(pool, HashJob(frozenset({"md5", "pdq"})), 2)
    rows = asyncio.gather(*map(hasher, map(picture, range(3))), return_exceptions=True)
    return await asyncio.wait_for(rows, 120)


def main():
    hashfork._PRELOAD.append("refusing")
    hashfork.start_template()
    nostore.install(())
    with hashpool.hashing_workers(1) as pool:
        assert not any(isinstance(r, Exception) for r in asyncio.run(hash_all(pool)))
        os.kill(pool.processes[0].pid, signal.SIGKILL)
        print(json.dumps([f"{type(r).__name__}: {r}" for r in asyncio.run(hash_all(pool))]), flush=True)


if __name__ == "__main__":
    main()
"""


def test_a_fork_refused_after_a_death_fails_the_rows_in_one_clear_line(tmp_path) -> None:
    """A hashing process dies and the template cannot fork its replacement (out of memory, at the process
    limit): multiprocessing's forkserver ends on that, the rows waiting fail with why, and the template
    prints no traceback on the scan's stderr."""
    done = _run_owner(tmp_path, RESTART, refusing=REFUSING)
    assert done.returncode == 0, done.stderr
    reason = (
        f"HashingWorkersError: hashing processes could not start ({hashfork.ENDED}): {hashpool.CANNOT_START}"
    )
    assert json.loads(done.stdout.splitlines()[-1]) == [reason] * 3
    assert "Traceback" not in done.stderr, done.stderr


SLOW_WARM = "import time\ntime.sleep(120)  # warming for minutes (a loaded machine, a cold cache)\n"

SHORT = """
import json, sys, time
from scanner import nostore
from scanner.runners import hashfork, hashpool

hashfork._PRELOAD.append("slow_warm")
hashfork.start_template()
nostore.install(())
started = time.monotonic()
with hashpool.hashing_pools(2) as pools:  # its units end before the template is warm
    time.sleep(float(sys.argv[1]))
    waiting = [pool.ready for pool in pools]
print(json.dumps({"ready": waiting, "closed_in": time.monotonic() - started}), flush=True)
"""


@pytest.mark.parametrize("open_for", ["0", "0.5"])
def test_pools_closed_before_their_template_is_warm_do_not_wait_for_it(tmp_path, open_for) -> None:
    """A unit worker whose scan ends before its template has warmed (a few dead links) closes its pools at
    once: the template is ended, the pools waiting for it fail, and nothing is left for the coordinator to
    kill (which multiprocessing reports as leaked semaphores on the scan's stderr)."""
    done = _run_owner(tmp_path, SHORT, open_for, slow_warm=SLOW_WARM)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    report = json.loads(done.stdout)
    assert report["ready"] == [False, False]
    assert report["closed_in"] < 60, "the pools waited for the template to warm"


RELAUNCHED = """
import json, os, signal, time
from multiprocessing import forkserver
from scanner import nostore
from scanner.runners import hashfork, hashpool


def main():
    hashfork.start_template()
    first = forkserver._forkserver._forkserver_pid
    os.kill(first, signal.SIGKILL)  # the OOM killer, while it warms
    while open(f"/proc/{first}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":  # dead, not yet reaped
        time.sleep(0.01)
    nostore.install(())
    with hashpool.hashing_pools(1) as (pool,):
        deadline = time.monotonic() + 120
        while not pool.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the thread that started the pool's process has ended
        pool.executor.submit(os.getpid).result(60)
    print(json.dumps({"first": first, "then": forkserver._forkserver._forkserver_pid}), flush=True)


if __name__ == "__main__":
    main()
"""


def test_a_template_that_died_before_the_pools_opened_is_started_again_to_last(tmp_path) -> None:
    """The template dies before the first pool opens: the pool starts it again from the owner's thread, not
    from its own short-lived start thread, whose end the new template's death signal would follow (taking
    the pool's processes with it)."""
    done = _run_owner(tmp_path, RELAUNCHED)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["then"] not in (None, report["first"])

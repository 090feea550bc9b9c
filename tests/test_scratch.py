"""A scan's scratch directory (runners/scratch.py): what its unit workers' hashing templates leave there
goes with the scan, a killed worker's too; a killed scan's directory goes with the next scan; a live scan's
stays."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from scanner.config import build_config
from scanner.runners import hashfork, scratch
from scanner.runners.procs import UnitWorkers

REPO = Path(__file__).resolve().parents[1]


def _killed_scan_scratch(base: Path) -> Path:
    """The scratch directory of a process that made one and was killed."""
    code = (
        "import os, signal, sys\n"
        "from scanner.runners.scratch import Scratch\n"
        "print(Scratch(sys.argv[1]).path, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code, str(base)], env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    path = Path(done.stdout.strip())
    assert path.parent == base and path.is_dir()
    return path


def _socket_at(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))


def test_a_killed_scans_directory_goes_with_the_next_scan_and_a_live_ones_stays(tmp_path: Path) -> None:
    stale = _killed_scan_scratch(tmp_path)
    (stale / "pymp-abc").mkdir()
    _socket_at(stale / "pymp-abc" / "listener")
    other = tmp_path / "not-ours"
    other.mkdir()
    (tmp_path / f"{scratch.PREFIX}linkabcd").symlink_to(other)
    notes = tmp_path / f"{scratch.PREFIX}notes123"  # a scratch's name, the user's own file in it
    notes.mkdir(mode=0o700)
    (notes / "todo.txt").write_text("keep me")
    live = scratch.Scratch(str(tmp_path))
    try:
        assert not stale.exists()
        assert oct(os.stat(live.path).st_mode & 0o777) == "0o700"
        assert scratch.sweep(str(tmp_path)) == []  # held by this live scan
        assert Path(live.path).is_dir()
        assert other.is_dir() and (tmp_path / f"{scratch.PREFIX}linkabcd").is_symlink()
        assert (notes / "todo.txt").read_text() == "keep me"
    finally:
        live.close()
    assert not Path(live.path).exists()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([f"{scratch.PREFIX}linkabcd", f"{scratch.PREFIX}notes123", "not-ours"])


def test_no_scratch_where_no_temporary_directory_is_writable_or_a_socket_would_not_fit(
    tmp_path: Path,
) -> None:
    assert scratch.open_scratch(None) is None
    assert scratch.open_scratch(str(tmp_path / "missing")) is None
    short = Path(tempfile.mkdtemp(prefix="s", dir="/tmp"))
    try:
        # the longest socket path under a scratch: base/scanner-XXXXXXXX/pymp-XXXXXXXX/listener-XXXXXXXX
        room = scratch.SOCKET_PATH_MAX - len(f"{short}//scanner-12345678/pymp-12345678/listener-12345678")
        longest, too_long = short / ("d" * room), short / ("d" * (room + 1))
        longest.mkdir()
        too_long.mkdir()
        assert scratch.open_scratch(str(too_long)) is None
        assert list(too_long.iterdir()) == []
        fits = scratch.open_scratch(str(longest))
        assert fits is not None
        socket_path = Path(fits.path) / "pymp-12345678" / "listener-12345678"
        socket_path.parent.mkdir()
        _socket_at(socket_path)  # binds: the path fits
        fits.close()
    finally:
        shutil.rmtree(short)


def _template_socket_dirs(base: Path) -> list[Path]:
    return sorted(base.glob(f"{scratch.PREFIX}*/pymp-*"))


@pytest.mark.skipif(not hashfork.forking(), reason="hashing processes are spawned here: no template socket")
def test_a_killed_unit_workers_template_socket_goes_when_the_pool_ends(monkeypatch) -> None:
    tmp_path = Path(tempfile.mkdtemp(prefix="scratch-test-", dir="/tmp"))  # short: the sockets' paths fit
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    config = build_config({"run": {"workers": 2}}, "test")
    with UnitWorkers(config, [1, 1]) as pool:
        deadline = time.monotonic() + 30
        while len(_template_socket_dirs(tmp_path)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_template_socket_dirs(tmp_path)) == 2  # one template per unit worker, in the scratch
        os.kill(pool.workers[0].process.pid, signal.SIGKILL)
        pool.workers[0].process.join(10)
        assert len(_template_socket_dirs(tmp_path)) == 2  # what the killed one could not remove
    assert list(tmp_path.iterdir()) == []
    tmp_path.rmdir()

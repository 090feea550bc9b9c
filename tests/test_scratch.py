"""A scan's scratch directory (runners/scratch.py): what its unit workers' hashing templates leave there
goes with the scan, a killed worker's too; a killed scan's directory goes with the next scan; a live scan's
stays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


def test_a_killed_scans_directory_goes_with_the_next_scan_and_a_live_ones_stays(tmp_path: Path) -> None:
    stale = _killed_scan_scratch(tmp_path)
    (stale / "pymp-abc").mkdir()
    (stale / "pymp-abc" / "listener").write_bytes(b"")
    other = tmp_path / "not-ours"
    other.mkdir()
    (tmp_path / f"{scratch.PREFIX}link").symlink_to(other)
    live = scratch.Scratch(str(tmp_path))
    try:
        assert not stale.exists()
        assert oct(os.stat(live.path).st_mode & 0o777) == "0o700"
        assert scratch.sweep(str(tmp_path)) == []  # held by this live scan
        assert Path(live.path).is_dir()
        assert other.is_dir() and (tmp_path / f"{scratch.PREFIX}link").is_symlink()
    finally:
        live.close()
    assert not Path(live.path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{scratch.PREFIX}link", "not-ours"])


def test_no_scratch_where_no_temporary_directory_is_writable(tmp_path: Path) -> None:
    assert scratch.open_scratch(None) is None
    assert scratch.open_scratch(str(tmp_path / "missing")) is None


def _template_socket_dirs(base: Path) -> list[Path]:
    return sorted(base.glob(f"{scratch.PREFIX}*/pymp-*"))


@pytest.mark.skipif(not hashfork.forking(), reason="hashing processes are spawned here: no template socket")
def test_a_killed_unit_workers_template_socket_goes_when_the_pool_ends(tmp_path: Path, monkeypatch) -> None:
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

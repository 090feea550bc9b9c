"""Every scan process is hardened (issue 14, items 1, 2 and 5), shown on real processes and real signals:
no core dump even under an unlimited core limit, not dumpable, no worker or resource tracker outliving a
killed scan, and a decode that stalls costs its row (invalid, decode_timeout), never the scan."""

from __future__ import annotations

import csv
import ctypes
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from images import encode, make_image
from loopback import LoopbackServer
from stalling_jpeg import stalling_jpeg

REPO = Path(__file__).resolve().parents[1]
LINUX = sys.platform.startswith("linux")
IMAGES = {f"/img/{i}.jpg": encode(make_image(900 + i, (120, 90)), "JPEG") for i in range(4)}
WORKER = "multiprocessing.spawn"
TEMPLATE = "multiprocessing.forkserver"  # hashing processes are forked from it (runners/hashfork.py)
TRACKER = "multiprocessing.resource_tracker"

# unlimited_core: conftest.py runs these first, before an in-process scan lowers this process's core limit.
pytestmark = [
    pytest.mark.skipif(not LINUX, reason="reads /proc and uses prctl: Linux only"),
    pytest.mark.unlimited_core,
]
CAP_SYS_RESOURCE = 24


# --- processes, as /proc shows them -------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = text.rpartition(")")[2].split()[:2]
    return state, int(ppid)


def _alive(pid: int) -> bool:
    """Running: a zombie (dead, waiting for a parent that may never reap it) holds no memory."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _descendants(pid: int) -> list[int]:
    """Every live process below pid."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None and stat[0] not in ("Z", "X"):
            parents[int(entry)] = stat[1]
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _core_limit(pid: int) -> list[str]:
    """The soft and hard core-file size limits in /proc/PID/limits ("0", "0" when hardened)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4:6]
    raise AssertionError(f"no core limit line for {pid}")


def _wait_for(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


def _unlimited_core() -> None:
    """preexec_fn: the child may dump a core as large as it likes, unless the scanner forbids it."""
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def _can_unlimit_core() -> bool:
    """Whether a child of this process can be given an unlimited core limit: the hard limit is unlimited
    still, or this process holds CAP_SYS_RESOURCE (being root is not enough: containers often drop it)."""
    if resource.getrlimit(resource.RLIMIT_CORE)[1] == resource.RLIM_INFINITY:
        return True
    status = Path("/proc/self/status").read_text()
    effective = int(re.search(r"^CapEff:\s*([0-9a-f]+)", status, re.MULTILINE).group(1), 16)
    return bool(effective & (1 << CAP_SYS_RESOURCE))


def _env(*paths: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *map(str, paths)])}


@contextmanager
def _scan_process(args: list[str], cwd: Path, **popen: object) -> Iterator[subprocess.Popen]:
    """`python -m scanner ARGS` as a child of this process; it and anything left below it are killed on exit,
    so a failing test leaves no orphan behind."""
    process = subprocess.Popen(
        [sys.executable, "-m", "scanner", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[arg-type]
    )
    seen: set[int] = set()
    try:
        yield process
    finally:
        seen.update(_descendants(process.pid) if process.poll() is None else ())
        seen.update(getattr(process, "seen", ()))
        for pid in seen:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        process.communicate()


def _hashing(root: int) -> list[int]:
    """The hashing processes below root: forked from a unit worker's template, or spawned by a unit worker
    where there is none."""
    found = []
    for pid in _descendants(root):
        stat, command = _stat(pid), _cmdline(pid)
        if stat is None or TRACKER in command:
            continue
        parent = _cmdline(stat[1])
        forked = TEMPLATE in parent and TEMPLATE in command
        if forked or (stat[1] != root and WORKER in parent and WORKER in command):
            found.append(pid)
    return found


def _workers_of(pid: int, count: int) -> list[int]:
    """Wait for `count` hashing workers and the resource tracker below pid; return every descendant."""
    found: list[int] = []

    def ready() -> bool:
        found[:] = _descendants(pid)
        tracker = any(TRACKER in _cmdline(p) for p in found)
        return tracker and len(_hashing(pid)) >= count

    _wait_for(ready, 60, f"{count} hashing workers and the resource tracker below {pid}")
    return found


def _url_shard(path: Path, urls: list[str]) -> Path:
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(len(urls))], "url": urls}), path)
    return path


def _list(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([("hash_type", "hash"), *rows])
    return path


def _outcomes(out: Path) -> list[tuple[str, str | None]]:
    return [(r["outcome"], r["reason"]) for r in pq.read_table(out / "outcomes.parquet").to_pylist()]


# --- item 1: no core dumps, not dumpable ------------------------------------------------------------------


def test_a_segfaulting_worker_leaves_no_core_file_and_every_scan_process_has_a_core_limit_of_0(tmp_path):
    """Under `ulimit -c unlimited` a hashing worker killed by SIGSEGV mid-scan dumps nothing (no core in the
    working directory or --out), the scan still finishes every row, and the main process, each worker and
    the resource tracker show "Max core file size 0 0"."""
    if not _can_unlimit_core():
        pytest.skip(
            "this process's hard core limit is already lowered (an in-process scan hardened it) and only root"
            " can raise it: run this file alone to see the scanner lower an unlimited one"
        )
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    listfile = _list(tmp_path / "list.csv", [("md5", hashlib.md5(IMAGES["/img/0.jpg"]).hexdigest())])
    with LoopbackServer(IMAGES) as server:
        urls = [server.url(p) for p in IMAGES] + [server.url("/slow?seconds=3")] + [server.url("/img/0.jpg")]
        shard = _url_shard(tmp_path / "shard.parquet", urls)
        args = ["scan", str(shard), "--hashlist", str(listfile), "--out", "out", "--workers", "2"]
        args += ["--allow-private-networks", "--quiet"]
        with _scan_process(args, tmp_path, preexec_fn=_unlimited_core) as scan:
            processes = _workers_of(scan.pid, 2)
            limits = {pid: _core_limit(pid) for pid in [scan.pid, *processes]}
            victim = _hashing(scan.pid)[0]
            os.kill(victim, signal.SIGSEGV)
            _, stderr = scan.communicate(timeout=120)
    assert scan.returncode == 0, stderr
    cores = [p.name for p in tmp_path.rglob("*") if p.name.startswith("core")]
    assert cores == [], f"core files written (core_pattern {pattern!r}): {cores}"
    assert limits == {pid: ["0", "0"] for pid in limits}, limits
    assert len(_outcomes(tmp_path / "out")) == len(urls)


PROBE = '''
import ctypes, json, os, resource

def probe():
    """This process's id, PR_GET_DUMPABLE (prctl option 3) and core limit, as seen from inside it."""
    libc = ctypes.CDLL(None, use_errno=True)
    return {"pid": os.getpid(), "dumpable": libc.prctl(3, 0, 0, 0, 0),
            "core": list(resource.getrlimit(resource.RLIMIT_CORE))}

def slow_probe():
    import time
    time.sleep(0.3)
    return probe()
'''

ENTRY = """
import json, sys
from probe import probe, slow_probe
from scanner.config import build_config


def workers_probed(pool):
    found = {}
    for _ in range(20):
        for future in [pool.executor.submit(slow_probe) for _ in range(4)]:
            report = future.result()
            found[report["pid"]] = report
        if len(found) == 2:
            break
    return list(found.values())


def main(mode, out, shard, listfile, previous=None):
    settings = {"inputs": [shard], "out": out, "hashlist": [listfile], "audit": {"keep_hashes": True},
                "run": {"workers": 2, "progress": False}, "fetch": {"allow_private_networks": True}}
    report = {}
    if mode == "scan":
        from scanner.runners import hashpool, local
        local.scan(build_config(settings, "test"))
        with hashpool.hashing_workers(2) as pool:  # the pool every scan and rescan starts
            report["workers"] = workers_probed(pool)
    elif mode == "rematch":
        from scanner.audits.rematch import rematch
        rematch([previous], build_config({**settings, "inputs": []}, "test"))
    else:
        from scanner.audits.rescan import rescan
        rescan(previous, out, (), {"fetch.allow_private_networks": True})
    report["main"] = probe()
    print(json.dumps(report))


if __name__ == "__main__":  # workers are spawned: they import this file
    main(*sys.argv[1:])
"""


def test_every_scan_process_is_not_dumpable_and_has_no_core_limit(tmp_path):
    """Inside the main process of a scan, a rematch and a rescan (each a fresh process that starts with an
    unlimited core limit where allowed) and inside each hashing worker: prctl(PR_GET_DUMPABLE) is 0 and the
    core limit is 0, 0."""
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "entry.py").write_text(ENTRY)
    listfile = _list(tmp_path / "list.csv", [("md5", hashlib.md5(IMAGES["/img/1.jpg"]).hexdigest())])
    preexec = _unlimited_core if _can_unlimit_core() else None
    reports = {}
    with LoopbackServer(IMAGES) as server:
        shard = _url_shard(tmp_path / "shard.parquet", [server.url(p) for p in IMAGES])
        for mode, out, previous in (("scan", "a", ()), ("rematch", "b", ("a",)), ("rescan", "c", ("a",))):
            done = subprocess.run(
                [sys.executable, "entry.py", mode, out, str(shard), str(listfile), *previous],
                cwd=tmp_path,
                env=_env(tmp_path),
                capture_output=True,
                text=True,
                timeout=180,
                preexec_fn=preexec,
            )
            assert done.returncode == 0, done.stderr
            reports[mode] = json.loads(done.stdout.splitlines()[-1])
    seen = [reports[mode]["main"] for mode in reports] + reports["scan"]["workers"]
    assert len(reports["scan"]["workers"]) == 2
    assert [(p["dumpable"], p["core"]) for p in seen] == [(0, [0, 0])] * len(seen), reports


AT_FIRST_OPEN = '''
import ctypes, json, os, resource, sys

target, argv = sys.argv[1], sys.argv[2:]
prctl = ctypes.CDLL(None, use_errno=True).prctl
seen = []


def hook(event, args):
    """At the first open of a path naming `target`: this process's PR_GET_DUMPABLE and core limit."""
    if event == "open" and not seen and isinstance(args[0], (str, bytes)) and target in os.fsdecode(args[0]):
        seen.append({"path": os.fsdecode(args[0]), "dumpable": prctl(3, 0, 0, 0, 0),
                     "core": list(resource.getrlimit(resource.RLIMIT_CORE))})


sys.addaudithook(hook)
from scanner.cli.main import main

status = main(argv)
print(json.dumps({"status": int(status), "seen": seen}))
'''


def _command_args(command: str, tmp_path: Path) -> tuple[str, list[str]]:
    """What the command first reads (a name in the path it opens), and its arguments."""
    if command == "hash":
        (tmp_path / "image.jpg").write_bytes(IMAGES["/img/2.jpg"])
        return "image.jpg", ["hash", "image.jpg"]
    if command == "demo":
        return "demo-NOT-REAL.csv", ["demo", "--out", "demo", "--images", "8", "--quiet"]
    # clean: a text shard scanned without fetching, then written again without its unchecked rows
    (tmp_path / "shard.txt").write_text("http://example.invalid/a.jpg\nhttp://example.invalid/b.jpg\n")
    _list(tmp_path / "list.csv", [("md5", "0" * 32)])
    scan = ["scan", "shard.txt", "--hashlist", "list.csv", "--out", "report", "--no-fetch", "--quiet"]
    done = subprocess.run(
        [sys.executable, "-m", "scanner", *scan], cwd=tmp_path, env=_env(), capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return "shard.txt", ["clean", "shard.txt", "--report", "report", "--out", "clean", "--drop", "unchecked"]


@pytest.mark.parametrize("command", ["hash", "clean", "demo"])
def test_every_command_that_holds_image_bytes_hardens_itself_before_reading_any(tmp_path, command):
    """scanner hash (image files), clean (scanned shards, which may carry more than URLs) and demo (the
    images it makes and serves), each a fresh process started with an unlimited core limit where allowed:
    at the moment it first opens what it reads, it is already not dumpable and its core limit is 0, 0."""
    target, argv = _command_args(command, tmp_path)
    (tmp_path / "at_first_open.py").write_text(AT_FIRST_OPEN)
    done = subprocess.run(
        [sys.executable, "at_first_open.py", target, *argv],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
        preexec_fn=_unlimited_core if _can_unlimit_core() else None,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["status"] == 0, done.stderr
    assert [(s["dumpable"], s["core"]) for s in report["seen"]] == [(0, [0, 0])], report


# --- item 2: no orphans -----------------------------------------------------------------------------------


def test_workers_and_resource_tracker_exit_when_the_scan_is_killed(tmp_path):
    """kill -9 of a scan's main process (as the OOM killer does): its hashing workers and multiprocessing's
    resource tracker, which held the body arena and the pool's semaphores, are gone within 5 s."""
    listfile = _list(tmp_path / "list.csv", [("md5", "0" * 32)])
    with LoopbackServer(IMAGES) as server:
        urls = [server.url(p) for p in IMAGES] + [server.url(f"/slow?seconds=30&n={i}") for i in range(4)]
        shard = _url_shard(tmp_path / "shard.parquet", urls)
        args = ["scan", str(shard), "--hashlist", str(listfile), "--out", "out", "--workers", "2"]
        args += ["--allow-private-networks", "--quiet"]
        with _scan_process(args, tmp_path) as scan:
            processes = _workers_of(scan.pid, 2)
            scan.seen = processes  # type: ignore[attr-defined]  # killed by _scan_process if they live on
            os.kill(scan.pid, signal.SIGKILL)
            scan.wait(10)
            try:
                _wait_for(lambda: not any(map(_alive, processes)), 5, "the scan's processes to exit")
            finally:
                left = {pid: _cmdline(pid) for pid in processes if _alive(pid)}
    assert left == {}


PARENT = '''
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", """
import os, sys, time
from scanner.procguard import watch_parent
watch_parent(os.getppid(), interval=0.1)
print(os.getpid(), flush=True)
time.sleep(60)
"""])
time.sleep(60)
'''


def test_the_portable_parent_watch_ends_an_orphan(tmp_path):
    """Where the kernel cannot signal a parent's death (no PR_SET_PDEATHSIG), a worker's watchdog thread sees
    it is re-parented and exits: here without the prctl, on a real orphan."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], env=_env(), stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        child = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert _alive(child)
        parent.kill()
        parent.wait(10)
        _wait_for(lambda: not _alive(child), 3, "the orphan to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.communicate()


# --- item 5: decoder stalls -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stalling() -> dict[str, bytes]:
    """Two stalling JPEGs (different bytes: one listed by MD5, one not) and ordinary images."""
    return {
        **IMAGES,
        "/stall-listed.jpg": stalling_jpeg(shade=100),
        "/stall-unlisted.jpg": stalling_jpeg(shade=160),
    }


def _stall_scan(tmp_path: Path, files: dict[str, bytes], out: str, *flags: str) -> tuple[list, list[dict]]:
    listed = hashlib.md5(files["/stall-listed.jpg"]).hexdigest()
    # A PDQ entry makes the scan decode every body (an MD5-only scan reads headers only).
    listfile = _list(tmp_path / "list.csv", [("md5", listed), ("pdq", "f" * 64)])
    with LoopbackServer(files) as server:
        shard = _url_shard(tmp_path / f"{out}.parquet", [server.url(p) for p in files])
        args = ["scan", str(shard), "--hashlist", str(listfile), "--out", out, "--workers", "1"]
        args += ["--allow-private-networks", "--quiet", *flags]
        done = subprocess.run(
            [sys.executable, "-m", "scanner", *args],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert done.returncode == 0, done.stderr
    matches = [
        json.loads(line) for line in (tmp_path / out / "matches.jsonl").read_text().split("\n") if line
    ]
    return _outcomes(tmp_path / out), matches


def test_a_jpeg_with_too_many_scans_is_refused_before_decoding(tmp_path, stalling):
    """The default cap (hashing.max_scans, 500) refuses both stalling bodies up front as too_many_scans,
    quickly, with their digests still matched; every other row is checked as usual."""
    started = time.monotonic()
    outcomes, matches = _stall_scan(tmp_path, stalling, "capped")
    assert outcomes == [("clean", None)] * len(IMAGES) + [
        ("match", "too_many_scans"),
        ("invalid", "too_many_scans"),
    ]
    assert [(m["hash_type"], m["row"]) for m in matches] == [("md5", len(IMAGES))]
    assert time.monotonic() - started < 60


def test_a_decode_past_its_cpu_budget_is_decode_timeout_and_the_scan_goes_on(tmp_path, stalling):
    """With the scan cap lifted and a 1 s budget (--decode-timeout), each stalling body (~10 s of CPU) kills
    its worker at the budget: the worker is replaced, the row is decode_timeout with its digests matched, the
    other rows are checked as usual and the scan finishes."""
    config = tmp_path / "lifted.toml"
    config.write_text("[hashing]\nmax_scans = 1000000\n")
    outcomes, matches = _stall_scan(
        tmp_path, stalling, "budget", "--config", str(config), "--decode-timeout", "1"
    )
    assert outcomes == [("clean", None)] * len(IMAGES) + [
        ("match", "decode_timeout"),
        ("invalid", "decode_timeout"),
    ]
    assert [(m["hash_type"], m["row"]) for m in matches] == [("md5", len(IMAGES))]


# --- Ray: the actors (items 1 and 5) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    """A one-CPU local Ray cluster for this module's Ray tests, its session files in a short directory of its
    own (Ray's socket paths must stay under 108 bytes: tmp_path is too deep)."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install .[ray])")
    import logging

    temp_dir = tempfile.mkdtemp(prefix="ray-")
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=temp_dir, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.ray
def test_ray_actors_are_not_dumpable_and_have_no_core_limit(tmp_path, ray_cluster):
    """A UnitWorker actor hardens its own process when it starts, before any unit (and so any body) reaches
    it: prctl(PR_GET_DUMPABLE) is 0 and the core limit 0, 0 inside it."""
    from scanner import __version__
    from scanner.config import build_config
    from scanner.lists import Matcher, load_hashlist

    listfile = _list(tmp_path / "list.csv", [("md5", "0" * 32)])
    config = build_config({"inputs": [], "out": str(tmp_path / "out"), "hashlist": [str(listfile)]}, "test")
    matcher = Matcher.from_lists([load_hashlist(str(listfile))])
    from scanner.runners.ray import UnitWorker

    ray = ray_cluster
    actor = ray.remote(num_cpus=1)(UnitWorker).remote(config, matcher, __version__)
    inside = ray.get(
        actor.__ray_call__.remote(
            lambda self: (
                ctypes.CDLL(None, use_errno=True).prctl(3, 0, 0, 0, 0),  # PR_GET_DUMPABLE
                list(resource.getrlimit(resource.RLIMIT_CORE)),
            )
        ),
        timeout=120,
    )
    ray.kill(actor)
    assert inside == (0, [0, 0])


@pytest.mark.ray
def test_a_decode_past_its_cpu_budget_on_ray_is_decode_timeout(tmp_path, stalling, ray_cluster):
    """On Ray too, a stalling body costs its row (decode_timeout, digests matched), not the actor and its
    unit: each actor hashes in a worker process of its own, under the same budget."""
    from scanner.config import build_config

    files = {"/img/0.jpg": IMAGES["/img/0.jpg"], "/stall-listed.jpg": stalling["/stall-listed.jpg"]}
    listed = hashlib.md5(files["/stall-listed.jpg"]).hexdigest()
    listfile = _list(tmp_path / "list.csv", [("md5", listed), ("pdq", "f" * 64)])
    with LoopbackServer(files) as server:
        from scanner.runners import ray as ray_runner

        shard = _url_shard(tmp_path / "shard.parquet", [server.url(p) for p in files])
        settings = {
            "inputs": [str(shard)],
            "out": str(tmp_path / "out"),
            "hashlist": [str(listfile)],
            "hashing": {"max_scans": 1_000_000, "decode_timeout": 1.0},
            "fetch": {"allow_private_networks": True},
            "run": {"runner": "ray", "workers": 1, "progress": False},
        }
        ray_runner.scan(build_config(settings, "test"))
    assert _outcomes(tmp_path / "out") == [("clean", None), ("match", "decode_timeout")]


def test_a_killed_unit_worker_costs_a_retry_not_the_scan_and_every_row_is_reported_once(tmp_path):
    """kill -9 of a unit worker (as the OOM killer does) while it runs units: the coordinator runs them again
    on a fresh worker, the scan exits 0, and each row is in the report exactly once with its own outcome."""
    listfile = _list(tmp_path / "list.csv", [("md5", hashlib.md5(IMAGES["/img/1.jpg"]).hexdigest())])
    with LoopbackServer(IMAGES) as server:
        urls = [server.url(p) for p in IMAGES] * 3 + [server.url(f"/slow?seconds=3&n={i}") for i in range(6)]
        shard = _url_shard(tmp_path / "shard.parquet", urls)
        (tmp_path / "two.toml").write_text("[run]\nhashers_per_unit_worker = 1\n")  # two unit workers
        args = ["scan", str(shard), "--hashlist", str(listfile), "--out", "out", "--workers", "2"]
        args += ["--rows-per-unit", "3", "--allow-private-networks", "--quiet", "--config", "two.toml"]
        with _scan_process(args, tmp_path) as scan:
            _workers_of(scan.pid, 2)
            unit_workers: list[int] = []

            def found() -> bool:
                unit_workers[:] = [p for p in _descendants(scan.pid) if _unit_worker(p, scan.pid)]
                return len(unit_workers) == 2

            _wait_for(found, 60, "two unit workers, each with its hashing worker")
            time.sleep(1.0)  # units handed out, the slow rows waiting on the server
            os.kill(unit_workers[0], signal.SIGKILL)
            _, stderr = scan.communicate(timeout=120)
    assert scan.returncode == 0, stderr
    rows = pq.read_table(tmp_path / "out" / "outcomes.parquet", columns=["row", "outcome"]).to_pydict()
    assert rows["row"] == list(range(len(urls)))
    assert (
        rows["outcome"] == ["clean", "match", "clean", "clean"] * 3 + ["invalid"] * 6
    )  # /slow: not an image


def _unit_worker(pid: int, root: int) -> bool:
    """A child of the scan's coordinator that has a child of its own (its hashing worker)."""
    stat = _stat(pid)
    if stat is None or stat[1] != root or TRACKER in _cmdline(pid):
        return False
    return any((_stat(child) or ("", 0))[1] == pid for child in _descendants(pid))


def _sigint_disposition(queue) -> None:
    queue.put(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)


def test_children_started_for_a_scan_ignore_ctrl_c_from_their_first_import() -> None:
    """A Ctrl-C while workers import must not end them with a KeyboardInterrupt traceback: spawn execs a
    fresh interpreter with an empty signal mask, so only an ignored disposition reaches it."""
    import multiprocessing

    from scanner import procguard

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    handler = signal.getsignal(signal.SIGINT)
    with procguard.children_ignore_ctrl_c():
        child = context.Process(target=_sigint_disposition, args=(queue,))
        child.start()
    assert signal.getsignal(signal.SIGINT) is handler  # this process's own Ctrl-C handling is back
    assert queue.get(timeout=60) is True
    child.join(30)
    assert child.exitcode == 0


def test_a_ctrl_c_pressed_while_children_start_is_delivered_after() -> None:
    script = (
        "import os, signal, time\n"
        "from scanner import procguard\n"
        "with procguard.children_ignore_ctrl_c():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.05)\n"
        "time.sleep(2)\n"
        "print('lost')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr and "lost" not in done.stdout

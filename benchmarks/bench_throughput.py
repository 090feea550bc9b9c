"""End-to-end throughput: `scanner scan` against img2dataset with a hashing writer, and the hashing ceiling.

    python benchmarks/bench_throughput.py [--rows 10000] [--flat-rows 10000,200000] [--images 600]
                                          [--repeat 3] [--quick]
    (after pip install -e '.[bench]': img2dataset 1.47, psutil)

One run, on 127.0.0.1 only:
- corpus: `--images` generated pictures, 256x256 to 1600x1200 (JPEG, some PNG and WebP, mean ~200 KB),
  served by a loopback server in its own process (loopback_server.py); LAION-style Parquet shards of URLs,
  row r -> image r % images with a distinct `?i=r` query, so any row count reuses the same corpus.
- lists: 1M random PDQ, 1M random MD5, and a small CSV of pHash and SHA-1 entries (so a scan computes
  PDQ + pHash + MD5 + SHA-1), with a few corpus images planted in each so both tools must find matches.
- (a) `scanner scan` as a user runs it (subprocess CLI); (b) img2dataset with the hashing writer of
  i2d_writer.py (same hash types, faiss matching, processes and threads tuned here); (b0) img2dataset's bare
  download (output_format="dummy"); (c) the ceiling: scanner's decode + hash + match on bytes in memory,
  one process per core, no network.
- images/s, ratios, CPU ms per image by process role (the coordinator, unit workers, hashing processes)
  and by hashing stage, the coordinator's CPU per row, each role's CPU per row in the steady state (between
  the first and the last commit of rows, as (c) times only its own steady state), and the process tree's
  peak RSS and PSS; then the
  scan again at each `--flat-rows` count on the small-image corpus, to show memory stays flat.
- `--workers-sweep 1,2,4`: the scan at each worker count, total PSS (psutil's memory_full_info().pss summed
  over the process tree) and what each added worker costs: the lists are shared, not copied.
- `--timeline 2`: each (a) scan in windows of 2 s, the cores each role used and the rows committed: where
  a stall or a slow start hides in the totals.
- (a) runs as a user's second scan does, with numba's compiled kernels in its disk cache
  (scanner/kernelcache.py): a 300-row scan runs first, as numba keeps kernels per checkout path and a
  checkout's first scan compiles them (about 3 CPU s per process, once).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import nan
from pathlib import Path

import imagehash
import loopback_server
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from i2d_writer import LISTS_ENV, reference_pdq
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
SIZES = [(256, 256), (400, 300), (640, 480), (800, 600), (1024, 768), (1280, 960), (1600, 1200)]
SMALL_SIZES = [(256, 256), (320, 240), (400, 300)]
ROWS_PER_SHARD = 10_000
PLANTED = 4  # corpus images planted per list hash type
WANT = frozenset({"md5", "sha1", "pdq", "phash"})
# The monitor samples every SAMPLE_SECONDS: it shares the machine with the scan it measures, which (c) does
# not (about 0.03 cores at 0.1 s on the 2-core VM, 0.01 now).
SAMPLE_SECONDS = 0.25
PSS_EVERY = 8  # samples between PSS readings (2 s)
WARM_UP_ROWS = 300
SWEEP_PSS_EVERY = 2  # in the --workers-sweep scans, where PSS is what is measured
ROLES = ("main", "units", "hashing", "helper")


# ---------------------------------------------------------------- corpus, shards, lists


def picture(seed: int, width: int, height: int) -> Image.Image:
    """A photo-like picture: smooth colour fields, shapes, and grain (so JPEGs have realistic sizes)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8)
    image = Image.fromarray(low).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(10):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(8, max(9, min(width, height) // 4)))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    pixels = np.asarray(image).astype(np.int16)
    pixels += rng.integers(-10, 11, (height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def corpus_item(args: tuple[int, bool]) -> tuple[str, bytes]:
    """Image n: 80% JPEG (quality 80-92), 10% PNG (at most 640x480), 10% WebP; as (extension, bytes)."""
    n, small = args
    sizes = SMALL_SIZES if small else SIZES
    kind = ("png", "webp")[n // 10 % 2] if n % 10 == 9 else "jpg"
    size = sizes[n % len(sizes)] if kind != "png" else sizes[n % min(len(sizes), 3)]
    buffer = io.BytesIO()
    fmt = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[kind]
    picture(n, *size).save(buffer, fmt, **({} if kind == "png" else {"quality": 80 + n % 13}))
    return kind, buffer.getvalue()


def make_corpus(count: int, small: bool = False) -> list[tuple[str, bytes]]:
    """`count` images, generated on every core."""
    with multiprocessing.get_context("spawn").Pool() as pool:
        return pool.map(corpus_item, [(n, small) for n in range(count)], chunksize=8)


def write_shards(folder: Path, base: str, corpus: Sequence[tuple[str, bytes]], rows: int) -> Path:
    """LAION-400M style Parquet shards of `rows` URLs: row r -> image r % len(corpus), distinct URLs."""
    folder.mkdir(parents=True)
    for start in range(0, rows, ROWS_PER_SHARD):
        ids = np.arange(start, min(rows, start + ROWS_PER_SHARD))
        images = ids % len(corpus)
        table = pa.table(
            {
                "SAMPLE_ID": ids,
                "URL": [f"{base}/img/{n}.{corpus[n][0]}?i={i}" for i, n in zip(ids, images, strict=True)],
                "TEXT": [f"caption of picture {n}" for n in images],
                "HEIGHT": np.zeros(len(ids), dtype=np.int64),
                "WIDTH": np.zeros(len(ids), dtype=np.int64),
                "LICENSE": ["?"] * len(ids),
                "NSFW": ["UNLIKELY"] * len(ids),
                "similarity": np.full(len(ids), 0.3),
            }
        )
        pq.write_table(table, folder / f"part-{start // ROWS_PER_SHARD:05d}.parquet", row_group_size=2000)
    return folder


@dataclass
class Planted:
    """Which corpus images each list type should match."""

    images: dict[str, list[int]] = field(default_factory=dict)

    def rows_matching(self, hash_type: str, rows: int, corpus_size: int) -> int:
        hits = set(self.images.get(hash_type, []))
        return sum(1 for r in range(rows) if r % corpus_size in hits)


def write_lists(
    folder: Path, corpus: Sequence[tuple[str, bytes]], size: int
) -> tuple[dict[str, Path], Planted]:
    """1M-entry PDQ and MD5 lists and a small pHash + SHA-1 CSV, each with a few corpus images planted."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    planted = Planted()
    reference = [
        (n, *reference_pdq(Image.open(io.BytesIO(corpus[n][1])))) for n in range(min(60, len(corpus)))
    ]
    good = [n for n, _, quality in reference if quality >= 80]
    pdq_of = {n: bits for n, bits, _ in reference}
    planted.images = {
        "pdq": good[0:PLANTED],
        "md5": good[PLANTED : 2 * PLANTED],
        "phash": good[2 * PLANTED : 3 * PLANTED],
        "sha1": good[3 * PLANTED : 4 * PLANTED],
    }
    near = []
    for n in planted.images["pdq"]:
        bits = np.unpackbits(pdq_of[n])
        bits[rng.choice(256, 12, replace=False)] ^= 1  # a near copy: 12 bits away
        near.append(np.packbits(bits).tobytes().hex())
    paths = {"pdq": folder / "pdq.txt", "md5": folder / "md5.txt", "extra": folder / "extra.csv"}
    _hex_list(paths["pdq"], rng, size, 32, near)
    _hex_list(
        paths["md5"], rng, size, 16, [hashlib.md5(corpus[n][1]).hexdigest() for n in planted.images["md5"]]
    )
    with open(paths["extra"], "w") as handle:
        handle.write("hash_type,hash,id,category\n")
        for i, value in enumerate(rng.bytes(8 * 1000)[k : k + 8].hex() for k in range(0, 8000, 8)):
            handle.write(f"phash,{value},p{i},bench\n")
        for n in planted.images["phash"]:
            handle.write(f"phash,{imagehash.phash(Image.open(io.BytesIO(corpus[n][1])))},planted{n},bench\n")
        for i in range(1000):
            handle.write(f"sha1,{rng.bytes(20).hex()},s{i},bench\n")
        for n in planted.images["sha1"]:
            handle.write(f"sha1,{hashlib.sha1(corpus[n][1]).hexdigest()},planted{n},bench\n")
    return paths, planted


def _hex_list(path: Path, rng: np.random.Generator, size: int, nbytes: int, planted: list[str]) -> None:
    text = rng.bytes(nbytes * (size - len(planted))).hex()
    width = 2 * nbytes
    lines = [text[i : i + width] for i in range(0, len(text), width)] + planted
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- measuring a process tree


@dataclass
class Usage:
    """What a command cost: wall seconds, CPU seconds by process role, peak RSS of the tree."""

    wall: float
    cpu: dict[str, float]
    peak_rss: int
    peak_process_rss: int
    peak_pss: int = 0  # proportional set size summed: shared library pages counted once, not per process
    # At the sample where the total PSS peaked: each role's PSS summed and its processes counted.
    pss_by_role: dict[str, tuple[int, int]] = field(default_factory=dict)
    # The coordinator's CPU seconds and the rows committed each time new done markers appeared in --out:
    # its start-up (lists loaded and indexed, workers spawned, the first units) apart from its per-row work.
    commits: list[tuple[int, float]] = field(default_factory=list)
    # The same moments with every role's CPU seconds: the steady state between the first and last commit.
    role_commits: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    # Every sample: (seconds since the start, rows committed, CPU s by role): for --timeline.
    timeline: list[tuple[float, int, dict[str, float]]] = field(default_factory=list)
    # The coordinator's PSS at each PSS reading: what it holds once the lists are built and shared.
    main_pss: list[int] = field(default_factory=list)

    def coordinator_split(self, rows: int) -> tuple[float, int, float, float] | None:
        """(start-up CPU s, rows in the first commit, ms per row from the first commit to the last, ms per
        row after the first commit to the end, merge included), or None if not measured."""
        if not self.commits or rows <= self.commits[0][0]:
            return None
        (first_rows, first_cpu), (last_rows, last_cpu) = self.commits[0], self.commits[-1]
        between = 1000 * (last_cpu - first_cpu) / (last_rows - first_rows) if last_rows > first_rows else nan
        after = 1000 * (self.cpu.get("main", 0.0) - first_cpu) / (rows - first_rows)
        return first_cpu, first_rows, between, after


class TreeMonitor:
    """Samples a process and its descendants: RSS summed over the tree, and each process's CPU time."""

    def __init__(
        self,
        root: int,
        role: Callable[[psutil.Process, int], str],
        interval: float = SAMPLE_SECONDS,
        pss_every: int = PSS_EVERY,
        commits: Path | None = None,
    ) -> None:
        self._root, self._role, self._interval, self._pss_every = root, role, interval, pss_every
        self._commits = commits  # a scan's --out/.units: its done markers tell when units commit
        self._markers: dict[str, int] = {}
        self._parts: dict[str, tuple[str, int]] = {}  # part file -> (its unit, its rows)
        self.commits: list[tuple[int, float]] = []  # (rows committed, the coordinator's CPU s) at each change
        self.role_commits: list[tuple[int, dict[str, float]]] = []  # (rows committed, CPU s by role)
        self.timeline: list[tuple[float, int, dict[str, float]]] = []  # every sample: for --timeline
        self.main_pss: list[int] = []  # the coordinator's PSS at each PSS reading
        self._rows = 0  # committed, as last seen
        self._started = time.perf_counter()
        self._cpu: dict[int, tuple[str, float]] = {}
        self.peak_rss = self.peak_process_rss = self.peak_pss = self._samples = 0
        self.pss_by_role: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def sample(self) -> None:
        try:
            root = psutil.Process(self._root)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        self._samples += 1
        with_pss = self._samples % self._pss_every == 1  # reading smaps stalls the process it reads: seldom
        total = total_pss = 0
        roles: dict[str, tuple[int, int]] = {}
        for process in tree:
            try:
                with process.oneshot():
                    rss, times = process.memory_info().rss, process.cpu_times()
                    pss = process.memory_full_info().pss if with_pss else 0
                    role = self._known_role(process)
            except psutil.Error:
                continue
            total += rss
            total_pss += pss
            if with_pss:
                held, count = roles.get(role, (0, 0))
                roles[role] = (held + pss, count + 1)
            self.peak_process_rss = max(self.peak_process_rss, rss)
            self._cpu[process.pid] = (role, times.user + times.system)
        self.peak_rss = max(self.peak_rss, total)
        if with_pss and "main" in roles:
            self.main_pss.append(roles["main"][0])
        if total_pss > self.peak_pss:
            self.peak_pss, self.pss_by_role = total_pss, roles
        if self._commits is not None and self._root in self._cpu:
            self._new_commits()
        self.timeline.append((time.perf_counter() - self._started, self._rows, self.cpu_by_role()))

    def _known_role(self, process: psutil.Process) -> str:
        """Asked again while it could change (a unit worker starts childless): for a child of the root that
        looks like a hashing process; once a unit worker, always one (its hashing workers stop first)."""
        known = self._cpu.get(process.pid, (None, 0.0))[0]
        if known is None or (known == "hashing" and process.ppid() == self._root):
            return self._role(process, self._root)
        return known

    def _new_commits(self) -> None:
        """The coordinator's CPU when new done markers are seen (sampled every SAMPLE_SECONDS)."""
        assert self._commits is not None
        fresh = False
        for marker in self._commits.glob("*.done.json") if self._commits.is_dir() else []:
            if marker.name in self._markers:
                continue
            try:
                self._markers[marker.name] = int(json.loads(marker.read_text())["rows"])
            except (OSError, ValueError, KeyError):
                continue  # being written, or already merged away: the next sample reads it
            fresh = True
        if fresh:
            self.commits.append((sum(self._markers.values()), self._cpu[self._root][1]))
        if self._new_parts() or fresh:
            done = {name.split(".")[0][1:] for name in self._markers}
            parted = sum(rows for unit, rows in self._parts.values() if unit not in done)
            self._rows = sum(self._markers.values()) + parted
            self.role_commits.append((self._rows, self.cpu_by_role()))

    def _new_parts(self) -> bool:
        """Read the rows of part files (a unit's rows committed while it runs) not seen before."""
        assert self._commits is not None
        fresh = False
        for part in self._commits.glob("p*.jsonl") if self._commits.is_dir() else []:
            if part.name in self._parts:
                continue
            try:
                self._parts[part.name] = (part.name.split(".")[0][1:], part.read_bytes().count(b"\n"))
            except OSError:
                continue  # merged into its unit meanwhile: the unit's done marker counts its rows
            fresh = True
        return fresh

    def cpu_by_role(self) -> dict[str, float]:
        roles: Counter[str] = Counter()
        for role, seconds in self._cpu.values():
            roles[role] += seconds
        return dict(roles)


def role_of(process: psutil.Process, root: int) -> str:
    """main (the command's own process: scanner's coordinator), helper (multiprocessing's tracker,
    img2dataset's logger), units (a child that has children of its own: scanner's unit workers), hashing
    (the processes below them, or a childless child: the hashing workers of a scanner without unit workers,
    img2dataset's processes)."""
    if process.pid == root:
        return "main"
    command = " ".join(process.cmdline())
    if "resource_tracker" in command or "LoggerProcess" in process.name():
        return "helper"
    if process.ppid() == root and any(
        "resource_tracker" not in " ".join(c.cmdline()) for c in process.children()
    ):
        return "units"
    return "hashing"


def run_measured(
    argv: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    pss_every: int = PSS_EVERY,
    commits: Path | None = None,
) -> Usage:
    """Run a command to completion under a TreeMonitor; its output goes to `log`."""
    with open(log, "w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        with TreeMonitor(process.pid, role_of, pss_every=pss_every, commits=commits) as monitor:
            code = process.wait()
        wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{argv[:4]} failed with exit code {code}; see {log}")
    usage = Usage(wall, monitor.cpu_by_role(), monitor.peak_rss, monitor.peak_process_rss, monitor.peak_pss)
    usage.commits = monitor.commits
    usage.pss_by_role = monitor.pss_by_role
    usage.role_commits = monitor.role_commits
    usage.timeline = monitor.timeline
    usage.main_pss = monitor.main_pss
    return usage


def server_cpu(server: multiprocessing.Process) -> float:
    times = psutil.Process(server.pid).cpu_times()
    return times.user + times.system


# ---------------------------------------------------------------- the contenders


def announce(result: Result) -> Result:
    """One line as each run ends, so a long run shows its progress."""
    line = f"  {result.name}: {result.rows} rows, {result.rate:.1f} img/s, {result.usage.wall:.0f} s"
    print(line, flush=True)
    return result


@dataclass
class Result:
    """One contender's run."""

    name: str
    rows: int
    usage: Usage
    server_cpu: float = 0.0
    matches: dict[str, int] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)  # CPU seconds by hashing stage, where known

    @property
    def rate(self) -> float:
        return self.rows / self.usage.wall


def slug(name: str) -> str:
    """A file name for a run's name."""
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def scan_argv(shards: Path, lists: dict[str, Path], out: Path, workers: int | None) -> list[str]:
    argv = [sys.executable, "-m", "scanner", "scan", str(shards), "--out", str(out), "--quiet"]
    argv += ["--hashlist", f"pdq=pdq:{lists['pdq']}", "--hashlist", f"md5=md5:{lists['md5']}"]
    argv += ["--hashlist", f"extra={lists['extra']}", "--allow-private-networks", "--per-host", "64"]
    argv += shlex.split(os.environ.get("BENCH_SCAN_ARGS", ""))  # e.g. "--per-host 256 --max-in-flight 256"
    return argv + (["--workers", str(workers)] if workers else [])


def run_scan(
    name: str,
    shards: Path,
    rows: int,
    lists: dict[str, Path],
    work: Path,
    server: multiprocessing.Process,
    workers: int | None,
    pss_every: int = PSS_EVERY,
) -> Result:
    out = work / f"out-{slug(name)}"
    before = server_cpu(server)
    usage = run_measured(
        scan_argv(shards, lists, out, workers),
        work / f"{slug(name)}.log",
        pss_every=pss_every,
        commits=out / ".units",
    )
    summary = json.loads((out / "summary.json").read_text())
    outcomes = summary["outcomes"]
    if outcomes.get("dead") or outcomes.get("invalid"):
        raise SystemExit(f"{name}: unexpected outcomes {outcomes}; see {out}")
    found: set[tuple[str, int, str]] = set()
    with open(out / "matches.jsonl") as handle:
        for line in handle:
            record = json.loads(line)
            found.add((record["shard"], record["row"], record["hash_type"]))
    result = Result(name, rows, usage, server_cpu(server) - before, dict(Counter(t for *_, t in found)))
    shutil.rmtree(out)
    return announce(result)


def run_peer(
    name: str,
    writer: str,
    shards: Path,
    args: argparse.Namespace,
    lists: dict[str, Path],
    work: Path,
    server: multiprocessing.Process,
) -> Result:
    """img2dataset with this run's process, thread and shard-size settings."""
    return run_img2dataset(
        name,
        writer,
        shards,
        args.rows,
        lists,
        work,
        server,
        args.i2d_processes,
        args.i2d_threads,
        args.i2d_shard_size,
    )


def run_img2dataset(
    name: str,
    writer: str,
    shards: Path,
    rows: int,
    lists: dict[str, Path],
    work: Path,
    server: multiprocessing.Process,
    processes: int,
    threads: int,
    shard_size: int,
) -> Result:
    out = work / f"out-{slug(name)}"
    argv = [sys.executable, str(Path(__file__).with_name("run_img2dataset.py")), str(shards), str(out)]
    argv += ["--writer", writer, "--processes", str(processes), "--threads", str(threads)]
    argv += ["--shard-size", str(shard_size or min(10_000, -(-rows // (2 * processes))))]
    env = {
        **os.environ,
        "NO_ALBUMENTATIONS_UPDATE": "1",
        LISTS_ENV: json.dumps({k: str(v) for k, v in lists.items()}),
    }
    before = server_cpu(server)
    usage = run_measured(argv, work / f"{slug(name)}.log", env)
    result = Result(name, rows, usage, server_cpu(server) - before)
    matched: Counter[str] = Counter()
    for path in out.glob("*.hashing"):
        record = json.loads(path.read_text())
        matched.update(t for _, t in record["matches"])
        for stage, seconds in record["cpu"].items():
            result.stages[stage] = result.stages.get(stage, 0.0) + seconds
    stats = [json.loads(p.read_text()) for p in out.glob("*_stats.json")]
    successes = sum(s["successes"] for s in stats)
    if successes != rows:
        raise SystemExit(
            f"{name}: img2dataset fetched {successes} of {rows} rows; see {work / slug(name)}.log"
        )
    result.matches = dict(matched)
    shutil.rmtree(out)
    return announce(result)


# ---------------------------------------------------------------- the ceiling: hashing bytes in memory

_BODIES: list[bytes] = []


def _init_ceiling(bodies: list[bytes]) -> None:
    """A ceiling worker: the corpus in memory, and the compiled PDQ kernels from the first image on."""
    from scanner.hashing import pdq

    _BODIES[:] = bodies
    pdq.COMPILE_AFTER = 0


def _hash_range(span: tuple[int, int]) -> tuple[float, list]:
    """Hash images span[0]..span[1] of the cycled corpus; returns the CPU seconds it took and the queries."""
    from scanner.hashing import hash_image
    from scanner.pipeline import to_query

    start = time.process_time()
    queries = [to_query(hash_image(_BODIES[i % len(_BODIES)], WANT)) for i in range(*span)]
    return time.process_time() - start, queries


def run_ceiling(name: str, corpus: Sequence[tuple[str, bytes]], count: int, lists: dict[str, Path]) -> Result:
    """scanner's hash_image on every core, fed from memory, and the main process matching the results,
    after a warm-up: the steady state, which no scan exceeds."""
    from scanner.lists import Matcher, load_hashlist

    matcher = Matcher.from_lists(
        [
            load_hashlist(f"pdq=pdq:{lists['pdq']}"),
            load_hashlist(f"md5=md5:{lists['md5']}"),
            load_hashlist(f"extra={lists['extra']}"),
        ]
    )
    assert matcher.needed_hash_types == WANT, matcher.needed_hash_types
    bodies = [body for _, body in corpus]
    chunk = 32
    spans = [(i, min(count, i + chunk)) for i in range(0, count, chunk)]
    matched: Counter[str] = Counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(os.cpu_count(), initializer=_init_ceiling, initargs=(bodies,)) as pool:
        # Warm up (imports, kernel compiles in every worker and in the matcher) before timing: a ceiling is
        # the steady state.
        warm = pool.map(_hash_range, [(0, 1)] * (os.cpu_count() or 1), chunksize=1)
        matcher.match_batch(warm[0][1])
        cpu, workers_cpu = time.process_time(), 0.0
        started = time.perf_counter()
        for seconds, queries in pool.imap(_hash_range, spans):
            workers_cpu += seconds
            for found in matcher.match_batch(queries):
                matched.update({m.hash_type for m in found})
        wall = time.perf_counter() - started
        main_cpu = time.process_time() - cpu
    usage = Usage(wall, {"main": main_cpu, "hashing": workers_cpu}, 0, 0)
    return announce(Result(name, count, usage, matches=dict(matched)))


# ---------------------------------------------------------------- per-stage CPU of scanner's hashing


def stage_times(corpus: Sequence[tuple[str, bytes]], lists: dict[str, Path]) -> dict[str, float]:
    """Mean CPU ms per image of each hashing stage, one process, scanner's code path (compiled PDQ, as a
    worker uses it after its first images)."""
    from scanner.hashing import HASHERS, hash_image, pdq
    from scanner.hashing.decode import decode_image
    from scanner.hashing.hashers import HashInput

    pdq.COMPILE_AFTER = 0
    hash_image(corpus[0][1], WANT)  # compile before timing

    totals: Counter[str] = Counter()
    clock = time.process_time
    for _, body in corpus:
        start = clock()
        decoded = decode_image(body)
        after_decode = clock()
        source = HashInput(body, decoded)
        HASHERS["pdq"].compute(source)
        after_pdq = clock()
        HASHERS["phash"].compute(source)
        after_phash = clock()
        HASHERS["md5"].compute(source), HASHERS["sha1"].compute(source)
        after_digests = clock()
        totals.update(
            {
                "decode": after_decode - start,
                "pdq": after_pdq - after_decode,
                "phash": after_phash - after_pdq,
                "digests": after_digests - after_phash,
            }
        )
    return {stage: 1000 * seconds / len(corpus) for stage, seconds in totals.items()}


def drift(corpus: Sequence[tuple[str, bytes]]) -> dict[str, tuple[float, int]]:
    """scanner's PDQ (compiled kernels) and pHash against the reference path (pdqhash on the reference
    input, imagehash): (mean, max) differing bits over the corpus."""
    from scanner.hashing import hash_image, pdq

    pdq.COMPILE_AFTER = 0

    bits: dict[str, list[int]] = {"pdq": [], "phash": []}
    for _, body in corpus:
        ours = hash_image(body, frozenset({"pdq", "phash"}))
        image = Image.open(io.BytesIO(body))
        reference_bits, _ = reference_pdq(image)
        reference_phash = bytes.fromhex(str(imagehash.phash(image)))
        bits["pdq"].append(_differing(ours.pdq, reference_bits.tobytes()))
        bits["phash"].append(_differing(ours.phash, reference_phash))
    return {name: (statistics.mean(values), max(values)) for name, values in bits.items()}


def _differing(a: bytes | None, b: bytes) -> int:
    assert a is not None
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


# ---------------------------------------------------------------- report


def print_table(results: list[Result], stages: dict[str, float], peer_stages: dict[str, float]) -> None:
    print("CPU ms per image by process: main (scanner's coordinator), units (unit workers: fetch, match),")
    print("hashing (decode, hash), helper (trackers, loggers), the loopback server, all together")
    print(
        f"| {'run':<28} | {'rows':>7} | {'img/s':>6} | {'wall s':>6} | {'main':>6} | {'units':>6} "
        f"| {'hashing':>7} | {'helper':>6} | {'server':>6} | {'total':>6} | {'peak RSS MB':>11} "
        f"| {'max proc MB':>11} | {'peak PSS MB':>11} |"
    )
    print("|" + "|".join("-" * w for w in (30, 9, 8, 8, 8, 8, 9, 8, 8, 8, 13, 13, 13)) + "|")
    for r in results:
        per = {k: 1000 * v / r.rows for k, v in r.usage.cpu.items()}
        server = 1000 * r.server_cpu / r.rows
        total = sum(per.values()) + server
        rss = f"{r.usage.peak_rss / 2**20:11.0f}" if r.usage.peak_rss else f"{'-':>11}"
        proc = f"{r.usage.peak_process_rss / 2**20:11.0f}" if r.usage.peak_process_rss else f"{'-':>11}"
        pss = f"{r.usage.peak_pss / 2**20:11.0f}" if r.usage.peak_pss else f"{'-':>11}"
        print(
            f"| {r.name:<28} | {r.rows:>7} | {r.rate:6.1f} | {r.usage.wall:6.1f} "
            f"| {per.get('main', 0):6.3f} | {per.get('units', 0):6.2f} | {per.get('hashing', 0):7.2f} "
            f"| {per.get('helper', 0):6.2f} | {server:6.2f} | {total:6.2f} | {rss} | {proc} | {pss} |"
        )
    scans = [r for r in results if r.name.startswith(("(a)", "flat", "sweep"))]
    if scans:
        per_row = ", ".join(f"{1000 * r.usage.cpu.get('main', 0) / r.rows:.3f}" for r in scans)
        print(f"\ncoordinator (scanner's main process) CPU ms per row, each scan: {per_row} (target <= 0.1)")
        print_coordinator_split(scans)
        print_steady_split(scans, [r for r in results if r.name.startswith("(c)")])
    print("\nCPU ms per image by hashing stage (scanner: one process, corpus; peer: measured in its writer)")
    print(f"| {'stage':<10} | {'scanner':>8} | {'peer':>8} |")
    for stage in ("decode", "pdq", "phash", "digests", "match"):
        ours, theirs = stages.get(stage, float("nan")), peer_stages.get(stage, float("nan"))
        print(f"| {stage:<10} | {ours:8.2f} | {theirs:8.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000, help="rows for the (a)/(b)/(b0) comparison")
    parser.add_argument("--flat-rows", default="10000,200000", help="row counts of the memory-flatness scans")
    parser.add_argument(
        "--flat-corpus",
        choices=["small", "mixed"],
        default="small",
        help="corpus of the flatness scans: small images (fast) or the mixed corpus",
    )
    parser.add_argument("--images", type=int, default=600, help="distinct images in the corpus")
    parser.add_argument("--list-size", type=int, default=1_000_000, help="entries in the PDQ and MD5 lists")
    parser.add_argument("--workers", type=int, default=None, help="scanner --workers (default: its own)")
    parser.add_argument(
        "--workers-sweep",
        default="",
        help="comma list of scanner --workers counts: total PSS at each (1,2,4)",
    )
    parser.add_argument("--sweep-rows", type=int, default=2000, help="rows of each --workers-sweep scan")
    parser.add_argument("--i2d-processes", type=int, default=2)
    parser.add_argument("--i2d-threads", type=int, default=32)
    parser.add_argument(
        "--i2d-shard-size", type=int, default=0, help="img2dataset shard size (default: 2 shards a process)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of (a), (b), (c) in turn; ratios per round and median"
    )
    parser.add_argument(
        "--timeline",
        type=float,
        default=0,
        metavar="SECONDS",
        help="after the table, each (a) scan in windows of this many seconds: cores used by role, rows done",
    )
    parser.add_argument("--skip", default="", help="comma list of runs to skip: a,b,b0,c,flat")
    parser.add_argument("--quick", action="store_true", help="rows 2000, flat 2000,20000, 200 images")
    parser.add_argument("--workdir", help="keep inputs and logs here (default: a temporary directory)")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.flat_rows, args.images = 2000, "2000,20000", 200
    skip = set(filter(None, args.skip.split(",")))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run_all(args, skip, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def run_all(args: argparse.Namespace, skip: set[str], work: Path) -> None:
    started = time.perf_counter()
    corpus = make_corpus(args.images)
    sizes = [len(body) for _, body in corpus]
    kinds = Counter(kind for kind, _ in corpus)
    print(
        f"corpus: {len(corpus)} images {dict(kinds)}, mean {statistics.mean(sizes) / 1000:.0f} KB; ", end=""
    )
    lists, planted = write_lists(work / "lists", corpus, args.list_size)
    print(
        f"lists: {args.list_size} PDQ, {args.list_size} MD5, 1000+{PLANTED} pHash and SHA-1 "
        f"({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    results: list[Result] = []
    peer_stages: dict[str, float] = {}
    server, port = loopback_server.start(corpus)
    try:
        shards = write_shards(work / "shards", f"http://127.0.0.1:{port}", corpus, args.rows)
        expected = {t: planted.rows_matching(t, args.rows, len(corpus)) for t in planted.images}
        if "a" not in skip:
            print(f"  kernel cache: {kernel_cache_note()}", flush=True)
            warm_up(corpus, lists, work, server, port, args.workers)
        for round_ in range(1, args.repeat + 1):
            # Contenders take turns, so a noisy spell on the machine falls on one round, not one contender.
            tag = f" #{round_}" if args.repeat > 1 else ""
            if "a" not in skip:
                results.append(
                    run_scan(f"(a) scanner scan{tag}", shards, args.rows, lists, work, server, args.workers)
                )
            if "b" not in skip:
                peer = run_peer(
                    f"(b) img2dataset + hashing{tag}", "hashing", shards, args, lists, work, server
                )
                peer_stages = {k: 1000 * v / args.rows for k, v in peer.stages.items()}
                results.append(peer)
            if "b0" not in skip and round_ == 1:
                results.append(run_peer("(b0) img2dataset dummy", "dummy", shards, args, lists, work, server))
            if "c" not in skip:
                results.append(run_ceiling(f"(c) ceiling{tag}", corpus, args.rows, lists))
    finally:
        server.terminate()
    for result in results:
        if result.matches and result.name != "(b0) img2dataset dummy":
            check_matches(result, expected if result.rows == args.rows else {})
    flat = [] if "flat" in skip else flatness(args, work, lists)
    sweep = workers_sweep(args, work, lists, corpus) if args.workers_sweep else []
    stages = stage_times(corpus[:200], lists)
    stages["match"] = _match_ms(results)
    print()
    print_table(results + flat + [r for _, r in sweep], stages, peer_stages)
    print_ratios(results)
    if args.timeline:
        for result in results:
            if result.name.startswith("(a)"):
                print_timeline(result, args.timeline)
    if sweep:
        print_sweep(sweep)
        print_coordinator_marginal(results, sweep, args.workers or os.cpu_count() or 1)
    found = drift(corpus[:300])
    print(
        "\ndrift against the reference path (bits differing, mean / max over "
        f"{min(300, len(corpus))} images): " + ", ".join(f"{k} {m:.2f} / {x}" for k, (m, x) in found.items())
    )
    print(f"\nplanted matches per hash type (rows): {expected}")
    print(f"total bench time {time.perf_counter() - started:.0f} s")


def warm_up(
    corpus: Sequence[tuple[str, bytes]],
    lists: dict[str, Path],
    work: Path,
    server: multiprocessing.Process,
    port: int,
    workers: int | None,
) -> None:
    """A short scan first, so that (a) runs as a user's second scan does: numba keeps its compiled kernels
    per checkout path, and a checkout's first scan compiles them (about 3 CPU s in every process: a
    tenth more CPU in a 10,000-row (a), all in its first round)."""
    started = time.perf_counter()
    shards = write_shards(work / "warm-up", f"http://127.0.0.1:{port}", corpus, WARM_UP_ROWS)
    out = work / "out-warm-up"
    run_measured(scan_argv(shards, lists, out, workers), work / "warm-up.log")
    shutil.rmtree(out)
    print(f"  warmed up: a {WARM_UP_ROWS}-row scan ({time.perf_counter() - started:.0f} s)", flush=True)


def kernel_cache_note() -> str:
    """Where scanner keeps compiled kernels, and how many cached files it holds now."""
    from scanner import kernelcache

    directory = kernelcache.cache_dir()
    if directory is None:
        return "off (kernels compiled in every process)"
    return f"{directory} ({sum(1 for p in directory.rglob('*.nbc'))} compiled kernels cached)"


def _match_ms(results: list[Result]) -> float:
    ceiling = next((r for r in results if r.name.startswith("(c)")), None)
    return 1000 * ceiling.usage.cpu["main"] / ceiling.rows if ceiling else float("nan")


def check_matches(result: Result, expected: dict[str, int]) -> None:
    if expected and result.matches != expected:
        raise SystemExit(f"{result.name} matched {result.matches}, expected {expected}")


def flatness(args: argparse.Namespace, work: Path, lists: dict[str, Path]) -> list[Result]:
    """The scan at each --flat-rows count, on the same small corpus under distinct URLs."""
    corpus = make_corpus(max(200, args.images // 3), small=args.flat_corpus == "small")
    results = []
    server, port = loopback_server.start(corpus)
    try:
        for rows in (int(r) for r in args.flat_rows.split(",")):
            shards = write_shards(work / f"flat-{rows}", f"http://127.0.0.1:{port}", corpus, rows)
            results.append(
                run_scan(
                    f"flat scan {rows} ({args.flat_corpus})", shards, rows, lists, work, server, args.workers
                )
            )
            shutil.rmtree(shards)
    finally:
        server.terminate()
    return results


def workers_sweep(
    args: argparse.Namespace, work: Path, lists: dict[str, Path], corpus: Sequence[tuple[str, bytes]]
) -> list[tuple[int, Result]]:
    """The scan at each --workers-sweep count, PSS sampled often: what an added worker costs in memory."""
    results = []
    server, port = loopback_server.start(corpus)
    try:
        shards = write_shards(work / "sweep", f"http://127.0.0.1:{port}", corpus, args.sweep_rows)
        for count in (int(c) for c in args.workers_sweep.split(",")):
            name = f"sweep {count} workers"
            result = run_scan(
                name, shards, args.sweep_rows, lists, work, server, count, pss_every=SWEEP_PSS_EVERY
            )
            results.append((count, result))
        shutil.rmtree(shards)
    finally:
        server.terminate()
    return results


def print_sweep(sweep: list[tuple[int, Result]]) -> None:
    """Total peak PSS and peak RSS at each worker count, and the PSS each added worker costs."""
    print(f"\nPSS by worker count ({sweep[0][1].rows} rows each; lists: the benchmark's PDQ + MD5 + extra)")
    print(
        f"| {'workers':>7} | {'img/s':>6} | {'peak PSS MB':>11} | {'peak RSS MB':>11} "
        f"| {'PSS MB per added worker':>23} | {'at peak: main':>13} | {'per unit worker':>15} "
        f"| {'per hashing':>11} | {'main, 2nd half':>14} |"
    )
    print("|" + "|".join("-" * w for w in (9, 8, 13, 13, 25, 15, 17, 13, 16)) + "|")
    first_count, first = sweep[0]
    for count, r in sweep:
        added = (
            (r.usage.peak_pss - first.usage.peak_pss) / 2**20 / (count - first_count)
            if count != first_count
            else float("nan")
        )
        print(
            f"| {count:>7} | {r.rate:6.1f} | {r.usage.peak_pss / 2**20:11.0f} "
            f"| {r.usage.peak_rss / 2**20:11.0f} | {added:23.0f} | {_role_pss(r, 'main'):>13} "
            f"| {_role_pss(r, 'units'):>15} | {_role_pss(r, 'hashing'):>11} | {_late_main_pss(r):>14} |"
        )
    print("target: <= 150 MB PSS per added worker; main, 2nd half: the coordinator's median PSS over the")
    print("second half of the scan, once the lists are built and shared")


def _late_main_pss(result: Result) -> str:
    late = result.usage.main_pss[len(result.usage.main_pss) // 2 :]
    return f"{statistics.median(late) / 2**20:.0f}" if late else "-"


def _role_pss(result: Result, role: str) -> str:
    """The PSS of one process of a role at the peak (their mean), in MB."""
    held, count = result.usage.pss_by_role.get(role, (0, 0))
    return f"{held / count / 2**20:.0f}" if count else "-"


def print_coordinator_marginal(results: list[Result], sweep: list[tuple[int, Result]], workers: int) -> None:
    """The coordinator's CPU per row with its fixed costs (loading and indexing the lists, starting, merging)
    taken out: (a) minus the sweep's scan at the same worker count, over the rows it has more."""
    small = next((r for count, r in sweep if count == workers), None)
    scans = [r for r in results if r.name.startswith("(a)")]
    if small is None or not scans or scans[0].rows <= small.rows:
        return
    main = statistics.median(r.usage.cpu.get("main", 0.0) for r in scans)
    fixed_and_small = small.usage.cpu.get("main", 0.0)
    per_row = (main - fixed_and_small) / (scans[0].rows - small.rows)
    fixed = fixed_and_small - per_row * small.rows
    print(
        f"coordinator CPU per row with its fixed costs out ((a) {scans[0].rows} rows minus the sweep's "
        f"{small.rows} rows, {workers} workers): {1000 * per_row:.3f} ms (target <= 0.1); "
        f"fixed: {fixed:.2f} CPU s (lists, start, merge)"
    )


def print_timeline(result: Result, window: float) -> None:
    """Cores each role used in each window of the scan, and the rows committed by its end: a stall (a
    role starved, fetching stopped while lists load) shows as a dip that the totals average away. The
    loopback server is not in the scan's process tree, so not here."""
    print(f"\n{result.name}: timeline, windows of {window:g} s (cores by role; rows committed by its end)")
    print("| seconds | " + " | ".join(ROLES) + " | all | rows |")
    print("|---|" + "---|" * (len(ROLES) + 2))
    previous: tuple[float, int, dict[str, float]] = (0.0, 0, {})
    samples = result.usage.timeline
    for i, sample in enumerate(samples):
        at, rows, cpu = sample
        if at - previous[0] < window and i < len(samples) - 1:
            continue
        span = at - previous[0]
        cores = [(cpu.get(role, 0.0) - previous[2].get(role, 0.0)) / span for role in ROLES]
        cells = " | ".join(f"{c:.2f}" for c in cores)
        print(f"| {previous[0]:5.1f}-{at:5.1f} | {cells} | {sum(cores):.2f} | {rows} |")
        previous = sample


def print_steady_split(scans: list[Result], ceilings: list[Result]) -> None:
    """CPU ms per row by role between each scan's first and last commit: its steady state, without the
    start-up (imports, lists, compiled kernels loaded in every process) and the final merge, which (c)'s
    timing leaves out too; and (c)'s CPU per image, all roles, beside it. Rows hashed but not yet committed
    at the first commit (bodies in flight) are not counted: hashing's figure is low by up to their share
    of the rows between (a few percent at 10,000 rows, about 10% at 4,000)."""
    ceiling = statistics.median(sum(c.usage.cpu.values()) / c.rows for c in ceilings) if ceilings else nan
    print(f"steady state between the first and the last commit, CPU ms per row ((c): {1000 * ceiling:.2f})")
    heads = f"| {'main':>6} | {'units':>6} | {'hashing':>7} | {'total':>6} | {'c/a':>5} | {'+/-':>5} |"
    print(f"| {'run':<28} | {'rows':>7} " + heads)
    print("|" + "|".join("-" * w for w in (30, 9, 8, 8, 9, 8, 7, 7)) + "|")
    for r in scans:
        if len(r.usage.role_commits) < 2 or r.usage.role_commits[-1][0] <= r.usage.role_commits[0][0]:
            continue
        (first_rows, first), (last_rows, last) = r.usage.role_commits[0], r.usage.role_commits[-1]
        per = {k: 1000 * (last.get(k, 0.0) - first.get(k, 0.0)) / (last_rows - first_rows) for k in ROLES}
        total = sum(per.values())
        # Rows finish in whole units and parts: as many rows as a commit holds may be hashed and not yet
        # committed at either end of the window, so the figures are this uncertain (the first commit's size).
        spread = first_rows / (last_rows - first_rows)
        print(
            f"| {r.name:<28} | {last_rows - first_rows:>7} | {per['main']:6.3f} | {per['units']:6.2f} "
            f"| {per['hashing']:7.2f} | {total:6.2f} | {1000 * ceiling / total:5.2f} | {spread:5.0%} |"
        )
    print("+/-: rows of one commit (hashed, not yet committed) over the rows between: the figures' spread")


def print_coordinator_split(scans: list[Result]) -> None:
    """The coordinator's CPU split at its first commit: the fixed start-up (lists loaded and indexed,
    workers spawned, the first units run) and the marginal CPU per row after it: between the first and
    the last commit (hand-out, commits, progress), and to the end (the final merge too)."""
    print(f"coordinator CPU split at the first commit (done markers sampled every {SAMPLE_SECONDS} s):")
    print(
        f"| {'run':<28} | {'rows':>7} | {'start-up s':>10} | {'rows then':>9} "
        f"| {'ms/row to last commit':>21} | {'ms/row to end':>13} |"
    )
    print("|" + "|".join("-" * w for w in (30, 9, 12, 11, 23, 15)) + "|")
    for r in scans:
        split = r.usage.coordinator_split(r.rows)
        if split is None:
            print(f"| {r.name:<28} | {r.rows:>7} | {'-':>10} | {'-':>9} | {'-':>21} | {'-':>13} |")
            continue
        fixed, first_rows, between, after = split
        print(
            f"| {r.name:<28} | {r.rows:>7} | {fixed:10.2f} | {first_rows:>9} | {between:21.3f} "
            f"| {after:13.3f} |"
        )
    print("target: marginal <= 0.1 ms/row")


def print_ratios(results: list[Result]) -> None:
    """Ratios of images/s, and of CPU per image (what the rates converge to when nothing else runs), for
    each round of contenders run in turn, and their medians over the rounds."""
    rounds: dict[str, dict[str, Result]] = {}
    for r in results:
        contender, _, round_ = r.name.partition(" #")
        rounds.setdefault(round_.split()[0] if round_ else "1", {})[contender.split()[0]] = r
    rates: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    for number, contenders in rounds.items():
        rate = {k: r.rate for k, r in contenders.items()}
        cpu = {k: (sum(r.usage.cpu.values()) + r.server_cpu) / r.rows for k, r in contenders.items()}
        pairs = [
            f"{a}/{b}"
            for a, b in (("(a)", "(b)"), ("(a)", "(b0)"), ("(a)", "(c)"))
            if a in rate and b in rate
        ]
        for pair in pairs:
            a, b = pair.split("/")
            rates.setdefault(pair, []).append(rate[a] / rate[b])
            cpus.setdefault(pair, []).append(cpu[b] / cpu[a])
        if len(rounds) > 1:
            print(f"round {number}: " + ", ".join(f"{pair} = {rates[pair][-1]:.2f}" for pair in pairs))
    median = "median over rounds, " if len(rounds) > 1 else ""
    print(f"\nratios of images/s ({median}same run): " + _ratios(rates))
    print(f"ratios of CPU per image (b/a, c/a; {median}same run): " + _ratios(cpus))
    load = os.getloadavg()[0]
    print(f"targets: (a)/(b) >= 1.5, (a)/(c) >= 0.9; load average now {load:.1f} on {os.cpu_count()} cores")


def _ratios(values: dict[str, list[float]]) -> str:
    return ", ".join(f"{k} = {statistics.median(v):.2f}" for k, v in values.items())


if __name__ == "__main__":
    main()

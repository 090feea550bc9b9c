"""Peak memory of a scan whose every row is hostile, against the bound its settings imply.

    python benchmarks/bench_hostile_memory.py [--rows 3000] [--settings 16x2 64x2 64x8] [--workers 2]
                                              [--timeout 1.0]

Each setting `ROWSxMIB` (run.rows_in_flight x fetch.max_bytes in MiB) runs the real `scanner scan` command in
a subprocess over one Parquet shard whose rows cycle through `hostile()` (bodies at the byte cap, endless
bodies, gzip bombs, tricklers, sleepers, a pixel-bomb PNG, a GIF over the frame cap, a PNG at the pixel cap,
huge headers, redirect loops), served on 127.0.0.1 by the hostile server of the tests (tests/loopback.py),
after a benign scan of small JPEGs with the same settings, which gives the fixed overhead. Every row's outcome
is checked against what its attack must give ("cut": rows the total deadline stopped first, because one
Python server streams many big bodies slowly). Peak RSS is each process's own high-water mark (VmHWM in
/proc, exact however short the peak) for the main process and its children (hashing workers and
multiprocessing's resource tracker); their sum, "total", bounds the tree's simultaneous peak from above.
Linux only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from scanner.runners.hashpool import bodies_per_batch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from loopback import LoopbackServer, tiny_jpeg  # noqa: E402  (the tests' hostile server)

MIB = 1 << 20
SAMPLE_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class Settings:
    """The settings that bound a scan's memory, plus the deadline that bounds its time."""

    rows_in_flight: int = 16
    max_bytes: int = 2 * MIB
    workers: int = 2
    max_pixels: int = 4_000_000
    max_frames: int = 50
    total_timeout: float = 1.0
    rows_per_unit: int = 500

    def toml(self) -> str:
        """The config file of a scan with these settings (loopback allowed: the server is ours)."""
        return (
            "[fetch]\nallow_private_networks = true\nmax_retries = 0\n"
            f"max_bytes = {self.max_bytes}\ntotal_timeout = {self.total_timeout}\n"
            f"max_in_flight = {self.rows_in_flight}\nmax_per_host = {self.rows_in_flight}\n"
            f"[hashing]\nmax_pixels = {self.max_pixels}\nmax_frames = {self.max_frames}\n"
            f"[source]\nrows_per_unit = {self.rows_per_unit}\n"
            f"[run]\nrows_in_flight = {self.rows_in_flight}\nworkers = {self.workers}\n"
        )


def hostile(settings: Settings) -> dict[str, tuple[str, str]]:
    """Path on the hostile server -> the (outcome, reason) a scan with these settings must give it."""
    return {
        f"/huge?length={settings.max_bytes}": ("invalid", "not_an_image"),  # the largest body let through
        "/huge": ("invalid", "body_too_large"),  # endless, no Content-Length
        f"/gzipbomb?size={32 * settings.max_bytes}": ("invalid", "decompression_bomb"),  # 32x the cap
        "/trickle": ("dead", "timeout"),  # one byte a second
        "/slow": ("dead", "timeout"),  # answers after 30 s
        "/bomb.png": ("invalid", "too_many_pixels"),  # small on the wire, 4x the pixel cap decoded
        "/frames.gif": ("invalid", "too_many_frames"),
        "/pixels.png": ("clean", None),  # the largest image the pixel cap lets through, decoded in full
        "/headers-huge": ("invalid", "headers_too_large"),
        "/loop": ("dead", "redirect_loop"),
    }


def hostile_files(settings: Settings) -> dict[str, tuple[bytes, str]]:
    """The image bodies the hostile paths name."""
    side = int(settings.max_pixels**0.5)
    return {
        "/bomb.png": (zeros_png(2 * side, 2 * side, colour=False), "image/png"),
        "/pixels.png": (zeros_png(side, side, colour=True), "image/png"),
        "/frames.gif": (animated_gif(settings.max_frames + 10), "image/gif"),
    }


def zeros_png(width: int, height: int, *, colour: bool) -> bytes:
    """A black PNG streamed row by row through zlib: a few KiB on the wire for any size."""
    channels, kind = (3, 2) if colour else (1, 0)
    encoder = zlib.compressobj(9)
    row = bytes(1 + width * channels)
    data = b"".join(encoder.compress(row) for _ in range(height)) + encoder.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, kind, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def animated_gif(frames: int) -> bytes:
    """A tiny GIF of that many frames, alternating colours so that none is merged away."""
    images = [Image.new("L", (2, 2), 255 * (i % 2)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=20, loop=0)
    return buffer.getvalue()


def write_shard(path: Path, server: LoopbackServer, paths: list[str], rows: int) -> None:
    """A Parquet shard of rows cycling through paths, each URL distinct."""
    urls = [server.url(paths[i % len(paths)]) for i in range(rows)]
    urls = [f"{url}{'&' if '?' in url else '?'}i={i}" for i, url in enumerate(urls)]
    keys = [f"r{i}" for i in range(rows)]
    pq.write_table(pa.table({"key": keys, "url": urls}), path, row_group_size=1000)


def write_list(path: Path) -> None:
    """A synthetic list with exact and perceptual entries, so that workers decode every image."""
    path.write_text("hash_type,hash,id\nmd5," + "0" * 32 + ",synthetic-1\npdq," + "f" * 64 + ",synthetic-2\n")


@dataclass(slots=True)
class TreePeak:
    """Peak resident memory of a process and its descendants, from /proc, sampled in a thread."""

    pid: int
    peaks: dict[int, int] = field(default_factory=dict)  # pid -> VmHWM in bytes, last read
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        """Read each live process's high-water mark. The latest reading wins, not the largest: a child caught
        between fork and exec still shows its parent's pages, and exec starts its mark afresh."""
        for pid in descendants(self.pid):
            peak = high_water_mark(pid)
            if peak is not None:
                self.peaks[pid] = peak

    @contextmanager
    def watching(self) -> Iterator[TreePeak]:
        """Sample every SAMPLE_SECONDS until the block ends."""
        thread = threading.Thread(target=self._run, name="tree-peak", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()


def descendants(pid: int) -> list[int]:
    """pid and every process below it (children of any of its threads), as long as they exist."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    queue.extend(int(child) for child in handle.read().split())
            except OSError:
                continue
    return found


def high_water_mark(pid: int) -> int | None:
    """The process's peak resident set (VmHWM) in bytes, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measured scan: its size, peaks in bytes (main, each child), speed and report directory."""

    rows: int
    settings: Settings
    main: int
    children: tuple[int, ...]
    rows_per_second: float
    out: Path

    @property
    def total(self) -> int:
        return self.main + sum(self.children)

    def outcomes(self) -> list[dict]:
        """The scan's outcomes.parquet rows."""
        return pq.read_table(self.out / "outcomes.parquet", columns=["url", "outcome", "reason"]).to_pylist()


def measured_scan(
    workdir: Path, server: LoopbackServer, paths: list[str], rows: int, settings: Settings
) -> Measurement:
    """Run `scanner scan` over a shard of rows cycling through paths and measure its process tree."""
    workdir.mkdir(parents=True, exist_ok=True)
    shard, listfile, config, out = (workdir / n for n in ("shard.parquet", "list.csv", "scan.toml", "out"))
    write_shard(shard, server, paths, rows)
    write_list(listfile)
    config.write_text(settings.toml())
    command = [sys.executable, "-m", "scanner", "scan", str(shard), "--hashlist", f"synthetic={listfile}"]
    command += ["--config", str(config), "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    with TreePeak(process.pid).watching() as peak:
        _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"scan failed ({process.returncode}): {stderr}")
    summary = json.loads((out / "summary.json").read_text())
    children = tuple(sorted((v for pid, v in peak.peaks.items() if pid != process.pid), reverse=True))
    return Measurement(
        rows, settings, peak.peaks.get(process.pid, 0), children, summary["rows_per_second"], out
    )


DEADLINE = ("dead", "timeout")


def unexpected(measurement: Measurement, expected: dict[str, tuple[str, str | None]]) -> list[dict]:
    """Rows whose (outcome, reason) is not what their path must give: the attack did not happen as meant."""

    def path_of(url: str) -> str:
        path = "/" + url.split("/", 3)[3]
        return path.rsplit("?i=", 1)[0].rsplit("&i=", 1)[0]

    return [r for r in measurement.outcomes() if expected[path_of(r["url"])] != (r["outcome"], r["reason"])]


def memory_bound(settings: Settings, benign: Measurement) -> int:
    """What the settings allow on top of a benign scan's peak with the same settings (docs/hostile-input.md).

    Live bytes, unit workers (the coordinator holds no body): every row in flight holds at most one body
    (max_bytes; run.rows_in_flight is shared among the workers), each worker's event loop joins one body's
    chunks at a time (+1) and its pool's feeder thread pickles one batch (+B: hashpool.bodies_per_batch).
    Each hashing worker: one batch pickled and unpickled (2 x B bodies) and one decoded first frame at the
    pixel cap (Pillow's RGB frame, a grey copy and scratch: 8 bytes a pixel at most). Doubled for the
    allocator: glibc
    serves freed multi-MiB blocks from its heap, where they stay resident (measured: up to 1.8x live bytes).
    """
    batch = min(bodies_per_batch(settings.max_bytes), settings.rows_in_flight)
    main = (settings.rows_in_flight + settings.workers * (1 + batch)) * settings.max_bytes
    worker = 2 * batch * settings.max_bytes + 8 * settings.max_pixels
    return benign.total + 2 * (main + settings.workers * worker)


BENIGN = {"/ok.jpg": ("clean", None)}


def run(rows: int, settings: Settings, workdir: Path) -> tuple[Measurement, Measurement, int]:
    """The benign baseline and the hostile scan with the same settings, each checked row by row, and how
    many hostile rows the total deadline cut before their attack completed (the loopback server is slow to
    stream many big bodies at once); any other surprise is an error."""
    files = {**hostile_files(settings), "/ok.jpg": (tiny_jpeg(), "image/jpeg")}
    with LoopbackServer(files) as server:
        benign = measured_scan(workdir / "benign", server, list(BENIGN), rows, settings)
        attack = measured_scan(workdir / "hostile", server, list(hostile(settings)), rows, settings)
    wrong = unexpected(benign, BENIGN) + unexpected(attack, hostile(settings))
    cut = [r for r in wrong if (r["outcome"], r["reason"]) == DEADLINE]
    if len(cut) < len(wrong):
        example = next(r for r in wrong if r not in cut)
        raise RuntimeError(f"{len(wrong) - len(cut)} rows did not get their expected outcome, e.g. {example}")
    return benign, attack, len(cut)


def parse_setting(text: str, workers: int, timeout: float) -> Settings:
    """ROWSxMIB -> Settings."""
    in_flight, _, mib = text.partition("x")
    return Settings(int(in_flight), int(float(mib) * MIB), workers, total_timeout=timeout)


def table_line(name: str, m: Measurement, bound: int | None = None, cut: int | None = None) -> str:
    mib = [f"{c / MIB:.0f}" for c in m.children]
    optional = ["" if v is None else f"{v:.0f}" for v in (None if bound is None else bound / MIB, cut)]
    return (
        f"{m.rows:5d}  {m.settings.rows_in_flight:9d}  {m.settings.max_bytes / MIB:7.0f}  "
        f"{m.settings.workers:7d}  {name:7s}  {m.main / MIB:8.0f}  {'+'.join(mib):>16s}  "
        f"{m.total / MIB:9.0f}  {optional[0]:>9s}  {m.rows_per_second:6.0f}  {optional[1]:>4s}"
    )


HEADER = (
    f"{'rows':>5s}  in_flight  max_MiB  workers  scan     main_MiB  {'children_MiB':>16s}  total_MiB  "
    "bound_MiB  rows/s   cut"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=3000, help="rows per scan (default 3000)")
    parser.add_argument("--settings", nargs="+", default=["16x2", "64x2", "64x8"], help="ROWSxMIB each")
    parser.add_argument("--workers", type=int, default=2, help="hashing workers (default 2)")
    parser.add_argument("--timeout", type=float, default=1.0, help="fetch.total_timeout (default 1 s)")
    args = parser.parse_args()
    print(HEADER)
    print("-" * len(HEADER))
    with tempfile.TemporaryDirectory() as tmp:
        for text in args.settings:
            settings = parse_setting(text, args.workers, args.timeout)
            benign, attack, cut = run(args.rows, settings, Path(tmp) / text)
            print(table_line("benign", benign))
            print(table_line("hostile", attack, memory_bound(settings, benign), cut), flush=True)


if __name__ == "__main__":
    main()

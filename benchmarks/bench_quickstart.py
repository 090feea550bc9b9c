"""Quick start: time from `scanner scan` to the server's first request, with a 10M-entry PDQ list.

    python benchmarks/bench_quickstart.py [--list-size 10000000] [--rows 200] [--repeat 3] [--workers N]
                                          [--tree OTHER_CHECKOUT ...]

In a temporary directory: a plain-text PDQ list of `--list-size` random hashes (one picture planted), a URL
list, and a Parquet shard of `--rows` URLs on a loopback server (127.0.0.1 only) that serves a few
pictures and notes when its first request arrives. Each round runs the scan twice, as a user runs it:
"lists first" (run.lists_first = true: every list loaded and indexed before any request, the old order)
and "quick start" (the default: URL lists first, the PDQ list loaded and indexed while rows are fetched).
It prints, per mode, the median over rounds of the time from process start to the first request and to
the scan's end, checks both modes found the same matches, and how long loading and indexing the lists
takes in one process. Target (issue 16): first request <= 2 s on a warm machine.

--tree runs the same scans with another checkout of the scanner too (PYTHONPATH), in turn with this one in
every round, so that a before/after comparison shares the inputs, the machine and its load.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
PICTURES = 8
MODES = {"lists first": True, "quick start": False}


def picture(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((640, 480))
    ImageDraw.Draw(image).ellipse((100, 100, 300, 300), fill=(int(seed * 30 % 256), 40, 200))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


class Server(ThreadingHTTPServer):
    """Serves /<n>.jpg and notes the monotonic time of the first request since reset()."""

    def __init__(self, bodies: list[bytes]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.bodies = bodies
        self.first: float | None = None
        self.lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.first = None


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        with self.server.lock:
            if self.server.first is None:
                self.server.first = time.monotonic()
        name = self.path.split("?")[0].strip("/").removesuffix(".jpg")
        body = self.server.bodies[int(name) % len(self.server.bodies)] if name.isdigit() else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def write_inputs(work: Path, size: int, rows: int, port: int, bodies: list[bytes]) -> list[str]:
    """The PDQ list (picture 0 planted last), the URL list (row 1's URL), the shard: the --hashlist specs."""
    sys.path.insert(0, str(REPO))
    from scanner.hashing import hash_image

    planted = hash_image(bodies[0], frozenset({"pdq"})).pdq
    rng = np.random.default_rng(5)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    with open(work / "pdq.txt", "wb") as handle:
        for start in range(0, size - 1, 1_000_000):
            raw = rng.integers(0, 256, (min(1_000_000, size - 1 - start), 32), dtype=np.uint8)
            text = np.empty((len(raw), 65), dtype=np.uint8)
            text[:, 0:64:2], text[:, 1:64:2], text[:, 64] = digits[raw >> 4], digits[raw & 15], ord("\n")
            handle.write(text.tobytes())
        handle.write(planted.hex().encode() + b"\n")
    urls = [f"http://127.0.0.1:{port}/{r % len(bodies)}.jpg?r={r}" for r in range(rows)]
    (work / "urls.txt").write_text(f"{urls[1]}\nhttp://example.com/listed.jpg\n")
    pq.write_table(pa.table({"url": urls}), work / "shard.parquet")
    return [f"pdq=pdq:{work / 'pdq.txt'}", f"urls=url:{work / 'urls.txt'}"]


def run_scan(
    work: Path, specs: list[str], server: Server, mode: str, workers: int | None, tree: Path = REPO
) -> tuple:
    """(seconds to the first request, seconds to the end, the matches found) for one scan by the scanner
    in `tree`."""
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    config = work / "config.toml"
    config.write_text(f"[run]\nlists_first = {'true' if MODES[mode] else 'false'}\n")
    argv = [sys.executable, "-m", "scanner", "scan", str(work / "shard.parquet"), "--out", str(out)]
    argv += ["--config", str(config), "--allow-private-networks", "--quiet"]
    argv += [arg for spec in specs for arg in ("--hashlist", spec)]
    argv += ["--workers", str(workers)] if workers else []
    env = {**os.environ, "PYTHONPATH": str(tree)}
    server.reset()
    started = time.monotonic()
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
    ended = time.monotonic()
    if done.returncode != 0:
        raise SystemExit(f"{mode}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    if server.first is None:
        raise SystemExit(f"{mode}: no request reached the server")
    matches = sorted(
        (record["row"], record["list"])
        for record in map(json.loads, (out / "matches.jsonl").read_text().splitlines())
    )
    return server.first - started, ended - started, matches


def list_load_times(specs: list[str]) -> str:
    """Loading and indexing the lists in one process, as the coordinator does, step by step."""
    code = (
        "import time, sys\n"
        "t = time.perf_counter()\n"
        "from scanner.lists import load_hashlist, Matcher\n"
        "from scanner.lists.deferred import deferred\n"
        "from scanner.lists import ListSpec\n"
        "t1 = time.perf_counter()\n"
        "d = deferred(ListSpec.parse(sys.argv[1]), digest_now=False)\n"
        "t2 = time.perf_counter()\n"
        "d = deferred(ListSpec.parse(sys.argv[1]))\n"
        "t3 = time.perf_counter()\n"
        "hl = load_hashlist(sys.argv[1])\n"
        "t4 = time.perf_counter()\n"
        "Matcher.from_lists([hl]).rest()\n"
        "t5 = time.perf_counter()\n"
        "print(f'imports {t1 - t:.2f} s, sniff (before a fresh run\\'s first request) {t2 - t1:.2f} s, '\n"
        "      f'sniff + digest (before a resumed run\\'s) {t3 - t2:.2f} s, load {t4 - t3:.2f} s, '\n"
        "      f'index {t5 - t4:.2f} s')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code, specs[0]], env=env, capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()[-300:]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--list-size", type=int, default=10_000_000, help="PDQ list entries (default 10M)")
    parser.add_argument("--rows", type=int, default=200, help="rows in the shard (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, each mode once a round (default 3)")
    parser.add_argument("--workers", type=int, default=None, help="scanner --workers (default: its own)")
    parser.add_argument("--workdir", help="keep the inputs here (default: a temporary directory)")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        type=Path,
        help="another checkout of the scanner to time in turn with this one (repeatable; default: none)",
    )
    args = parser.parse_args()
    trees = {"": REPO, **{f" [{tree.name}]": tree.resolve() for tree in args.tree}}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-quickstart-"))
    work.mkdir(parents=True, exist_ok=True)
    bodies = [picture(n) for n in range(PICTURES)]
    server = Server(bodies)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.perf_counter()
        specs = write_inputs(work, args.list_size, args.rows, server.server_address[1], bodies)
        took = time.perf_counter() - started
        print(f"inputs: {args.list_size:,} PDQ + 2 URLs, {args.rows} rows ({took:.0f} s)")
        print(f"lists in one process: {list_load_times(specs)}", flush=True)
        results: dict[str, list[tuple]] = {mode + name: [] for name in trees for mode in MODES}
        for round_ in range(args.repeat):
            for name, tree in trees.items():  # in turn, so a noisy spell falls on one round, not one mode
                for mode in MODES:
                    results[mode + name].append(run_scan(work, specs, server, mode, args.workers, tree))
                    first, end, _ = results[mode + name][-1]
                    print(
                        f"  round {round_ + 1} {mode + name}: first request {first:.2f} s, done {end:.2f} s",
                        flush=True,
                    )
        report(results, args.rows)
    finally:
        server.shutdown()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, list[tuple]], rows: int) -> None:
    found = {mode: {tuple(map(tuple, r[2])) for r in runs} for mode, runs in results.items()}
    if len(set().union(*found.values())) != 1:
        raise SystemExit(f"the modes found different matches: {found}")
    width = max(len(mode) for mode in results)
    print(f"\n| {'mode':<{width}} | first request s | scan of {rows} rows s |")
    print(f"|{'-' * (width + 2)}|-----------------|" + "-" * (len(str(rows)) + 16) + "|")
    for mode, runs in results.items():
        first = statistics.median(r[0] for r in runs)
        end = statistics.median(r[1] for r in runs)
        print(f"| {mode:<{width}} | {first:15.2f} | {end:{len(str(rows)) + 14}.2f} |")
    matches = next(iter(found["quick start"]))
    print(f"same matches in every run: {len(matches)} rows {list(matches)[:6]}")
    load = os.getloadavg()[0]
    print(
        f"target: first request <= 2 s (median over {len(next(iter(results.values())))} rounds); "
        f"load average now {load:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()

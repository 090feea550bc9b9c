"""The offline demo: generated images served on 127.0.0.1, a LAION-style shard of their URLs, a real scan."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from scanner import procguard
from scanner.audits.expand import ExpandSettings, expand
from scanner.cli.common import run_with_guard
from scanner.cli.outputs import prepare_dir
from scanner.cli.pictures import encode, make_image
from scanner.config import build_config
from scanner.errors import ConfigError
from scanner.hashing import hash_image
from scanner.outcomes import SeedSource, Verdict
from scanner.reports import verdicts
from scanner.reports.files import atomic_open, private_dir
from scanner.reports.html import write_html_report
from scanner.reports.writer import refresh_digests
from scanner.run.checkpoint import own_dir
from scanner.run.lifecycle import ScanResult
from scanner.run.reportlock import report_lock

FORMATS = ("JPEG", "PNG", "WEBP")
MAX_IMAGES = 10_000
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, str, bytes, dict[str, str]]]] = {}

    def do_GET(self) -> None:
        status, content_type, body, headers = self.routes.get(
            self.path, (404, "text/plain", b"not found", {})
        )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the demo's terminal clean."""


@contextmanager
def serve(routes: dict[str, tuple[int, str, bytes, dict[str, str]]]) -> Iterator[str]:
    """Serve fixed routes on 127.0.0.1 on a free port; yield the base URL."""
    handler = type("DemoHandler", (_Handler,), {"routes": routes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def demo_routes(images: int) -> tuple[dict, list[str], list[bytes]]:
    """Images in three formats plus the usual failures: missing, erroring, redirected, lying, truncated."""
    routes: ClassVar[dict[str, tuple[int, str, bytes, dict[str, str]]]] = {}
    paths, bodies = [], []
    for i in range(images):
        fmt = FORMATS[i % len(FORMATS)]
        body = encode(make_image(i), fmt)
        path = f"/img/{i:05d}.{fmt.lower()}"
        routes[path] = (200, CONTENT_TYPES[fmt], body, {})
        paths.append(path)
        bodies.append(body)
    routes["/gone.jpg"] = (410, "text/plain", b"gone", {})
    routes["/error.jpg"] = (500, "text/plain", b"error", {})
    routes["/moved.jpg"] = (301, "text/plain", b"", {"Location": paths[0]})
    routes["/page.jpg"] = (200, "image/jpeg", b"<!doctype html><html><body>not an image</body></html>", {})
    routes["/truncated.jpg"] = (200, "image/jpeg", bodies[0][: len(bodies[0]) // 3], {})
    extra = ["/gone.jpg", "/error.jpg", "/missing.jpg", "/moved.jpg", "/page.jpg", "/truncated.jpg"]
    return routes, paths + extra, bodies


def write_demo_list(path: Path, bodies: list[bytes]) -> None:
    """A synthetic list, NOT REAL: one exact MD5 and one PDQ of a re-encoded, resized copy."""
    exact = hashlib.md5(bodies[3]).hexdigest()
    original = Image.open(io.BytesIO(bodies[7])).convert("RGB")
    altered = encode(original.resize((400, 300)), "JPEG", quality=60)
    near = hash_image(altered, frozenset({"pdq"})).pdq.hex()
    with atomic_open(path, "w") as handle:
        handle.write("hash_type,hash,id,category\n")
        handle.write(f"md5,{exact},demo-0001,demo-not-real\n")
        handle.write(f"pdq,{near},demo-0002,demo-not-real\n")


def write_demo_shard(path: Path, base: str, paths: list[str]) -> None:
    """A LAION-400M style shard: SAMPLE_ID, URL, TEXT, plus an empty URL and a file: URL."""
    urls = [base + p for p in paths] + ["", "file:///etc/passwd"]
    table = pa.table(
        {
            "SAMPLE_ID": list(range(len(urls))),
            "URL": urls,
            "TEXT": [f"demo caption {i}" for i in range(len(urls))],
        }
    )
    with atomic_open(path) as handle:
        pq.write_table(table, handle, row_group_size=32)


def run_demo(out: str, images: int = 60, quiet: bool = False) -> ScanResult:
    """Build the demo inputs inside out/, serve them on loopback, and scan them with the real pipeline."""
    if not 1 <= images <= MAX_IMAGES:
        raise ConfigError(f"--images must be from 1 to {MAX_IMAGES:,}, not {images}")
    procguard.harden()  # no core dump, not dumpable, before the images it makes and serves exist
    out_dir = private_dir(prepare_dir(out))
    # The scan's lock, taken before demo-input/ is written (the scan re-enters it): a second demo into the
    # same --out is refused before it writes anything.
    with report_lock(out_dir, "demo"):
        return _build_and_scan(out_dir, images, quiet)


def _build_and_scan(out_dir: Path, images: int, quiet: bool) -> ScanResult:
    inputs = own_dir(out_dir / "demo-input")  # a planted link there is refused, its target left alone
    routes, paths, bodies = demo_routes(max(images, 8))
    add_near_copy(routes, paths, bodies)
    write_demo_list(inputs / "demo-NOT-REAL.csv", bodies)
    plant_flood(routes, paths, inputs / "demo-NOT-REAL.csv")
    with serve(routes) as base:
        write_demo_shard(inputs / "demo-shard-00000.parquet", base, paths)
        config = build_config(
            {
                "inputs": [str(inputs / "demo-shard-00000.parquet")],
                "out": str(out_dir),
                "hashlist": [f"demo={inputs / 'demo-NOT-REAL.csv'}"],
                "fetch": {"allow_private_networks": True},
                "source": {"rows_per_unit": 32},
                "review": {"flood_rows": FLOOD_COPIES - 1},
                "audit": {"keep_hashes": True},  # the stored hashes the expansion searches
            },
            "demo",
        )
        result = run_with_guard(config, restart=True, quiet=quiet)
    show_expansion(out_dir, config.match)
    record_demo_verdict(out_dir)
    return result


FLOOD_COPIES = 5


def plant_flood(routes: dict, paths: list[str], list_path: Path) -> None:
    """One picture served at several URLs and a list entry for it (demo-0003): a flood, as a bad entry
    that matches far too many rows shows in the report."""
    picture = make_image(999_999)
    for i in range(FLOOD_COPIES):
        body = encode(picture.resize((480 - 40 * i, 360 - 30 * i)), "JPEG")
        routes[f"/popular/{i}.jpg"] = (200, CONTENT_TYPES["JPEG"], body, {})
        paths.append(f"/popular/{i}.jpg")
    pdq = hash_image(encode(picture, "PNG"), frozenset({"pdq"})).pdq.hex()
    with open(list_path, "a", encoding="utf-8") as handle:
        handle.write(f"pdq,{pdq},demo-0003,demo-not-real\n")


def record_demo_verdict(out_dir: Path) -> None:
    """A reviewer's verdict on the exact match (demo-0001), as `scanner review import` records one, and
    the report written again to show it."""
    from scanner.reports.html import write_html_report
    from scanner.reports.verdicts import matched_rows
    from scanner.reports.writer import refresh_digests

    with open(out_dir / "matches.jsonl", encoding="utf-8") as handle:
        exact = next((m for m in map(json.loads, handle) if m["entry_id"] == "demo-0001"), None)
    if exact is None:
        return
    row = matched_rows(out_dir)[exact["shard"], exact["row"]]
    record = {"shard": row.shard, "row": row.row, "url_sha256": row.url_sha256, "key": row.key}
    note = "demo: a verdict as `scanner review import` records it"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    verdicts.append(
        out_dir,
        [{**record, "verdict": Verdict.CONFIRMED, "note": note, "operator": "demo", "recorded_at": stamp}],
    )
    refresh_digests(out_dir, [write_html_report(out_dir).name])


def add_near_copy(routes: dict, paths: list[str], bodies: list[bytes]) -> None:
    """A smaller, recompressed copy of the image the demo list names by MD5: no list entry matches it, but
    its stored hashes lie near that row's, so the demo's expansion finds it."""
    original = Image.open(io.BytesIO(bodies[3])).convert("RGB")
    routes["/near-copy.jpg"] = (200, "image/jpeg", encode(original.resize((240, 180)), "JPEG", 70), {})
    paths.append("/near-copy.jpg")


def show_expansion(out_dir: Path, match) -> None:
    """One `scanner expand --from match`: rows near the demo's matches, in expanded.jsonl and report.html."""
    thresholds = {"pdq": match.pdq_threshold, "phash": match.phash_threshold, "dhash": match.dhash_threshold}
    found = expand(out_dir, ExpandSettings(SeedSource.MATCH, thresholds, match.pdq_min_quality))
    page = write_html_report(out_dir)
    refresh_digests(out_dir, [found.path.name, page.name])

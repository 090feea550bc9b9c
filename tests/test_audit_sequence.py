"""The audit cycle through the CLI on loopback: scan --keep-hashes, list update, rematch, rescan, clean."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from audit_support import images, outcomes, write_shard
from images import encode
from loopback import LoopbackServer
from PIL import Image

from scanner.hashing import hash_image
from scanner.reports.verify import verify_report

IMAGES = 24


@pytest.fixture
def cli(scanner_cli: Callable[..., subprocess.CompletedProcess]) -> Callable[..., str]:
    """A scanner command run as a user would, which must succeed; it gives its standard output."""

    def run(*args: str) -> str:
        done = scanner_cli(*args, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


def typed_list(path: Path, entries: list[tuple[str, str]]) -> Path:
    path.write_text("hash_type,hash,id\n" + "".join(f"{t},{h},{t}-{i}\n" for i, (t, h) in enumerate(entries)))
    return path


def near_copy_pdq(body: bytes) -> str:
    copy = Image.open(io.BytesIO(body)).convert("RGB").resize((120, 90))
    return hash_image(encode(copy, "JPEG", quality=60), frozenset({"pdq"})).pdq.hex()


def test_scan_update_rematch_rescan_clean(tmp_path: Path, cli: Callable[..., str]) -> None:
    bodies = images(IMAGES + 2)
    files = {f"/i/{n}.jpg": bodies[n] for n in range(IMAGES)}
    files["/page.jpg"] = (b"<!doctype html><p>moved</p>", "image/jpeg")
    md5 = [hashlib.md5(body).hexdigest() for body in bodies]
    figures: dict[str, dict] = {}
    with LoopbackServer(files) as server, LoopbackServer({"/x.jpg": bodies[IMAGES]}, host="127.0.0.2") as far:
        urls = [server.url(f"/i/{n}.jpg") for n in range(IMAGES)]
        urls += [
            server.url("/status/404"),
            server.url("/page.jpg"),
            server.url(f"/redirect-to?url={urls[3]}"),
        ]
        urls += [far.url("/x.jpg"), server.url(f"/redirect-to?url={far.url('/x.jpg')}")]
        shard = write_shard(
            tmp_path / "shard.parquet", {"url": urls, "key": [f"k{i}" for i in range(len(urls))]}
        )
        v1 = [("md5", md5[0]), ("md5", md5[1]), ("pdq", near_copy_pdq(bodies[2])), ("url", urls[5])]
        v1 += [("domain", "127.0.0.2")]
        typed_list(tmp_path / "v1.csv", v1)
        common = ["--allow-private-networks", "--workers", "1", "--quiet"]
        scan_out, rematch_out, rescan_out = (tmp_path / name for name in ("scan", "rematch", "rescan"))
        cli(
            "scan",
            str(shard),
            "--hashlist",
            f"list={tmp_path / 'v1.csv'}",
            "--keep-hashes",
            "--out",
            str(scan_out),
            *common,
        )
        assert server.hits("/i/5.jpg") == 0 and far.total_hits == 0
        figures["scan"] = summary_figures(scan_out)

        # The list holder adds two image digests and a URL; the earlier records are matched again offline.
        typed_list(tmp_path / "v2.csv", [*v1, ("md5", md5[7]), ("md5", md5[8]), ("url", urls[9])])
        v2 = f"list={tmp_path / 'v2.csv'}"
        hits = server.total_hits
        cli("rematch", str(scan_out), "--hashlist", v2, "--out", str(rematch_out), "--quiet")
        assert server.total_hits == hits
        figures["rematch"] = summary_figures(rematch_out)

        # Later: a matched image is taken down, another row's image goes away, one is replaced, then a rescan.
        del server.files["/i/0.jpg"], server.files["/i/11.jpg"]
        server.files["/i/12.jpg"] = (bodies[IMAGES + 1], "image/jpeg")
        server.reset_hits()
        cli("rescan", str(scan_out), "--hashlist", v2, "--out", str(rescan_out), *common)
        methods = {
            path: [m for m, p, _ in server.requests() if p == path]
            for path in ("/i/1.jpg", "/i/7.jpg", "/i/9.jpg")
        }
        assert methods == {"/i/1.jpg": ["HEAD"], "/i/7.jpg": ["HEAD"], "/i/9.jpg": []}
        assert far.total_hits == 0
        figures["rescan"] = summary_figures(rescan_out)

    clean_out = tmp_path / "clean"
    printed = cli(
        "clean", str(shard), "--report", str(rescan_out), "--out", str(clean_out), "--drop", "match,dead"
    )
    assert "29 rows, 11 removed" in printed
    kept = pq.read_table(clean_out / "shard.parquet").column("key").to_pylist()
    removed = pq.read_table(clean_out / "removed.parquet").to_pylist()
    figures["clean"] = {"rows": len(urls), "kept": len(kept), "removed": len(removed)}
    print(json.dumps(figures, indent=1))

    assert figures["scan"]["outcomes"] == {"match": 6, "clean": 21, "dead": 1, "invalid": 1, "blocked": 0}
    assert figures["scan"]["by_hash_type"] == {"domain": 2, "md5": 2, "pdq": 1, "url": 1}
    assert figures["rematch"]["by_hash_type"] == {"domain": 2, "md5": 4, "pdq": 1, "url": 2}
    assert figures["rematch"]["matched_rows"] == 9
    assert figures["rescan"]["matched_rows"] == 8  # the taken-down match is dead now
    assert figures["rescan"]["outcomes"] == {
        "match": 8,
        "clean": 16,
        "dead": 3,
        "invalid": 1,
        "blocked": 0,
        "changed": 1,
    }
    assert figures["rescan"]["changes"] == {
        "newly_dead": 2,
        "newly_live": 0,
        "new_matches": 3,
        "matches_back": 0,
        "matches_gone": 1,
        "content_changed": 1,
        "not_modified": 17,
        "liveness_only": 6,
    }
    assert figures["clean"] == {"rows": 29, "kept": 18, "removed": 11}
    assert set(kept) == {f"k{i}" for i, o in enumerate(outcomes(rescan_out)) if o not in ("match", "dead")}
    assert all(verify_report(d).ok for d in (scan_out, rematch_out, rescan_out))


def summary_figures(out: Path) -> dict:
    """The figures the closing note quotes: outcomes, matches by hash type, matched rows, changes."""
    summary = json.loads((out / "summary.json").read_text())
    base = ("match", "clean", "dead", "invalid", "blocked")
    figures = {
        "outcomes": {k: summary["outcomes"][k] for k in base},
        "by_hash_type": summary["matches"]["by_hash_type"],
        "matched_rows": summary["matches"]["rows"],
    }
    extra = {k: v for k, v in summary["outcomes"].items() if k not in base and v}
    figures["outcomes"].update(extra)
    if "changes" in summary:
        figures["changes"] = {k: v for k, v in summary["changes"].items() if k != "previous"}
    return figures

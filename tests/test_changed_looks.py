"""`changed` rows beside the dataset's own perceptual hash: the distance kept per row, near-identical ones
counted in summary.json, the CLI summary and report.html (docs/datasets.md)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
from audit_support import run_scan, write_list, write_shard
from images import encode, make_image
from loopback import LoopbackServer

from scanner.hashing import hash_image
from scanner.reports.verify import verify_report

PICTURE = make_image(41, (320, 240))
ORIGINAL = encode(PICTURE, "JPEG", quality=90)
REENCODED = encode(PICTURE, "JPEG", quality=55)  # other bytes, the same picture
REPLACED = encode(make_image(42, (320, 240)), "JPEG", quality=90)  # another picture at the URL


def phash(body: bytes) -> str:
    return hash_image(body, frozenset({"phash"})).phash.hex()


def test_changed_rows_carry_their_distance_and_near_identical_ones_are_counted(tmp_path: Path, scanner_cli):
    served = {"/same.jpg": ORIGINAL, "/reencoded.jpg": REENCODED, "/replaced.jpg": REPLACED}
    claimed_sha = hashlib.sha256(ORIGINAL).hexdigest()
    near = (int(phash(REENCODED), 16) ^ int(phash(ORIGINAL), 16)).bit_count()
    far = (int(phash(REPLACED), 16) ^ int(phash(ORIGINAL), 16)).bit_count()
    assert near <= 8 < far  # the pictures do what the test needs
    hashlist = write_list(tmp_path / "list.txt", ["0" * 32])
    with LoopbackServer(served) as server:
        paths = ["/same.jpg", "/reencoded.jpg", "/replaced.jpg", "/reencoded.jpg"]
        shard = write_shard(
            tmp_path / "shard.parquet",
            {
                "url": [server.url(p) for p in paths],
                "sha256": [claimed_sha] * 4,
                "image_phash_ih": [phash(ORIGINAL)] * 3 + [None],  # the last row has no pHash to compare
            },
        )
        out = tmp_path / "out"
        columns = ["--match-column", "sha256=sha256", "--match-column", "image_phash_ih=phash"]
        flags = ["--hashlist", f"md5:{hashlist}", "--out", str(out), "--allow-private-networks"]
        done = scanner_cli("scan", str(shard), *flags, *columns, "--workers", "1")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out / "outcomes.parquet").to_pydict()
    assert table["outcome"] == ["clean", "changed", "changed", "changed"]
    assert table["reason"] == [None, "near_identical", "looks_different", None]
    assert table["perceptual_distance"] == [None, near, far, None]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["changed_looks"] == {"rows": 3, "compared": 2, "within_threshold": 1}
    assert "changed: 3 rows, 1 of 2 compared near-identical to the dataset's perceptual hash" in done.stdout
    html = (out / "report.html").read_text()
    assert "Changed, near-identical" in html and "1 of 2" in html
    assert verify_report(out).ok


def test_a_scan_without_changed_rows_has_no_changed_looks(tmp_path: Path) -> None:
    hashlist = write_list(tmp_path / "list.txt", ["0" * 32])
    with LoopbackServer({"/same.jpg": ORIGINAL}) as server:
        shard = write_shard(
            tmp_path / "shard.parquet",
            {"url": [server.url("/same.jpg")], "sha256": [hashlib.sha256(ORIGINAL).hexdigest()]},
        )
        run_scan(shard, tmp_path / "out", [f"md5:{hashlist}"], audit={"match_columns": ["sha256=sha256"]})
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["outcomes"]["clean"] == 1 and "changed_looks" not in summary

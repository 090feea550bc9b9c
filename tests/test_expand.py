"""scanner expand: rows near a scan's matched or confirmed rows by stored hash, found exactly, written as
candidates (never matches), from a real scan over loopback and a real hashes.parquet."""

from __future__ import annotations

import hashlib
import io
import json
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from audit_support import images, outcomes, run_scan, write_shard
from images import encode
from loopback import LoopbackServer
from PIL import Image

from scanner.audits.expand import ExpandSettings, expand, hex_keys, near_seeds
from scanner.errors import InputError
from scanner.lists.index import brute_force
from scanner.outcomes import SeedSource
from scanner.reports.hashes import hashes_table
from scanner.reports.verdicts import url_sha256
from scanner.reports.verify import verify_report

BODIES = images(5)


def near_copy(body: bytes) -> bytes:
    """A resized, recompressed copy: a near duplicate by PDQ, pHash and dHash, not by MD5."""
    return encode(Image.open(io.BytesIO(body)).convert("RGB").resize((120, 90)), "JPEG", quality=60)


FILES = {f"/{name}.jpg": body for name, body in zip("abcde", BODIES, strict=True)}
FILES["/a-copy.jpg"] = near_copy(BODIES[0])
FILES["/d-copy.jpg"] = near_copy(BODIES[3])
PATHS = ["/a.jpg", "/b.jpg", "/a-copy.jpg", "/c.jpg", "/d.jpg", "/status/404", "/d-copy.jpg", "/e.jpg"]
SETTINGS = {"pdq": 31, "phash": 8, "dhash": 8}


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scan that kept its hashes, listing rows 0 (a) and 4 (d) by MD5; rows 2 and 6 are their copies."""
    tmp = tmp_path_factory.mktemp("expand")
    md5 = [hashlib.md5(body).hexdigest() for body in BODIES]
    with LoopbackServer(FILES) as server:
        urls = [server.url(p) for p in PATHS]
        shard = write_shard(tmp / "shard.parquet", {"url": urls, "key": [f"k{i}" for i in range(len(urls))]})
        listed = write_typed_list(tmp / "list.csv", [("md5", md5[0], "a"), ("md5", md5[3], "d")])
        run_scan(shard, tmp / "scan", [listed], audit={"keep_hashes": True}, source={"rows_per_unit": 3})
    return tmp / "scan"


def write_typed_list(path: Path, entries: list[tuple[str, str, str]]) -> str:
    path.write_text("hash_type,hash,id\n" + "".join(f"{t},{h},{i}\n" for t, h, i in entries))
    return f"{path.stem}={path}"


def copy_scan(scanned: Path, tmp_path: Path) -> Path:
    out = tmp_path / "scan"
    out.mkdir(mode=0o700)
    for path in scanned.iterdir():
        if path.is_file():
            (out / path.name).write_bytes(path.read_bytes())
            (out / path.name).chmod(0o600)
    return out


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "expanded.jsonl").read_text().split("\n") if line]


def test_expand_from_matches_finds_the_near_copies_and_changes_no_outcome(scanned, tmp_path, scanner_cli):
    out = copy_scan(scanned, tmp_path)
    before = outcomes(out)
    done = scanner_cli("expand", str(out), "--from", "match")
    assert done.returncode == 0, done.stderr
    found = records(out)
    assert {(r["key"], r["seed_row"]) for r in found} == {("k2", 0), ("k6", 4)}
    assert {r["hash_type"] for r in found if r["key"] == "k2"} == {"pdq", "phash", "dhash"}
    for record in found:
        assert record["distance"] <= SETTINGS[record["hash_type"]] == record["threshold"]
        assert record["url"].endswith(PATHS[record["row"]])
    assert "seeds: 2 rows (match)" in done.stdout and "candidates: 2 rows near a seed" in done.stdout
    assert outcomes(out) == before  # candidates, never matches
    assert stat.S_IMODE((out / "expanded.jsonl").stat().st_mode) == 0o600
    page = (out / "report.html").read_text()
    assert "Expanded" in page and "2 candidate rows" in page
    assert verify_report(out).ok  # the manifest names expanded.jsonl and the new report.html


def test_a_restarted_scan_drops_the_earlier_runs_expansion(tmp_path, scanner_cli):
    tmp = tmp_path / "in"
    tmp.mkdir()
    md5 = [hashlib.md5(body).hexdigest() for body in BODIES]
    with LoopbackServer(FILES) as server:
        shard = write_shard(tmp / "shard.parquet", {"url": [server.url(p) for p in PATHS]})
        listed = write_typed_list(tmp / "list.csv", [("md5", md5[0], "a")])
        out = tmp_path / "scan"
        run_scan(shard, out, [listed], audit={"keep_hashes": True})
        assert scanner_cli("expand", str(out)).returncode == 0 and (out / "expanded.jsonl").exists()
        run_scan(shard, out, [listed], audit={"keep_hashes": True})  # --restart into the same reports
    assert not (out / "expanded.jsonl").exists()  # its seeds and candidates were the earlier run's
    assert "Expanded" not in (out / "report.html").read_text()


def test_the_thresholds_bound_the_distance(scanned, tmp_path, scanner_cli):
    out = copy_scan(scanned, tmp_path)
    flags = ("--pdq-threshold", "0", "--phash-threshold", "0", "--dhash-threshold", "0")
    done = scanner_cli("expand", str(out), *flags)
    assert done.returncode == 0, done.stderr
    found = records(out)
    assert found and {r["key"] for r in found} <= {"k2", "k6"}
    assert {(r["distance"], r["threshold"]) for r in found} == {(0, 0)}
    assert scanner_cli("expand", str(out), "--pdq-threshold", "257").returncode == 1


def test_expand_from_confirmed_reads_the_latest_verdict_and_checks_the_url(scanned, tmp_path):
    out = copy_scan(scanned, tmp_path)
    url = outcomes_url(out, 4)
    verdicts = [
        {"shard": shard_of(out), "row": 0, "verdict": "confirmed"},
        {"shard": shard_of(out), "row": 0, "verdict": "false_positive", "note": "second look"},
        {"shard": shard_of(out), "row": 4, "verdict": "confirmed", "url_sha256": sha(url)},
        {"shard": shard_of(out), "row": 3, "verdict": "confirmed", "url_sha256": sha("http://elsewhere/")},
    ]
    (out / "verdicts.jsonl").write_text("".join(json.dumps(v) + "\n" for v in verdicts))
    found = expand(out, ExpandSettings(SeedSource.CONFIRMED, SETTINGS))
    assert (found.seeds, found.missing_seeds) == (1, 1)  # row 0 no longer confirmed; row 3's URL differs
    assert {(r["key"], r["seed_row"]) for r in records(out)} == {("k6", 4)}


def test_confirmed_without_verdicts_is_one_clear_error(scanned, tmp_path, scanner_cli):
    out = copy_scan(scanned, tmp_path)
    done = scanner_cli("expand", str(out), "--from", "confirmed")
    assert done.returncode == 1
    assert "no verdicts recorded" in done.stderr and "Traceback" not in done.stderr
    assert not (out / "expanded.jsonl").exists()


def test_a_scan_without_hash_records_is_refused(scanned, tmp_path, scanner_cli):
    out = copy_scan(scanned, tmp_path)
    (out / "hashes.parquet").unlink()
    done = scanner_cli("expand", str(out))
    assert done.returncode == 1 and "--keep-hashes" in done.stderr


def test_the_demo_report_shows_one_expansion(tmp_path, scanner_cli):
    done = scanner_cli("demo", "--out", str(tmp_path / "demo"), "--quiet", "--images", "8", timeout=180)
    assert done.returncode == 0, done.stderr
    found = records(tmp_path / "demo")
    assert {(r["url"].rsplit("/", 1)[1], r["seed_row"]) for r in found} == {("near-copy.jpg", 3)}
    page = (tmp_path / "demo" / "report.html").read_text()
    assert "<h2>Expanded</h2><p>1 candidate rows lie near 1 seed rows" in page
    assert verify_report(tmp_path / "demo").ok


def shard_of(out: Path) -> str:
    return json.loads((out / "matches.jsonl").read_text().split("\n")[0])["shard"]


def outcomes_url(out: Path, row: int) -> str:
    matched = map(json.loads, (out / "matches.jsonl").read_text().split("\n")[:-1])
    return next(record["url"] for record in matched if record["row"] == row)


def sha(text: str) -> str:
    return url_sha256(text)  # a verdict's URL digest, as `scanner review import` records it


@pytest.mark.parametrize(("nbytes", "threshold"), [(32, 31), (8, 8)])
def test_near_seeds_is_the_brute_force_nearest_seed(nbytes, threshold):
    rng = np.random.default_rng(nbytes)
    keys = rng.integers(0, 256, (20_000, nbytes), dtype=np.uint8)
    seed_at = rng.choice(len(keys), 40, replace=False)
    for n, seed in enumerate(seed_at):  # plant rows at the threshold, one past it, and in between
        for offset, flips in enumerate((threshold, threshold + 1, n % (threshold + 1))):
            row = keys[seed].copy()
            for bit in rng.choice(8 * nbytes, flips, replace=False):
                row[bit // 8] ^= 1 << (bit % 8)
            keys[(seed + 1 + offset * 7) % len(keys)] = row
    positions = np.arange(len(keys), dtype=np.int64) * 3  # positions need not be the array's indices
    seeds = {int(positions[s]): ("shard", int(s)) for s in seed_at}
    rows, nearest, distance = near_seeds(keys, positions, seeds, threshold)
    query, entry, dist = brute_force(keys, keys[np.sort(seed_at)], threshold)
    expected: dict[int, tuple[int, int]] = {}
    for q, e, d in zip(query.tolist(), entry.tolist(), dist.tolist(), strict=True):
        seed = int(np.sort(seed_at)[q])
        if e not in set(seed_at.tolist()) and (e not in expected or (d, seed) < expected[e]):
            expected[e] = (d, seed)
    got = {int(r) // 3: (int(d), int(s) // 3) for r, s, d in zip(rows, nearest, distance, strict=True)}
    assert got == expected and len(got) >= 70


def test_hex_keys_decodes_in_bulk_and_refuses_what_is_not_hex():
    column = pa.array(["00ff" * 4, "A0b1" * 4])
    assert hex_keys(column, "phash", "here").tolist() == [[0, 255] * 4, [160, 177] * 4]
    with pytest.raises(InputError, match="not hex"):
        hex_keys(pa.array(["zz" * 8]), "phash", "here")
    with pytest.raises(InputError, match="16 hex digits"):
        hex_keys(pa.array(["00" * 7]), "phash", "here")


def test_low_quality_pdq_hashes_are_left_out_as_matching_leaves_them(tmp_path):
    """A flat picture's PDQ (quality below the minimum) would sit near every other flat one: neither seed
    nor candidate by PDQ, while its pHash still counts."""
    flat, other = "00" * 32, "00" * 31 + "01"
    rows = [
        {"shard": "s", "row": 0, "url": "u0", "pdq": flat, "pdq_quality": 10, "phash": "ab" * 8},
        {"shard": "s", "row": 1, "url": "u1", "pdq": other, "pdq_quality": 10, "phash": "ab" * 8},
        {"shard": "s", "row": 2, "url": "u2", "pdq": other, "pdq_quality": 90, "phash": "cd" * 8},
    ]
    out = tmp_path / "scan"
    out.mkdir()
    pq.write_table(hashes_table(rows), out / "hashes.parquet")
    (out / "matches.jsonl").write_text(json.dumps({"shard": "s", "row": 0}) + "\n")
    found = expand(out, ExpandSettings(SeedSource.MATCH, SETTINGS, pdq_min_quality=50))
    assert found.seeds == 1
    assert [(r["row"], r["hash_type"]) for r in records(out)] == [(1, "phash")]
    expand(out, ExpandSettings(SeedSource.MATCH, SETTINGS, pdq_min_quality=0))
    assert [(r["row"], r["hash_type"]) for r in records(out)] == [(1, "pdq"), (1, "phash"), (2, "pdq")]

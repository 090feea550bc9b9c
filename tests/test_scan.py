"""The core scan end to end: real HTTP over loopback, real Parquet, real hashing, every outcome class."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import imagehash
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from images import encode, make_image
from loopback import LoopbackServer
from PIL import Image, ImageDraw

from scanner.config import build_config
from scanner.exitcodes import ExitCode
from scanner.hashing import hash_image
from scanner.runners.local import scan

ORIGINAL = make_image(11, (640, 480))
UNRELATED = make_image(12, (640, 480))
EXACT = encode(make_image(13), "JPEG")


def watermarked(image: Image.Image) -> Image.Image:
    copy = image.copy()
    ImageDraw.Draw(copy).text((20, 20), "(c) someone 2026", fill=(255, 255, 255))
    return copy


FILES = {
    "/exact.jpg": EXACT,
    "/original.png": encode(ORIGINAL, "PNG"),
    "/recompressed.jpg": encode(ORIGINAL, "JPEG", quality=35),
    "/resized.webp": encode(ORIGINAL.resize((320, 240)), "WEBP"),
    "/watermarked.jpg": encode(watermarked(ORIGINAL), "JPEG"),
    "/unrelated.jpg": encode(UNRELATED, "JPEG"),
    "/octet.jpg": (encode(make_image(14), "JPEG"), "application/octet-stream"),
    "/cut.jpg": EXACT[: len(EXACT) // 2],
}

ROUTES = {
    "/exact.jpg": "match",
    "/original.png": "match",
    "/recompressed.jpg": "match",
    "/resized.webp": "match",
    "/watermarked.jpg": "match",
    "/unrelated.jpg": "clean",
    "/octet.jpg": "clean",
    "/redirect-to?url=/unrelated.jpg": "clean",
    "/status/404": "dead",
    "/status/410": "dead",
    "/status/500": "dead",
    "/loop": "dead",
    "/redirect/12": "dead",
    "/slow?seconds=10": "dead",
    "/html-as-jpeg": "invalid",
    "/truncated": "invalid",
    "/cut.jpg": "invalid",
    "/huge?length=5000000": "invalid",
    "/bomb.png": "invalid",
}


def bomb_png() -> bytes:
    """A small PNG whose header declares 20000 x 20000 pixels (a decompression bomb)."""
    image = Image.new("L", (20000, 20000))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


def write_list(path: Path) -> None:
    pdq = hash_image(encode(ORIGINAL, "PNG"), frozenset({"pdq"})).pdq.hex()
    md5 = hash_image(EXACT, frozenset({"md5"})).md5.hex()
    path.write_text(f"hash_type,hash,id,category\nmd5,{md5},E-1,test-exact\npdq,{pdq},E-2,test-near\n")


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scan")
    files = {**FILES, "/bomb.png": (bomb_png(), "image/png")}
    with LoopbackServer(files) as server:
        urls = [server.url(path) for path in ROUTES]
        urls += ["", None, "file:///etc/passwd", "ftp://127.0.0.1/x.jpg", "http://127.0.0.1:9/refused.jpg"]
        keys = [f"k{i}" for i in range(len(urls))]
        shard = tmp / "shard.parquet"
        pq.write_table(
            pa.table({"SAMPLE_ID": keys, "URL": urls, "TEXT": ["caption"] * len(urls)}),
            shard,
            row_group_size=5,
        )
        write_list(tmp / "list.csv")
        config = build_config(
            {
                "inputs": [str(shard)],
                "out": str(tmp / "out"),
                "hashlist": [f"tlist={tmp / 'list.csv'}"],
                "fetch": {
                    "allow_private_networks": True,
                    "total_timeout": 3.0,
                    "max_bytes": 1_000_000,
                    "max_redirects": 5,
                    "max_retries": 0,
                },
                "source": {"rows_per_unit": 5},
                "run": {"workers": 2},
            },
            "test",
        )
        result = scan(config)
    outcomes = pq.read_table(tmp / "out" / "outcomes.parquet").to_pylist()
    matches = [json.loads(line) for line in (tmp / "out" / "matches.jsonl").read_text().splitlines()]
    return tmp / "out", urls, outcomes, matches, result.summary


def by_path(outcomes):
    return {
        row["url"].split(":", 2)[2].split("/", 1)[1]
        if row["url"] and "127.0.0.1:" in row["url"]
        else row["url"]: row
        for row in outcomes
    }


def test_one_outcome_row_per_input_row_in_order(scanned):
    _out, urls, outcomes, _matches, summary = scanned
    assert [row["row"] for row in outcomes] == list(range(len(urls)))
    assert [row["key"] for row in outcomes] == [f"k{i}" for i in range(len(urls))]
    assert summary["rows"] == len(urls)
    assert sum(summary["outcomes"].values()) == len(urls)


def test_every_route_gets_its_outcome(scanned):
    _out, _urls, outcomes, _matches, _summary = scanned
    seen = {row["url"].split("/", 3)[3]: row for row in outcomes[: len(ROUTES)]}
    for path, expected in ROUTES.items():
        assert seen[path.lstrip("/")]["outcome"] == expected, (path, seen[path.lstrip("/")])


def test_reasons_and_statuses(scanned):
    _out, _urls, outcomes, _matches, _summary = scanned
    reasons = {
        row["url"].split("/", 3)[3] if row["url"] and "127.0.0.1:" in row["url"] else row["url"]: (
            row["outcome"],
            row["reason"],
            row["http_status"],
        )
        for row in outcomes
    }
    assert reasons["status/404"] == ("dead", "http_404", 404)
    assert reasons["status/500"][2] == 500
    assert reasons["loop"][1] in ("redirect_loop", "too_many_redirects")
    assert reasons["redirect/12"][1] == "too_many_redirects"
    assert reasons["slow?seconds=10"][1] == "timeout"
    assert reasons["html-as-jpeg"][:2] == ("invalid", "not_an_image")
    assert reasons["truncated"][:2] == ("invalid", "truncated_body")
    assert reasons["cut.jpg"][:2] == ("invalid", "truncated_image")
    assert reasons["huge?length=5000000"][:2] == ("invalid", "body_too_large")
    assert reasons["bomb.png"][:2] == ("invalid", "too_many_pixels")
    assert reasons[None] == ("invalid", "empty_url", None)
    assert reasons["file:///etc/passwd"][:2] == ("blocked", "blocked_scheme")
    assert reasons["ftp://127.0.0.1/x.jpg"][:2] == ("blocked", "blocked_scheme")
    refused = reasons["refused.jpg"]
    assert refused[:2] == ("dead", "connection_refused")


def test_matches_exact_and_near_duplicates_not_unrelated(scanned):
    _out, _urls, _outcomes, matches, summary = scanned
    matched = {m["url"].rsplit("/", 1)[1]: m for m in matches}
    assert set(matched) == {
        "exact.jpg",
        "original.png",
        "recompressed.jpg",
        "resized.webp",
        "watermarked.jpg",
    }
    assert matched["exact.jpg"]["hash_type"] == "md5" and matched["exact.jpg"]["distance"] == 0
    assert matched["exact.jpg"]["entry_id"] == "E-1" and matched["exact.jpg"]["category"] == "test-exact"
    assert matched["original.png"]["distance"] == 0
    for name in ("recompressed.jpg", "resized.webp", "watermarked.jpg"):
        assert matched[name]["hash_type"] == "pdq"
        assert 0 < matched[name]["distance"] <= 31
        assert matched[name]["quality"] >= 50
    assert all(m["list"] == "tlist" for m in matches)
    assert summary["matches"]["by_list"]["tlist"] == {"matches": 5, "rows": 5}
    assert set(json.loads(json.dumps(matches[0]))) == {
        "shard",
        "row",
        "url",
        "key",
        "list",
        "entry_id",
        "category",
        "hash_type",
        "distance",
        "quality",
        "hash",  # the row's own hash that matched: negative lists and referral drafts
    }


def test_unrelated_image_is_far_from_the_listed_one():
    near = imagehash.phash(ORIGINAL) - imagehash.phash(UNRELATED)
    original = hash_image(encode(ORIGINAL, "PNG"), frozenset({"pdq"})).pdq
    other = hash_image(encode(UNRELATED, "JPEG"), frozenset({"pdq"})).pdq
    distance = bin(int.from_bytes(original, "big") ^ int.from_bytes(other, "big")).count("1")
    assert distance > 64 and near > 10


def test_reports_are_private_and_complete(scanned):
    out, _urls, _outcomes, _matches, summary = scanned
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
    names = {p.name for p in out.iterdir()}
    assert {"outcomes.parquet", "matches.jsonl", "summary.json", "manifest.json", "evidence.jsonl"} <= names
    assert {p.name for p in (out / ".units").iterdir()} == {"fingerprint.json", "complete"}
    for path in out.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["allow_private_networks"] is True
    assert manifest["lists"][0]["name"] == "tlist" and len(manifest["lists"][0]["sha256"]) == 64
    assert manifest["files"]["outcomes.parquet"]
    assert summary["http_status_classes"]["4xx"] >= 2
    assert summary["outcomes"]["match"] == 5


def test_default_scan_blocks_loopback_and_sends_nothing(tmp_path):
    with LoopbackServer({"/a.jpg": EXACT}) as server:
        shard = tmp_path / "s.csv"
        shard.write_text("url\n" + server.url("/a.jpg") + "\n")
        (tmp_path / "l.txt").write_text(hash_image(EXACT, frozenset({"md5"})).md5.hex() + "\n")
        config = build_config(
            {
                "inputs": [str(shard)],
                "out": str(tmp_path / "out"),
                "hashlist": [f"md5:{tmp_path / 'l.txt'}"],
                "run": {"workers": 1},
            },
            "test",
        )
        result = scan(config)
        assert server.total_hits == 0
    assert result.summary["outcomes"]["blocked"] == 1


def test_cli_bad_inputs_are_clear_errors(tmp_path, scanner_cli):
    (tmp_path / "nourl.csv").write_text("photo,caption\nhttp://x/,y\n")
    (tmp_path / "bad.txt").write_text("zz" * 16 + "\n")
    (tmp_path / "ok.txt").write_text("0" * 32 + "\n")
    done = scanner_cli("scan", "nourl.csv", "--hashlist", "md5:ok.txt", "--out", "o", cwd=tmp_path)
    assert done.returncode == 1
    assert "nourl.csv:1: no URL column" in done.stderr and "photo, caption" in done.stderr
    assert "Traceback" not in done.stderr
    (tmp_path / "s.txt").write_text("http://example.invalid/\n")
    done = scanner_cli("scan", "s.txt", "--hashlist", "md5:bad.txt", "--out", "o2", cwd=tmp_path)
    assert done.returncode == 1 and "bad.txt:1" in done.stderr and "Traceback" not in done.stderr
    done = scanner_cli("scan", "missing.parquet", "--hashlist", "md5:ok.txt", "--out", "o3", cwd=tmp_path)
    assert done.returncode == 1 and "missing.parquet" in done.stderr


def test_cli_hash_prints_the_scan_hashes(tmp_path, scanner_cli):
    path = tmp_path / "x.jpg"
    path.write_bytes(EXACT)
    done = scanner_cli("hash", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    expected = hash_image(EXACT, frozenset({"md5", "sha1", "sha256", "pdq", "phash", "dhash"}))
    assert record["md5"] == expected.md5.hex() and record["pdq"] == expected.pdq.hex()
    assert record["phash"] == expected.phash.hex() and record["width"] == expected.width
    assert set(record) >= {
        "path",
        "md5",
        "sha1",
        "sha256",
        "pdq",
        "pdq_quality",
        "phash",
        "dhash",
        "width",
        "height",
        "format",
    }


def test_cli_hash_names_each_file_it_cannot_hash_and_goes_on(tmp_path, scanner_cli):
    """A directory is walked by name; a FIFO, a link to a device, a dangling link, a file that is no image
    (and, when not root, one that cannot be opened) are one line each, the images are hashed all the same."""
    tree = tmp_path / "tree"
    (tree / "b").mkdir(parents=True)
    (tree / "b" / "2.jpg").write_bytes(EXACT)
    (tree / "a.jpg").write_bytes(EXACT)
    (tree / "c.txt").write_text("not an image")
    os.mkfifo(tree / "fifo")
    (tree / "zero").symlink_to("/dev/zero")
    (tree / "gone").symlink_to(tmp_path / "missing.jpg")
    (tree / "loop").symlink_to(tree, target_is_directory=True)  # not followed
    single = tmp_path / "single.jpg"
    single.write_bytes(EXACT)
    refused = {"c.txt": "not a usable image", "fifo": "(a FIFO)", "zero": "(a character device)"}
    refused["gone"] = "No such file"
    if os.geteuid() != 0:  # root reads a mode-0 file all the same
        (tree / "locked.jpg").write_bytes(EXACT)
        (tree / "locked.jpg").chmod(0)
        refused["locked.jpg"] = "Permission denied"
    done = scanner_cli("hash", str(tree), str(single), cwd=tmp_path, timeout=60)
    assert done.returncode == ExitCode.ERROR, done.stderr
    hashed = [json.loads(line)["path"] for line in done.stdout.splitlines()]
    assert hashed == [str(tree / "a.jpg"), str(tree / "b" / "2.jpg"), str(single)]
    lines = done.stderr.splitlines()
    assert len(lines) == len(refused) and "Traceback" not in done.stderr, done.stderr
    for name, why in refused.items():
        assert any(str(tree / name) in line and why in line for line in lines), (name, done.stderr)
    fine = scanner_cli("hash", str(single), str(tree / "b"), cwd=tmp_path)
    assert fine.returncode == ExitCode.OK and fine.stderr == "" and len(fine.stdout.splitlines()) == 2


def test_overlong_urls_are_reported_cut_to_the_limit(tmp_path):
    shard = tmp_path / "long.txt"
    shard.write_text("http://127.0.0.1:9/" + "a" * 200_000 + "\n")
    (tmp_path / "l.txt").write_text("0" * 32 + "\n")
    config = build_config(
        {
            "inputs": [str(shard)],
            "out": str(tmp_path / "out"),
            "hashlist": [f"md5:{tmp_path / 'l.txt'}"],
            "fetch": {"max_url_length": 4096},
            "run": {"workers": 1},
        },
        "test",
    )
    scan(config)
    (row,) = pq.read_table(tmp_path / "out" / "outcomes.parquet").to_pylist()
    assert row["reason"] == "url_too_long"
    assert len(row["url"]) == 4096


class ShortSource:
    """A source whose span comes up short of its plan, as a damaged shard can."""

    kind = "txt"

    def __init__(self, path: str) -> None:
        self.path = path

    def spans(self):
        from scanner.sources import Span

        return [Span(0, 5)]

    def read(self, span):
        from scanner.sources import Row

        yield [Row(self.path, i, None, None) for i in range(3)]


@pytest.mark.parametrize("skip", [False, True])
def test_a_source_that_comes_up_short_never_loses_rows(skip):
    import asyncio

    from scanner.errors import SourceError
    from scanner.lists import MatchConfig, Matcher
    from scanner.pipeline import FetchPolicy, Pipeline, Stages
    from scanner.planner import WorkUnit
    from scanner.screen import AuditConfig

    source = ShortSource("short.txt")
    stages = Stages(
        fetcher=None, hash=None, matcher=Matcher.from_lists([], MatchConfig()), audit=AuditConfig()
    )
    pipeline = Pipeline(FetchPolicy(stages, {"short.txt": source}, skip_bad_shards=skip), rows_in_flight=4)
    unit = WorkUnit(0, "short.txt", source.spans()[0])
    if not skip:
        with pytest.raises(SourceError, match=r"short\.txt: gave rows up to 3, not 5"):
            asyncio.run(pipeline.run_unit(unit))
        return
    report = asyncio.run(pipeline.run_unit(unit))
    assert [(o.row, o.reason) for o in report.outcomes] == [
        (0, "empty_url"),
        (1, "empty_url"),
        (2, "empty_url"),
        (3, "unreadable_shard"),
        (4, "unreadable_shard"),
    ]

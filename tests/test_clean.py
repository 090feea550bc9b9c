"""clean: flagged rows removed, schema and row-group layout kept, removed.parquet without URLs, refusals."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import stat
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from audit_support import images, outcomes, run_scan, write_list

from scanner.audits.clean import REMOVED_SCHEMA, clean
from scanner.errors import ConfigError, InputError
from scanner.sources import SourceOptions
from scanner.sources.text import TextSource

LISTED = "http://listed.example/{}.jpg"
DEAD = "http://127.0.0.1:9/{}.jpg"  # nothing listens on the discard port: connection refused


def dataset_urls() -> list[str]:
    """Rows 1, 4, 5 are on the URL list; 0, 3 dead; 2 blocked; 6 invalid; 7 dead."""
    return [
        DEAD.format(0),
        LISTED.format(1),
        "ftp://127.0.0.1/2.jpg",
        DEAD.format(3),
        LISTED.format(4),
        "HTTP://LISTED.example:80/x/../5.jpg",
        "",
        DEAD.format(7),
    ]


@pytest.fixture
def scanned(tmp_path: Path) -> dict:
    """A zstd Parquet shard with schema metadata and row groups of 3, scanned against a URL list."""
    urls = dataset_urls()
    table = pa.table(
        {"url": urls, "key": [f"k{i}" for i in range(len(urls))], "caption": [f"c{i}" for i in range(8)]}
    )
    table = table.replace_schema_metadata({"origin": "test dataset"})
    shard = tmp_path / "shard.parquet"
    pq.write_table(table, shard, row_group_size=3, compression="zstd")
    listed = write_list(tmp_path / "urls.txt", [LISTED.format(1), LISTED.format(4), LISTED.format(5)])
    run_scan(shard, tmp_path / "report", [f"url:{listed}"])
    assert outcomes(tmp_path / "report") == [
        "dead",
        "match",
        "blocked",
        "dead",
        "match",
        "match",
        "invalid",
        "dead",
    ]
    return {"shard": shard, "report": tmp_path / "report", "table": table}


def test_clean_removes_flagged_rows_and_keeps_the_layout(scanned, tmp_path: Path) -> None:
    out = tmp_path / "clean"
    result = clean([str(scanned["shard"])], scanned["report"], out, ["match", "dead"])
    written = pq.ParquetFile(out / "shard.parquet")
    assert written.schema_arrow.equals(scanned["table"].schema, check_metadata=True)
    assert [written.metadata.row_group(i).num_rows for i in range(3)] == [1, 0, 1]  # rows 2 | none | 6
    assert written.metadata.row_group(0).column(0).compression == "ZSTD"
    assert written.read().to_pydict() == scanned["table"].take([2, 6]).to_pydict()
    assert (result.removed, result.shards[0].rows) == (6, 8)
    removed = pq.read_table(out / "removed.parquet")
    assert removed.schema.equals(REMOVED_SCHEMA)
    normal = {1: LISTED.format(1), 4: LISTED.format(4), 5: LISTED.format(5)}
    expected = [
        {
            "shard": "shard.parquet",
            "row": row,
            "key": f"k{row}",
            "url_sha256": hashlib.sha256((normal.get(row) or DEAD.format(row)).encode()).hexdigest(),
            "outcome": "match" if row in normal else "dead",
        }
        for row in (0, 1, 3, 4, 5, 7)
    ]
    assert removed.to_pylist() == expected
    assert b"listed.example" not in (out / "removed.parquet").read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o600}


def test_line_shards_keep_every_other_line_byte_for_byte(tmp_path: Path) -> None:
    urls = dataset_urls()[:6]
    jsonl = tmp_path / "list.jsonl"
    lines = [json.dumps({"url": u, "key": f"j{i}"}) + "\n" for i, u in enumerate(urls)]
    jsonl.write_bytes("".join([lines[0], "\n", *lines[1:3], "  \r\n", *lines[3:]]).encode())
    txt = tmp_path / "list.txt"
    txt.write_bytes("".join(f"{u}\r\n" for u in urls).encode())
    listed = write_list(tmp_path / "urls.txt", [LISTED.format(1), LISTED.format(4), LISTED.format(5)])
    run_scan([jsonl, txt], tmp_path / "report", [f"url:{listed}"])
    result = clean([str(jsonl), str(txt)], tmp_path / "report", tmp_path / "clean")
    assert [s.removed for s in result.shards] == [3, 3]  # rows 1, 4 and 5 (spelled otherwise)
    kept = [0, 2, 3]
    assert (tmp_path / "clean" / "list.jsonl").read_bytes() == "".join(
        [lines[0], "\n", lines[2], "  \r\n", lines[3]]
    ).encode()
    assert (tmp_path / "clean" / "list.txt").read_bytes() == "".join(f"{urls[i]}\r\n" for i in kept).encode()


def test_csv_and_tsv_shards_keep_header_and_columns_as_csv_writer_writes_them(tmp_path: Path) -> None:
    captions = ["plain", 'a "quoted", caption', "two\nlines", "tab\there", "ünïcode ✓", "", "=1+1", "last"]
    header = ["url", "key", "caption"]
    records = [[url, f"k{i}", captions[i]] for i, url in enumerate(dataset_urls())]
    records[7].append("a column past the header")
    shards = {}
    for kind, delimiter in (("csv", ","), ("tsv", "\t")):
        shards[kind] = tmp_path / f"list.{kind}"
        text = _written(delimiter, [header, *records[:3]], csv.QUOTE_ALL, "\n") + "\n"  # a blank line
        text += _written(delimiter, records[3:], csv.QUOTE_ALL, "\n")
        shards[kind].write_bytes((("\ufeff" if kind == "csv" else "") + text).encode())
    listed = write_list(tmp_path / "urls.txt", [LISTED.format(1), LISTED.format(4), LISTED.format(5)])
    run_scan(list(shards.values()), tmp_path / "report", [f"url:{listed}"])
    result = clean(
        [str(p) for p in shards.values()], tmp_path / "report", tmp_path / "clean", ["match", "blocked"]
    )
    assert [(s.rows, s.removed) for s in result.shards] == [(8, 4), (8, 4)]  # rows 1, 2, 4 and 5
    kept = [records[i] for i in (0, 3, 6, 7)]
    for kind, delimiter in (("csv", ","), ("tsv", "\t")):
        expected = _written(delimiter, [header, kept[0], [], *kept[1:]], csv.QUOTE_MINIMAL, "\r\n")
        written = (tmp_path / "clean" / f"list.{kind}").read_bytes()
        assert written == (("\ufeff" if kind == "csv" else "") + expected).encode()
        source = TextSource(str(tmp_path / "clean" / f"list.{kind}"), kind, SourceOptions())
        rows = [row for span in source.spans() for batch in source.read(span) for row in batch]
        assert [(row.url, row.key) for row in rows] == [(r[0] or None, r[1]) for r in kept]  # "" is no URL
    removed = pq.read_table(tmp_path / "clean" / "removed.parquet").to_pylist()
    assert [(r["shard"], r["row"], r["outcome"]) for r in removed] == [
        (f"list.{kind}", row, "blocked" if row == 2 else "match")
        for kind in ("csv", "tsv")
        for row in (1, 2, 4, 5)
    ]


def _written(delimiter: str, records: list[list[str]], quoting: int, terminator: str) -> str:
    text = io.StringIO(newline="")
    csv.writer(text, delimiter=delimiter, quoting=quoting, lineterminator=terminator).writerows(records)
    return text.getvalue()


def test_clean_refuses_shards_it_cannot_vouch_for(scanned, tmp_path: Path) -> None:
    other = tmp_path / "other.parquet"
    pq.write_table(scanned["table"], other)
    with pytest.raises(InputError, match="not among the report's inputs"):
        clean([str(other)], scanned["report"], tmp_path / "clean")
    pq.write_table(scanned["table"].slice(0, 7), scanned["shard"], row_group_size=3)
    with pytest.raises(InputError, match="changed since the scan"):
        clean([str(scanned["shard"])], scanned["report"], tmp_path / "clean")
    with pytest.raises(ConfigError, match="--drop"):
        clean([str(scanned["shard"])], scanned["report"], tmp_path / "clean", ["matched"])
    assert not (tmp_path / "clean" / "removed.parquet").exists()


def test_shards_holding_images_are_not_written_again(tmp_path: Path) -> None:
    tar = tmp_path / "corpus.tar"
    with tarfile.open(tar, "w") as archive:
        data = images(1)[0]
        member = tarfile.TarInfo("000000.jpg")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    run_scan(tar, tmp_path / "report", [f"md5:{write_list(tmp_path / 'l.txt', ['0' * 32])}"])
    with pytest.raises(InputError, match="image content on disk"):
        clean([str(tar)], tmp_path / "report", tmp_path / "clean")


def test_clean_command(scanned, tmp_path: Path, scanner_cli) -> None:
    out = tmp_path / "clean"
    command = ["clean", str(scanned["shard"]), "--report", str(scanned["report"]), "--out", str(out)]
    done = scanner_cli(*command)
    assert done.returncode == 0, done.stderr
    assert f"{scanned['shard']}: 8 rows, 3 removed -> {out / 'shard.parquet'}" in done.stdout
    assert pq.read_table(out / "shard.parquet").column("key").to_pylist() == ["k0", "k2", "k3", "k6", "k7"]
    removed = (out / "removed.parquet").read_bytes()
    done = scanner_cli(*command, "--drop", "match,bogus")
    assert done.returncode == 1 and "bogus" in done.stderr
    assert (out / "removed.parquet").read_bytes() == removed

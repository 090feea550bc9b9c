"""Sources: every row read exactly once, columns detected, bad files named with their line."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scanner.errors import SourceError
from scanner.planner import plan
from scanner.sources import SourceOptions, expand_inputs, open_source


def read_all(path, **options):
    source = open_source(str(path), SourceOptions(**options))
    return [row for span in source.spans() for batch in source.read(span) for row in batch]


@pytest.mark.parametrize("row_group_size,per_unit", [(700, 1000), (700, 300), (5000, 1000), (1, 7)])
def test_parquet_spans_cover_every_row_once(tmp_path, row_group_size, per_unit):
    n = 2500 if row_group_size > 1 else 40
    path = tmp_path / "s.parquet"
    pq.write_table(
        pa.table({"url": [f"http://h/{i}" for i in range(n)]}), path, row_group_size=row_group_size
    )
    rows = read_all(path, rows_per_unit=per_unit)
    assert [r.row for r in rows] == list(range(n))
    assert all(r.url == f"http://h/{r.row}" for r in rows)


def test_laion_columns_detected_and_key_carried(tmp_path):
    path = tmp_path / "laion.parquet"
    table = pa.table(
        {"SAMPLE_ID": [7, 8], "URL": ["http://a/1.jpg", None], "TEXT": ["x", "y"], "NSFW": ["", ""]}
    )
    pq.write_table(table, path)
    rows = read_all(path)
    assert [(r.url, r.key) for r in rows] == [("http://a/1.jpg", "7"), (None, "8")]


def test_empty_url_cells_are_rows(tmp_path):
    path = tmp_path / "blank.parquet"
    pq.write_table(pa.table({"url": ["", "  ", None, "http://x/"]}), path)
    assert [r.url for r in read_all(path)] == [None, None, None, "http://x/"]


def test_missing_url_column_lists_the_columns(tmp_path):
    path = tmp_path / "nourl.parquet"
    pq.write_table(pa.table({"link_text": ["a"], "caption": ["b"]}), path)
    with pytest.raises(SourceError, match=r"nourl.parquet.*columns are: link_text, caption"):
        open_source(str(path), SourceOptions())


def test_url_col_override(tmp_path):
    path = tmp_path / "custom.parquet"
    pq.write_table(pa.table({"url": ["http://wrong/"], "photo": ["http://right/"]}), path)
    assert [r.url for r in read_all(path, url_col="photo")] == ["http://right/"]


def test_truncated_parquet_is_a_named_error(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"url": [f"http://h/{i}" for i in range(100)]}), good)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(SourceError, match=r"bad\.parquet"):
        open_source(str(bad), SourceOptions())


def test_csv_tsv_jsonl_txt(tmp_path):
    (tmp_path / "a.csv").write_text('uid,url,text\n1,http://a/1,"hello, world"\n2,,empty\n')
    (tmp_path / "b.tsv").write_text("url\tkey\nhttp://b/1\tk1\n")
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"url": "http://c/1", "key": "j"}) + "\n\n" + '{"url": null}\n'
    )
    (tmp_path / "d.txt").write_text("http://d/1\n\nhttp://d/2\n")
    assert [(r.url, r.key) for r in read_all(tmp_path / "a.csv")] == [("http://a/1", "1"), (None, "2")]
    assert [(r.url, r.key) for r in read_all(tmp_path / "b.tsv")] == [("http://b/1", "k1")]
    assert [(r.url, r.key) for r in read_all(tmp_path / "c.jsonl")] == [("http://c/1", "j"), (None, None)]
    assert [r.url for r in read_all(tmp_path / "d.txt")] == ["http://d/1", None, "http://d/2"]


def test_text_spans_resume_at_byte_offsets(tmp_path):
    path = tmp_path / "many.csv"
    path.write_text("url\n" + "".join(f'"http://h/{i}?a=1,2"\n' for i in range(1003)))
    source = open_source(str(path), SourceOptions(rows_per_unit=100))
    spans = source.spans()
    assert len(spans) == 11
    rows = [r for span in reversed(spans) for batch in source.read(span) for r in batch]
    assert sorted(r.row for r in rows) == list(range(1003))
    assert all(r.url == f"http://h/{r.row}?a=1,2" for r in rows)


def test_non_utf8_csv_names_the_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"url\nhttp://a/1\nhttp://a/caf\xe9\n")
    with pytest.raises(SourceError, match=r"latin.csv:3: not valid UTF-8"):
        open_source(str(path), SourceOptions())


def test_bad_jsonl_line_names_the_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"url": "http://a/"}\n{"url": oops}\n')
    with pytest.raises(SourceError, match=r"x.jsonl:2: not JSON"):
        open_source(str(path), SourceOptions())


def test_plan_skips_bad_shards_by_policy(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("http://a/\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nope\n")
    with pytest.raises(SourceError):
        plan([str(good), str(bad)], SourceOptions(), "fail")
    result = plan([str(good), str(bad)], SourceOptions(), "skip")
    assert [u.shard for u in result.units] == [str(good)]
    assert "bad.jsonl:1" in result.skipped[str(bad)]


def test_expand_inputs_dirs_and_globs(tmp_path):
    for name in ("b.parquet", "a.csv", "notes.md"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("x")
    found = expand_inputs([str(tmp_path)])
    assert [p.rsplit("/", 1)[1] for p in found] == ["a.csv", "b.parquet", "c.txt"]
    assert expand_inputs([str(tmp_path / "*.csv"), str(tmp_path / "a.csv")]) == [str(tmp_path / "a.csv")]
    with pytest.raises(SourceError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.tsv")])


def test_real_url_lists_parse(url_lists):
    rows = read_all(url_lists / "test_10000.parquet", rows_per_unit=3000)
    assert len(rows) == 10000
    assert sum(r.url is not None for r in rows) == 10000
    assert sum(r.url == "UNLIKELY" for r in rows) == 1
    assert len({r.url for r in rows}) == 9999
    assert len(read_all(url_lists / "test_10000.txt")) == 10000
    assert len(read_all(url_lists / "unique_images.txt")) == 54
    sample = read_all(url_lists / "sample_image.parquet", extra_cols=("sha256hash",))
    assert len(sample) == 2 and all(len(r.columns["sha256hash"]) == 64 for r in sample)


def test_plan_numbers_units_consecutively_across_shards(tmp_path):
    paths = []
    for name in ("a", "b", "c"):
        path = tmp_path / f"{name}.txt"
        path.write_text("".join(f"http://{name}/{i}\n" for i in range(25)))
        paths.append(str(path))
    result = plan(paths, SourceOptions(rows_per_unit=10), "fail")
    assert [u.id for u in result.units] == list(range(9))
    assert [(u.shard[-5:], u.span.start) for u in result.units] == [
        (f"{n}.txt", s) for n in "abc" for s in (0, 10, 20)
    ]

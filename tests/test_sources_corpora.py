"""Already-downloaded corpora: WebDataset tars, Parquet with image bytes, folders of images."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from source_support import image_bytes

from scanner.errors import SourceError
from scanner.sources import SourceOptions, expand_inputs, open_source
from scanner.sources.storage import input_signature

REPO = Path(__file__).resolve().parents[1]


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def img2dataset_tar(path, count: int, shard: int = 0) -> dict[str, bytes]:
    """A shard as img2dataset writes it: per sample `.jpg`, `.txt` and a `.json` with url and key."""
    images = {}
    with tarfile.open(path, "w") as tar:
        for index in range(count):
            key = f"{shard:05d}{index:04d}"
            images[f"{key}.jpg"] = image_bytes(index)
            add_member(tar, f"{key}.jpg", images[f"{key}.jpg"])
            add_member(tar, f"{key}.txt", f"caption {index}".encode())
            meta = {"url": f"http://images.test/{index}.jpg", "key": key, "status": "success", "caption": "c"}
            add_member(tar, f"{key}.json", json.dumps(meta).encode())
    return images


def planned_signature(folder: Path) -> list[object]:
    """A folder's resume signature, as its plan takes it."""
    from scanner.sources.folder import FolderSource

    return FolderSource(str(folder), SourceOptions()).signature


def read_rows(path, **options):
    source = open_source(str(path), SourceOptions(**options))
    return [row for span in source.spans() for batch in source.read(span) for row in batch]


def summary(rows):
    return [(r.row, r.key, r.member, r.error) for r in rows]


def member_offset(path, name: str) -> tarfile.TarInfo:
    with tarfile.open(path) as tar:
        return tar.getmember(name)


# WebDataset tars


def test_webdataset_rows_carry_bytes_url_key_and_member(tmp_path):
    path = tmp_path / "00000.tar"
    images = img2dataset_tar(path, 5)
    source = open_source(str(path), SourceOptions())
    rows = read_rows(path)
    assert source.kind == "webdataset"
    assert [r.row for r in rows] == list(range(5))
    assert [r.member for r in rows] == list(images)
    assert all(r.body == images[r.member] and r.error is None for r in rows)
    assert [r.url for r in rows] == [f"http://images.test/{i}.jpg" for i in range(5)]
    assert [r.key for r in rows] == [f"{i:09d}" for i in range(5)]
    assert all(r.shard == str(path) for r in rows)


@pytest.mark.parametrize("per_unit", [1, 2, 3, 7, 1000])
def test_webdataset_spans_cover_every_sample_once(tmp_path, per_unit):
    path = tmp_path / "s.tar"
    images = img2dataset_tar(path, 7)
    source = open_source(str(path), SourceOptions(rows_per_unit=per_unit))
    spans = source.spans()
    assert [s.start for s in spans] == [0, *(s.stop for s in spans[:-1])]
    assert spans[-1].stop == 7 and all(s.rows >= 1 for s in spans)
    # Each span read on its own (as a resumed or distributed unit would be) yields exactly its rows.
    by_span = [[r for batch in source.read(span) for r in batch] for span in reversed(spans)]
    rows = sorted((r for rows in by_span for r in rows), key=lambda r: r.row)
    assert [r.row for r in rows] == list(range(7))
    assert [r.member for r in rows] == list(images)
    assert all(r.body == images[r.member] for r in rows)


def test_samples_without_image_several_images_nested_names_and_no_sidecar(tmp_path):
    path = tmp_path / "mixed.tar"
    first, second, mask = image_bytes(1), image_bytes(2, "PNG"), image_bytes(3, "PNG")
    with tarfile.open(path, "w") as tar:
        add_member(tar, "part/a.jpg", first)
        add_member(tar, "part/b.txt", b"caption only")
        add_member(tar, "part/b.json", json.dumps({"url": "http://x.test/b", "key": "b"}).encode())
        add_member(tar, "part/c.png", second)
        add_member(tar, "part/c.seg.png", mask)
        add_member(tar, "part/c.json", json.dumps({"url": "http://x.test/c", "key": "kc"}).encode())
    rows = read_rows(path)
    assert summary(rows) == [
        (0, "part/a", "part/a.jpg", None),
        (1, "part/b", "part/b.txt", "no_image_member"),
        (2, "kc", "part/c.png", None),
        (3, "kc", "part/c.seg.png", None),
    ]
    assert [r.url for r in rows] == [None, None, "http://x.test/c", "http://x.test/c"]
    assert [r.body for r in rows] == [first, None, second, mask]


@pytest.mark.parametrize(
    "sidecar",
    [b"not json", b"[" * 100_000, b'["a list"]', b"\xff\xfe{}", b"{" * 2_000_000],
    ids=["not-json", "too-deep", "not-an-object", "not-utf8", "over-1MiB"],
)
def test_unusable_sidecar_leaves_url_empty_and_key_from_the_name(tmp_path, sidecar):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, "k1.jpg", image_bytes(1))
        add_member(tar, "k1.json", sidecar)
    (row,) = read_rows(path)
    assert (row.key, row.url, row.error, row.body) == ("k1", None, None, image_bytes(1))


def test_garbage_with_an_image_name_is_read_for_hashing_to_judge(tmp_path):
    path = tmp_path / "g.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, "1.jpg", b"<html>not found</html>")
    (row,) = read_rows(path)
    assert row.body == b"<html>not found</html>" and row.error is None


def test_long_names_in_pax_headers_are_members_not_damage(tmp_path):
    path = tmp_path / "pax.tar"
    name = "d" * 120 + "/sample.jpg"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        add_member(tar, name, image_bytes(4))
        add_member(tar, "z" * 150 + ".jpg", image_bytes(5))
    assert summary(read_rows(path)) == [(0, name[:-4], name, None), (1, "z" * 150, "z" * 150 + ".jpg", None)]


def test_corrupt_member_header_is_one_row_and_the_walk_goes_on(tmp_path):
    path = tmp_path / "c.tar"
    images = img2dataset_tar(path, 6)
    broken = member_offset(path, "000000003.jpg")
    data = bytearray(path.read_bytes())
    data[broken.offset : broken.offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    expected = [
        *((i, f"00000000{i}", f"00000000{i}.jpg", None) for i in range(3)),
        (3, None, None, "corrupt_member"),
        (4, "000000003", "000000003.txt", "no_image_member"),
        *((i + 1, f"00000000{i}", f"00000000{i}.jpg", None) for i in range(4, 6)),
    ]
    for per_unit in (1, 2, 1000):
        rows = read_rows(path, rows_per_unit=per_unit)
        assert summary(rows) == expected
        assert all(r.body == images[r.member] for r in rows if r.error is None)


def test_damaged_header_after_an_extended_header_is_one_row(tmp_path):
    path = tmp_path / "pax.tar"
    long_name = "x" * 150 + ".jpg"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        add_member(tar, "a.jpg", image_bytes(1))
        add_member(tar, long_name, image_bytes(2))
        add_member(tar, "c.jpg", image_bytes(3))
    damaged = member_offset(path, long_name)
    data = bytearray(path.read_bytes())
    header_after_pax = damaged.offset_data - tarfile.BLOCKSIZE
    data[header_after_pax : header_after_pax + 20] = b"\xff" * 20
    path.write_bytes(bytes(data))
    for per_unit in (1, 1000):
        rows = read_rows(path, rows_per_unit=per_unit)
        assert summary(rows) == [
            (0, "a", "a.jpg", None),
            (1, None, None, "corrupt_member"),
            (2, "c", "c.jpg", None),
        ]
        assert rows[2].body == image_bytes(3)


def test_directories_are_not_rows_and_link_entries_are_rows_never_followed(tmp_path):
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as tar:
        folder = tarfile.TarInfo("part")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        add_member(tar, "part/1.jpg", image_bytes(1))
        for name, kind, target in [
            ("part/2.jpg", tarfile.SYMTYPE, "1.jpg"),
            ("part/3.jpg", tarfile.LNKTYPE, "part/1.jpg"),
            ("part/4.jpg", tarfile.FIFOTYPE, ""),
            ("part/5.json", tarfile.SYMTYPE, "/etc/passwd"),  # not an image name: not a row
        ]:
            link = tarfile.TarInfo(name)
            link.type, link.linkname = kind, target
            tar.addfile(link)
        add_member(tar, "part/6.jpg", image_bytes(6))
    rows = read_rows(path)
    assert summary(rows) == [
        (0, "part/1", "part/1.jpg", None),
        (1, "part/2", "part/2.jpg", "symlink_member"),
        (2, "part/3", "part/3.jpg", "hard_link_member"),
        (3, "part/4", "part/4.jpg", "not_a_regular_file"),
        (4, "part/6", "part/6.jpg", None),
    ]
    assert rows[4].body == image_bytes(6)


def test_damaged_data_before_the_end_marker_is_corrupt_member(tmp_path):
    path = tmp_path / "tail.tar"
    img2dataset_tar(path, 2)
    last = member_offset(path, "000000001.json")
    data = bytearray(path.read_bytes())
    data[last.offset : last.offset + 512] = b"\x01" * 512
    path.write_bytes(bytes(data))
    rows = read_rows(path)
    assert summary(rows)[-1] == (2, None, None, "corrupt_member")
    assert [r.member for r in rows[:2]] == ["000000000.jpg", "000000001.jpg"]


@pytest.mark.parametrize(
    "cut, last",
    [
        ("inside_image_data", (3, None, "000000003.jpg", "truncated_tar")),
        ("inside_header", (4, None, None, "truncated_tar")),
        ("after_member_padding", (4, None, None, "truncated_tar")),
        ("inside_member_padding", (4, None, None, "truncated_tar")),
    ],
)
def test_truncated_tar_is_one_row_after_the_complete_samples(tmp_path, cut, last):
    path = tmp_path / "t.tar"
    img2dataset_tar(path, 5)
    image = member_offset(path, "000000003.jpg")
    sidecar = member_offset(path, "000000003.json")
    end = {
        "inside_image_data": image.offset_data + image.size // 2,
        "inside_header": sidecar.offset + sidecar.size + 1024 + 100,
        "after_member_padding": sidecar.offset_data + 512,
        "inside_member_padding": sidecar.offset_data + sidecar.size,
    }[cut]
    path.write_bytes(path.read_bytes()[:end])
    for per_unit in (1, 3, 1000):
        rows = read_rows(path, rows_per_unit=per_unit)
        assert [r.member for r in rows[:3]] == [f"00000000{i}.jpg" for i in range(3)]
        assert summary(rows)[-1] == last
        assert len(rows) == last[0] + 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    damage=st.lists(st.tuples(st.integers(0, 30_000), st.binary(min_size=1, max_size=700)), max_size=3),
    keep=st.integers(1, 40_000),
)
def test_any_damage_reads_the_same_whole_or_span_by_span(tmp_path, damage, keep):
    path = tmp_path / "fuzz.tar"
    if not path.with_suffix(".orig").exists():
        img2dataset_tar(path.with_suffix(".orig"), 8)
    data = bytearray(path.with_suffix(".orig").read_bytes())
    for at, garbage in damage:
        data[at : at + len(garbage)] = garbage
    path.write_bytes(bytes(data[:keep]))
    try:
        whole = read_rows(path, rows_per_unit=1_000_000)
    except SourceError as exc:
        assert "not a tar archive" in str(exc) or "compressed" in str(exc)
        return
    one_by_one = read_rows(path, rows_per_unit=1)
    assert [r.row for r in whole] == list(range(len(whole)))

    def full(rows):
        return [(r.row, r.key, r.member, r.error, r.url, r.body) for r in rows]

    assert full(one_by_one) == full(whole)
    assert all((r.body is None) == (r.error is not None) for r in whole)


def test_oversized_member_is_reported_not_read(tmp_path):
    path = tmp_path / "big.tar"
    images = img2dataset_tar(path, 2)
    limit = min(len(b) for b in images.values()) - 1
    rows = read_rows(path, max_member_bytes=limit)
    assert [(r.error, r.body) for r in rows] == [("member_too_large", None)] * 2


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"\x1f\x8b\x08\x00" + b"\x00" * 600, "gzip-compressed"),
        (bytes(range(256)) * 8, "not a tar archive"),
    ],
)
def test_files_that_are_not_tars_are_named_errors(tmp_path, content, message):
    path = tmp_path / "bad.tar"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=rf"bad\.tar: .*{message}"):
        open_source(str(path), SourceOptions()).spans()


# Parquet with embedded images


def test_hugging_face_image_struct(tmp_path):
    path = tmp_path / "hf.parquet"
    images = [image_bytes(i, "PNG") for i in range(5)]
    cells = [{"bytes": b, "path": f"img_{i}.png"} for i, b in enumerate(images)]
    cells += [None, {"bytes": None, "path": "external.png"}]
    pq.write_table(pa.table({"image": cells, "text": ["caption"] * 7}), path, row_group_size=3)
    source = open_source(str(path), SourceOptions(rows_per_unit=2))
    rows = read_rows(path, rows_per_unit=2)
    assert source.kind == "parquet-images"
    assert [r.row for r in rows] == list(range(7))
    assert [r.body for r in rows] == [*images, None, None]
    assert [r.member for r in rows] == [*(f"img_{i}.png" for i in range(5)), None, "external.png"]
    assert [r.error for r in rows] == [None] * 5 + ["no_image_bytes"] * 2
    assert all(r.url is None and r.key is None for r in rows)


def test_img2dataset_parquet_with_jpg_column_url_and_key(tmp_path):
    path = tmp_path / "00000.parquet"
    images = [image_bytes(i) for i in range(4)]
    table = pa.table(
        {"key": [f"k{i}" for i in range(4)], "url": [f"http://u.test/{i}" for i in range(4)], "jpg": images}
    )
    pq.write_table(table, path, row_group_size=2)
    rows = read_rows(path, rows_per_unit=3)
    assert [(r.row, r.key, r.url) for r in rows] == [(i, f"k{i}", f"http://u.test/{i}") for i in range(4)]
    assert [r.body for r in rows] == images


def test_image_column_choice(tmp_path):
    path = tmp_path / "two.parquet"
    table = pa.table({"url": ["http://u.test/a"], "jpg": [image_bytes(1)], "png": [image_bytes(2, "PNG")]})
    pq.write_table(table, path)
    with pytest.raises(SourceError, match=r"several image columns \(jpg, png\).*--image-col"):
        open_source(str(path), SourceOptions())
    assert [r.body for r in read_rows(path, image_col="png")] == [image_bytes(2, "PNG")]
    with pytest.raises(SourceError, match="column 'url' is string, not binary"):
        open_source(str(path), SourceOptions(image_col="url"))
    with pytest.raises(SourceError, match="no image column 'photo'"):
        open_source(str(path), SourceOptions(image_col="photo"))


def test_url_parquet_is_still_a_url_list(tmp_path):
    path = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": ["http://u.test/1"], "caption": ["c"]}), path)
    source = open_source(str(path), SourceOptions())
    (row,) = read_rows(path)
    assert source.kind == "parquet" and row.url == "http://u.test/1" and row.body is None


# Folders of images


def test_folder_rows_sorted_sniffed_and_keyed_by_relative_path(tmp_path):
    root = tmp_path / "photos"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a.png").write_bytes(image_bytes(1, "PNG"))
    (root / "b" / "deep" / "no_extension").write_bytes(image_bytes(2))
    (root / "b" / "deep" / "x.jpg").write_bytes(image_bytes(3))
    (root / "b" / "deep" / "x.json").write_text(json.dumps({"url": "http://x.test/x.jpg", "key": "000x"}))
    (root / "b" / "error.jpg").write_bytes(b"<html>403</html>")
    (root / "README.md").write_text("# photos\n")
    (root / "b" / "notes.txt").write_text("not an image")
    source = open_source(str(root), SourceOptions(rows_per_unit=2))
    rows = read_rows(root, rows_per_unit=2)
    assert source.kind == "folder" and source.other_files == 3
    assert [(r.row, r.member, r.key, r.url) for r in rows] == [
        (0, "a.png", "a", None),
        (1, "b/deep/no_extension", "b/deep/no_extension", None),
        (2, "b/deep/x.jpg", "000x", "http://x.test/x.jpg"),
        (3, "b/error.jpg", "b/error", None),
    ]
    assert rows[1].body == image_bytes(2) and rows[3].body == b"<html>403</html>"
    assert [s.rows for s in source.spans()] == [2, 2]


def test_folder_oversized_and_unreadable_files_are_rows(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "big.png").write_bytes(image_bytes(1, "PNG"))
    (root / "gone.jpg").symlink_to(root / "missing-target.jpg")
    rows = read_rows(root, max_member_bytes=10)
    assert [(r.member, r.error, r.body) for r in rows] == [
        ("big.png", "member_too_large", None),
        ("gone.jpg", "unreadable_file", None),
    ]


def test_a_folder_is_read_elsewhere_with_the_rows_the_plan_listed_whatever_changed_since(tmp_path):
    """Before: each unit worker listed the folder again, so a file written meanwhile (or a pseudo-file such
    as /proc/kmsg, sniffed as text by the plan and unreadable by the worker) shifted the rows: a planned
    file was never read and its row named another."""
    import pickle

    from scanner.planner import plan
    from scanner.run.scan import ScanWork
    from scanner.sources.base import Span

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "b.jpg").write_bytes(image_bytes(1))
    (folder / "c").write_text("notes, not a picture\n")
    (folder / "d.png").write_bytes(image_bytes(2))
    options = SourceOptions()
    planned = plan([str(folder)], options)
    work = pickle.loads(pickle.dumps(ScanWork(planned.sources)))  # as a unit worker receives it
    (folder / "a.jpg").write_bytes(image_bytes(3))  # sorts first
    (folder / "c").write_bytes(image_bytes(4))  # sniffs as an image now
    [unit] = planned.units
    unit = pickle.loads(pickle.dumps(unit))  # as it reaches the worker
    rows = [row for batch in work.opened(options)[str(folder)].read(unit.span) for row in batch]
    assert (unit.span.start, unit.span.stop, unit.span.members) == (0, 2, ("b.jpg", "d.png"))
    assert [(row.row, row.member) for row in rows] == [(0, "b.jpg"), (1, "d.png")]
    assert rows[0].body == image_bytes(1)
    assert len(pickle.dumps(ScanWork(planned.sources))) < 1000  # no listing: each span names its files
    with pytest.raises(SourceError, match="a span of 3 rows names 2 files"):
        next(work.opened(options)[str(folder)].read(Span(0, 3, members=("b.jpg", "d.png"))))
    # A machine (a Ray node) without the folder: the shard fails with one line, not each file as unreadable.
    moved = folder.rename(tmp_path / "elsewhere")
    elsewhere = pickle.loads(pickle.dumps(ScanWork(planned.sources)))
    with pytest.raises(SourceError, match="no such directory here") as caught:
        elsewhere.opened(options)[str(folder)]
    assert caught.value.path == str(folder) and moved.is_dir()
    folder.mkdir()  # the bare mount point of a file system not mounted on that machine
    with pytest.raises(SourceError, match="every machine of the scan must see the folder"):
        list(elsewhere.opened(options)[str(folder)].read(unit.span))


def test_a_folder_resumes_only_over_the_files_its_plan_listed(tmp_path):
    """The resume fingerprint of a folder comes from the walk that listed its rows. Before, a second walk
    took it after the plan: a file written between the two was in the fingerprint but not in the rows, so a
    resumed run accepted the checkpoint, listed the file and shifted every row after it by one (the rows a
    unit had committed named other files)."""
    from scanner.config import build_config
    from scanner.errors import ResumeError
    from scanner.reports.records import RowResult, UnitReport
    from scanner.run.job import open_run
    from scanner.run.scan import ScanJob

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(image_bytes(1))
    (folder / "c.jpg").write_bytes(image_bytes(2))
    before = planned_signature(folder)
    (tmp_path / "md5.txt").write_text(hashlib.md5(b"listed").hexdigest() + "\n")
    settings = {
        "inputs": [str(folder)],
        "out": str(tmp_path / "out"),
        "hashlist": [f"md5:{tmp_path / 'md5.txt'}"],
    }
    config = build_config(settings, "test")

    class WrittenWhileStarting(ScanJob):
        def load(self):
            units = super().load()
            (folder / "b.jpg").write_bytes(image_bytes(3))  # after the plan listed a and c
            return units

    job = WrittenWhileStarting(config)
    run = open_run(job)
    assert [unit.span.members for unit in run.units] == [("a.jpg", "c.jpg")]
    assert job.fingerprint(run.lists)["inputs"] == [[str(folder), *before]]
    run.checkpoint.commit_part(0, [(0, UnitReport(0, [RowResult(str(folder), 0, None, "a", "invalid")]))])
    with pytest.raises(ResumeError):
        open_run(ScanJob(config))  # it lists a, b, c now: not the rows the checkpoint holds


def test_folder_without_images_is_a_named_error(tmp_path):
    (tmp_path / "README.md").write_text("nothing here")
    with pytest.raises(SourceError, match="no dataset shard and no image"):
        open_source(str(tmp_path), SourceOptions())


# How directories and globs expand


def test_img2dataset_webdataset_output_expands_to_its_tars_only(tmp_path):
    for shard in range(2):
        img2dataset_tar(tmp_path / f"{shard:05d}.tar", 1, shard)
        pq.write_table(pa.table({"url": ["http://u.test/"], "key": ["k"]}), tmp_path / f"{shard:05d}.parquet")
        (tmp_path / f"{shard:05d}_stats.json").write_text("{}")
    expected = [str(tmp_path / "00000.tar"), str(tmp_path / "00001.tar")]
    assert expand_inputs([str(tmp_path)]) == expected
    assert expand_inputs([str(tmp_path / "0000?.[pt]a*")]) == expected


def test_img2dataset_files_output_is_one_folder(tmp_path):
    sample_dir = tmp_path / "00000"
    sample_dir.mkdir()
    (sample_dir / "000000000.jpg").write_bytes(image_bytes(1))
    (sample_dir / "000000000.txt").write_text("a caption, not a URL list")
    (sample_dir / "000000000.json").write_text(json.dumps({"url": "http://u.test/0", "key": "000000000"}))
    pq.write_table(pa.table({"url": ["http://u.test/0"]}), tmp_path / "00000.parquet")
    assert expand_inputs([str(tmp_path)]) == [str(tmp_path)]
    (row,) = read_rows(tmp_path)
    assert (row.member, row.key, row.url) == ("00000/000000000.jpg", "000000000", "http://u.test/0")


def test_directory_mixing_shards_and_images_is_refused(tmp_path):
    img2dataset_tar(tmp_path / "a.tar", 1)
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "p.jpg").write_bytes(image_bytes(1))
    with pytest.raises(SourceError, match=r"shards and image files .*pics"):
        expand_inputs([str(tmp_path)])


# Remote paths through fsspec (its in-process memory filesystem: no network, no disk)


def test_fsspec_tar_and_parquet_read_like_local_files(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    local = tmp_path / "00000.tar"
    images = img2dataset_tar(local, 3)
    memory = fsspec.filesystem("memory")
    memory.pipe("/corpus/00000.tar", local.read_bytes())
    buffer = io.BytesIO()
    pq.write_table(pa.table({"jpg": [image_bytes(9)]}), buffer)
    memory.pipe("/corpus/00001.parquet", buffer.getvalue())
    try:
        paths = expand_inputs(["memory://corpus/*"])
        assert paths == ["memory:///corpus/00000.tar", "memory:///corpus/00001.parquet"]
        rows = read_rows(paths[0], rows_per_unit=2)
        assert [r.body for r in rows] == list(images.values())
        assert [r.url for r in rows] == [f"http://images.test/{i}.jpg" for i in range(3)]
        assert [r.body for r in read_rows(paths[1])] == [image_bytes(9)]
    finally:
        memory.rm("/corpus", recursive=True)


def test_remote_path_without_its_backend_names_what_to_install():
    pytest.importorskip("fsspec")
    with pytest.raises(SourceError, match=r"nosuchscheme://bucket/a\.tar: cannot open remote path"):
        open_source("nosuchscheme://bucket/a.tar", SourceOptions())


def test_input_signature_changes_with_the_content_of_a_folder_or_shard(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(image_bytes(1))
    before = planned_signature(root)
    assert planned_signature(root) == before and before[0] == 1
    (root / "sub" / "b.jpg").write_bytes(image_bytes(2))
    added = planned_signature(root)
    assert added[0] == 2 and added != before
    (root / "sub" / "a.jpg").write_bytes(image_bytes(3) + b"more")
    assert planned_signature(root) not in (before, added)
    shard = tmp_path / "s.tar"
    img2dataset_tar(shard, 1)
    assert input_signature(str(shard))[0] == shard.stat().st_size


# A whole scan of all three kinds, audited for writes


def test_scan_of_a_tar_an_image_parquet_and_a_folder_matches_and_stores_nothing(tmp_path):
    from test_no_content_at_rest import AUDIT_SITECUSTOMIZE

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    tar_path = corpus / "00000.tar"
    tar_images = img2dataset_tar(tar_path, 5)
    broken = member_offset(tar_path, "000000003.jpg")
    data = bytearray(tar_path.read_bytes())
    data[broken.offset : broken.offset + 64] = b"\xff" * 64
    tar_path.write_bytes(bytes(data))
    parquet_images = [image_bytes(10 + i, "PNG") for i in range(3)]
    cells = [{"bytes": body, "path": f"p{i}.png"} for i, body in enumerate(parquet_images)]
    hf_path = corpus / "hf.parquet"
    pq.write_table(pa.table({"image": cells, "url": [f"http://hf.test/{i}" for i in range(3)]}), hf_path)
    folder = tmp_path / "photos"
    (folder / "album").mkdir(parents=True)
    (folder / "album" / "a.jpg").write_bytes(image_bytes(20))
    (folder / "album" / "b.jpg").write_bytes(b"<html>403 Forbidden</html>")
    (folder / "README.md").write_text("holiday photos\n")
    wanted = [tar_images["000000001.jpg"], parquet_images[2], image_bytes(20)]
    listfile = tmp_path / "list.txt"
    listfile.write_text("".join(hashlib.md5(body).hexdigest() + "\n" for body in wanted))

    out, log = audited_scan(tmp_path, AUDIT_SITECUSTOMIZE, [tar_path, hf_path, folder], listfile)

    assert [line for line in log if line.startswith("VIOLATION")] == []
    assert len({line for line in log if line.startswith("start ")}) >= 2, "main process and worker audited"
    table = pq.read_table(out / "outcomes.parquet").to_pydict()
    rows = list(zip(*(table[c] for c in ("shard", "row", "outcome", "reason", "member")), strict=True))
    tar, hf, photos = str(tar_path), str(hf_path), str(folder)
    assert rows == [
        (tar, 0, "clean", None, "000000000.jpg"),
        (tar, 1, "match", None, "000000001.jpg"),
        (tar, 2, "clean", None, "000000002.jpg"),
        (tar, 3, "invalid", "corrupt_member", None),
        (tar, 4, "invalid", "no_image_member", "000000003.txt"),
        (tar, 5, "clean", None, "000000004.jpg"),
        (hf, 0, "clean", None, "p0.png"),
        (hf, 1, "clean", None, "p1.png"),
        (hf, 2, "match", None, "p2.png"),
        (photos, 0, "match", None, "album/a.jpg"),
        (photos, 1, "invalid", "not_an_image", "album/b.jpg"),
    ]
    assert table["url"][1] == "http://images.test/1.jpg" and table["url"][8] == "http://hf.test/2"
    matches = [json.loads(line) for line in (out / "matches.jsonl").read_text().splitlines()]
    assert [(m["shard"], m["row"], m["key"], m["hash_type"]) for m in matches] == [
        (tar, 1, "000000001", "md5"),
        (hf, 2, None, "md5"),
        (photos, 0, "album/a", "md5"),
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["kind"] for i in manifest["inputs"]] == ["webdataset", "parquet-images", "folder"]
    every_image = [*tar_images.values(), *parquet_images, image_bytes(20)]
    needles = [body[len(body) // 2 : len(body) // 2 + 64] for body in every_image]
    for path in (p for p in out.rglob("*") if p.is_file()):
        content = path.read_bytes()
        assert not any(needle in content for needle in needles), f"{path} holds image bytes"


def audited_scan(tmp_path, sitecustomize: str, inputs: list, listfile) -> tuple:
    """Run `scanner scan` in a child process whose every file write, workers' too, an audit hook logs."""
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(sitecustomize)
    out, log = tmp_path / "out", tmp_path / "audit.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hook_dir), str(REPO)]),
        "AUDIT_LOG": str(log),
        "AUDIT_ALLOWED": str(out),
    }
    command = [sys.executable, "-m", "scanner", "scan", *map(str, inputs), "--hashlist", f"md5:{listfile}"]
    command += ["--out", str(out), "--quiet", "--workers", "1"]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out, log.read_text().splitlines()

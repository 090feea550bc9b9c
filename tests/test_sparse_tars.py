"""Tars made by GNU tar with sparse members, hard links and symlinks: every member gets its own outcome and
every image its right bytes, whether the shard is read whole or span by span, through the source and a scan.

A sparse member's header gives its expanded size while only the map's chunks are stored; before the fix
the reader took that many raw bytes from the data offset, so the whole shard came back as one
`truncated_tar` row, or an image was hashed from the wrong bytes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

import pyarrow.parquet as pq
import pytest
from conftest import run_scanner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from scanner.errors import SourceError
from scanner.hashing import HASH_TYPES, hash_image
from scanner.sources import SourceOptions, open_source

MiB = 1024 * 1024
FORMATS = {
    "gnu": ["--format=gnu"],
    "pax-0.0": ["--format=pax", "--sparse-version=0.0"],
    "pax-0.1": ["--format=pax", "--sparse-version=0.1"],
    "pax-1.0": ["--format=pax", "--sparse-version=1.0"],
}
# The order members are stored in: the sparse ones first, so that anything they break shows after them.
NAMES = [
    "a_sparse.png",
    "b_hole_first.jpg",
    "c.jpg",
    "c_hard.jpg",
    "d_sym.jpg",
    "e_sym_out.jpg",
    "f.jpg",
    "f.json",
    "g.png",
    "h.jpg",
    "h.json",
]


def gnu_tar() -> str:
    tar = shutil.which("tar")
    if tar is None:
        pytest.skip("no tar on PATH")
    version = subprocess.run([tar, "--version"], capture_output=True, text=True, timeout=30).stdout
    if "GNU tar" not in version:
        pytest.skip(f"tar is not GNU tar, which --sparse needs: {version.splitlines()[:1]}")
    return tar


def encoded(seed: int, fmt: str, size: tuple[int, int] = (24, 16)) -> bytes:
    image = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256))
    image.putpixel((seed % size[0], seed % size[1]), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def make_files(folder) -> dict[str, bytes]:
    """The members' files, and the bytes each image member must read back as."""
    folder.mkdir()
    sparse_png = folder / "a_sparse.png"
    sparse_png.write_bytes(encoded(1, "PNG", (64, 64)))
    with open(sparse_png, "r+b") as handle:
        handle.truncate(MiB)  # a real image with 1 MiB of trailing zeros: stored as a hole
    with open(folder / "b_hole_first.jpg", "wb") as handle:
        handle.seek(256 * 1024)  # a hole first, then a JPEG: not an image, but its bytes must be right
        handle.write(encoded(2, "JPEG"))
    (folder / "c.jpg").write_bytes(encoded(3, "JPEG"))
    os.link(folder / "c.jpg", folder / "c_hard.jpg")
    (folder / "d_sym.jpg").symlink_to("c.jpg")
    (folder / "e_sym_out.jpg").symlink_to("/etc/passwd")
    for name, seed, fmt in [("f.jpg", 6, "JPEG"), ("g.png", 7, "PNG"), ("h.jpg", 8, "JPEG")]:
        (folder / name).write_bytes(encoded(seed, fmt))
    for stem in ("f", "h"):
        (folder / f"{stem}.json").write_text(json.dumps({"url": f"http://x.test/{stem}", "key": f"k-{stem}"}))
    return {
        name: (folder / name).read_bytes()
        for name in ("a_sparse.png", "b_hole_first.jpg", "c.jpg", "f.jpg", "g.png", "h.jpg")
    }


def make_tar(tmp_path, kind: str) -> tuple:
    tar = gnu_tar()
    files = make_files(tmp_path / "files")
    shard = tmp_path / f"{kind}.tar"
    command = [tar, "--sparse", *FORMATS[kind], "-cf", str(shard), "-C", str(tmp_path / "files"), *NAMES]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    with tarfile.open(shard) as archive:
        members = {m.name: m for m in archive.getmembers()}
    # The tar is what the test says it is: sparse members, a hard link and symlinks, made by GNU tar.
    assert members["a_sparse.png"].issparse() and members["b_hole_first.jpg"].issparse()
    assert members["a_sparse.png"].size == MiB
    assert members["c_hard.jpg"].islnk() and members["d_sym.jpg"].issym() and members["e_sym_out.jpg"].issym()
    return shard, files


def expected_rows(files: dict[str, bytes]) -> list[tuple]:
    """(row, key, member, url, error, md5 of the body) in shard order."""
    md5 = {name: hashlib.md5(body).hexdigest() for name, body in files.items()}
    return [
        (0, "a_sparse", "a_sparse.png", None, None, md5["a_sparse.png"]),
        (1, "b_hole_first", "b_hole_first.jpg", None, None, md5["b_hole_first.jpg"]),
        (2, "c", "c.jpg", None, None, md5["c.jpg"]),
        (3, "c_hard", "c_hard.jpg", None, "hard_link_member", None),
        (4, "d_sym", "d_sym.jpg", None, "symlink_member", None),
        (5, "e_sym_out", "e_sym_out.jpg", None, "symlink_member", None),
        (6, "k-f", "f.jpg", "http://x.test/f", None, md5["f.jpg"]),
        (7, "g", "g.png", None, None, md5["g.png"]),
        (8, "k-h", "h.jpg", "http://x.test/h", None, md5["h.jpg"]),
    ]


def read(shard, per_unit: int) -> list:
    source = open_source(str(shard), SourceOptions(rows_per_unit=per_unit))
    return [row for span in source.spans() for batch in source.read(span) for row in batch]


@pytest.mark.parametrize("kind", list(FORMATS))
def test_sparse_and_link_members_each_get_their_row_and_the_rest_of_the_shard_is_read(tmp_path, kind):
    shard, files = make_tar(tmp_path, kind)
    for per_unit in (1, 2, 1000):
        rows = read(shard, per_unit)
        seen = [
            (r.row, r.key, r.member, r.url, r.error, hashlib.md5(r.body).hexdigest() if r.body else None)
            for r in rows
        ]
        assert seen == expected_rows(files), f"{kind}, {per_unit} rows per unit"
    by_member = {row.member: row for row in read(shard, 1000)}
    for name in ("a_sparse.png", "c.jpg", "f.jpg", "g.png", "h.jpg"):  # real images: every hash agrees
        assert hash_image(by_member[name].body, HASH_TYPES) == hash_image(files[name], HASH_TYPES), name


def test_a_sparse_member_over_the_member_limit_is_refused_by_its_expanded_size(tmp_path):
    shard, files = make_tar(tmp_path, "pax-1.0")
    rows = read(shard, 1000)
    small = max(len(files[n]) for n in ("c.jpg", "f.jpg", "g.png", "h.jpg"))
    source = open_source(str(shard), SourceOptions(max_member_bytes=small))
    limited = [row for span in source.spans() for batch in source.read(span) for row in batch]
    assert [(r.member, r.error) for r in limited[:2]] == [
        ("a_sparse.png", "member_too_large"),
        ("b_hole_first.jpg", "member_too_large"),
    ]
    assert [(r.member, r.body) for r in limited[2:]] == [(r.member, r.body) for r in rows[2:]]


@pytest.mark.parametrize(
    "headers",
    [
        {"GNU.sparse.map": "0,abc", "GNU.sparse.size": "100"},
        {"GNU.sparse.size": "zz", "GNU.sparse.numblocks": "1"},
        {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "qq"},
    ],
    ids=["map-0.1-not-numbers", "size-0.0-not-a-number", "realsize-1.0-not-a-number"],
)
def test_a_damaged_sparse_header_is_one_row_and_the_walk_goes_on(tmp_path, headers):
    """tarfile lets a ValueError out of such headers: it was a traceback that stopped the scan."""
    shard = tmp_path / "damaged.tar"
    later = {f"b{i}.jpg": encoded(10 + i, "JPEG") for i in range(3)}
    with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("a.jpg")
        data = b"1\n0\n5\n" if "GNU.sparse.major" in headers else b"x" * 10
        info.size, info.pax_headers = len(data), headers
        archive.addfile(info, io.BytesIO(data))
        for name, body in later.items():
            member = tarfile.TarInfo(name)
            member.size = len(body)
            archive.addfile(member, io.BytesIO(body))
    for per_unit in (1, 1000):
        rows = read(shard, per_unit)
        assert (rows[0].row, rows[0].error) == (0, "corrupt_member")
        assert [(r.member, r.body) for r in rows[-3:]] == list(later.items())
        assert [r.row for r in rows] == list(range(len(rows)))


def test_a_damaged_sparse_header_cut_by_the_end_of_the_file_is_a_named_error(tmp_path):
    shard, _files = make_tar(tmp_path, "gnu")
    header = bytearray(shard.read_bytes()[:512])
    header[482] = 1  # "an extension block of the sparse map follows", and the file ends
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(bytes(header))
    with pytest.raises(SourceError, match=r"cut\.tar: not a tar archive"):
        read(cut, 1000)


def test_a_scan_of_a_sparse_tar_matches_the_images_after_the_sparse_members(tmp_path):
    shard, files = make_tar(tmp_path, "pax-1.0")
    wanted = ["a_sparse.png", "b_hole_first.jpg", "h.jpg"]
    listfile = tmp_path / "list.txt"
    listfile.write_text("".join(hashlib.md5(files[name]).hexdigest() + "\n" for name in wanted))
    out = tmp_path / "out"
    args = ["scan", str(shard), "--hashlist", f"md5:{listfile}", "--out", str(out), "--workers", "1"]
    done = run_scanner(*args, "--quiet", timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pq.read_table(out / "outcomes.parquet").to_pydict()
    outcomes = list(zip(table["row"], table["member"], table["outcome"], table["reason"], strict=True))
    assert outcomes == [
        (0, "a_sparse.png", "match", None),
        (1, "b_hole_first.jpg", "match", "not_an_image"),  # its exact bytes match; it is no image
        (2, "c.jpg", "clean", None),
        (3, "c_hard.jpg", "invalid", "hard_link_member"),
        (4, "d_sym.jpg", "invalid", "symlink_member"),
        (5, "e_sym_out.jpg", "invalid", "symlink_member"),
        (6, "f.jpg", "clean", None),
        (7, "g.png", "clean", None),
        (8, "h.jpg", "match", None),
    ]


@pytest.fixture(scope="module")
def sparse_tars(tmp_path_factory) -> dict[str, bytes]:
    """The gnu and pax-1.0 tars of make_tar, as bytes to damage."""
    made = {}
    for kind in ("gnu", "pax-1.0"):
        shard, _files = make_tar(tmp_path_factory.mktemp(kind), kind)
        made[kind] = shard.read_bytes()
    return made


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["gnu", "pax-1.0"]),
    damage=st.lists(st.tuples(st.integers(0, 12_000), st.binary(min_size=1, max_size=64)), max_size=3),
    keep=st.integers(1, 40_000),
)
def test_any_damage_to_a_sparse_tar_reads_the_same_whole_or_span_by_span(
    tmp_path, sparse_tars, kind, damage, keep
):
    """The headers and maps of sparse members (the first 12 KB) damaged anywhere: rows or a named error."""
    data = bytearray(sparse_tars[kind])
    for at, garbage in damage:
        data[at : at + len(garbage)] = garbage
    shard = tmp_path / "fuzz.tar"
    shard.write_bytes(bytes(data[:keep]))
    try:
        whole = read(shard, 1_000_000)
    except SourceError as exc:
        assert "not a tar archive" in str(exc) or "compressed" in str(exc)
        return

    def full(rows):
        return [(r.row, r.key, r.member, r.error, r.url, r.body) for r in rows]

    assert [r.row for r in whole] == list(range(len(whole)))
    assert full(read(shard, 1)) == full(whole)
    assert all((r.body is None) == (r.error is not None) for r in whole)

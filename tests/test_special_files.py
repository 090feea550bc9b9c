"""Inputs that are not regular files: FIFOs, devices, sockets and symlinks to them, in a folder corpus (as
images and as sidecars) and given as shard paths. None may block a scan or be read without bound.

Every read of a corpus runs in a child process with a timeout and an address-space limit, so that a
regression fails the test in seconds instead of hanging it or filling the machine's memory."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import REPO
from source_support import image_bytes

MiB = 1024 * 1024
CHILD_MEMORY = 4096 * MiB
TIMEOUT = 60

READ_ROWS = """
import hashlib, json, sys
from scanner.sources import SourceOptions, open_source
source = open_source(sys.argv[1], SourceOptions(rows_per_unit=int(sys.argv[2])))
rows = [r for span in source.spans() for batch in source.read(span) for r in batch]
print(json.dumps([
    [r.row, r.member, r.error, r.key, r.url, hashlib.md5(r.body).hexdigest() if r.body else None]
    for r in rows
]))
"""

OPEN_INPUT = """
import sys
from scanner.errors import SourceError
from scanner.sources.storage import open_input
try:
    open_input(sys.argv[1])
except SourceError as exc:
    print(exc)
"""

OPEN_SOURCE = """
import sys
from scanner.errors import SourceError
from scanner.sources import SourceOptions, open_source
from scanner.sources.storage import open_input
for path in sys.argv[1:]:
    for opener in (lambda: open_source(path, SourceOptions()), lambda: open_input(path)):
        try:
            opener()
        except SourceError as exc:
            print(exc)
"""


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def child(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run a script of this checkout in a child process, bounded in time and memory."""
    return bounded(["-c", script, *args])


def scanner(*args: str) -> subprocess.CompletedProcess:
    """`scanner ARGS` bounded in time and memory (conftest's run_scanner, with a memory limit)."""
    return bounded(["-m", "scanner", *args])


def bounded(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=limit_memory,
    )


@pytest.fixture
def hostile_folder(tmp_path):
    """A folder corpus of normal images among every kind of file that is not a regular file.

    The FIFOs sort first, so that a reader that opens them blocking hangs before it reaches anything else.
    Yields (folder, {name: expected (error, md5 of body)}, the open socket)."""
    folder = tmp_path / "c"
    folder.mkdir()
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(image_bytes(7, "PNG"))
    images = {name: image_bytes(seed) for seed, name in enumerate(["c.jpg", "d.jpg", "i.jpg", "j.jpg"])}
    for name, data in images.items():
        (folder / name).write_bytes(data)
    os.mkfifo(folder / "a_fifo.jpg")
    os.mkfifo(folder / "b_fifo")  # no image extension: sniffed when the scan is planned
    (folder / "c.json").symlink_to("/dev/zero")  # a sidecar with stat size 0 that never ends
    os.mkfifo(folder / "d.json")  # a sidecar no writer will ever open
    (folder / "e_zero.jpg").symlink_to("/dev/zero")
    (folder / "e_zero_noext").symlink_to("/dev/zero")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(folder / "f_sock.jpg"))
    with open(folder / "g_huge.jpg", "wb") as handle:
        handle.truncate(10 * 1024 * MiB)  # sparse: 10 GB by stat, nothing on disk
    (folder / "h_outside.png").symlink_to(outside)
    (folder / "i.json").mkdir()  # a directory where a sidecar was expected
    (folder / "j.json").write_text(json.dumps({"url": "http://x.test/j.jpg", "key": "jay"}))
    expected = {
        "a_fifo.jpg": ("not_a_regular_file", None),
        "b_fifo": ("not_a_regular_file", None),
        "c.jpg": (None, md5(images["c.jpg"])),
        "c.json": ("not_a_regular_file", None),  # not a caption to skip: nothing goes unchecked silently
        "d.jpg": (None, md5(images["d.jpg"])),
        "d.json": ("not_a_regular_file", None),
        "e_zero.jpg": ("not_a_regular_file", None),
        "e_zero_noext": ("not_a_regular_file", None),
        "f_sock.jpg": ("not_a_regular_file", None),
        "g_huge.jpg": ("member_too_large", None),
        "h_outside.png": (None, md5(outside.read_bytes())),
        "i.jpg": (None, md5(images["i.jpg"])),
        "j.jpg": (None, md5(images["j.jpg"])),
    }
    try:
        yield folder, expected
    finally:
        listener.close()


def test_a_folder_of_special_files_reads_one_row_each_without_blocking(hostile_folder):
    folder, expected = hostile_folder
    for per_unit in (1, 1000):
        done = child(READ_ROWS, str(folder), str(per_unit))
        assert done.returncode == 0, done.stderr[-2000:]
        rows = json.loads(done.stdout)
        assert [r[0] for r in rows] == list(range(len(expected)))
        assert {member: (error, body) for _, member, error, _, _, body in rows} == expected
        keys_and_urls = {member: (key, url) for _, member, _, key, url, _ in rows}
        assert keys_and_urls["c.jpg"] == ("c", None)  # the /dev/zero sidecar is not metadata
        assert keys_and_urls["d.jpg"] == ("d", None)
        assert keys_and_urls["i.jpg"] == ("i", None)
        assert keys_and_urls["j.jpg"] == ("jay", "http://x.test/j.jpg")  # real sidecars still count


def test_a_scan_of_a_folder_of_special_files_finishes_with_one_outcome_per_file(hostile_folder, tmp_path):
    folder, expected = hostile_folder
    listfile = tmp_path / "list.txt"
    wanted = [body for _, body in expected.values() if body is not None]
    listfile.write_text("".join(f"{digest}\n" for digest in wanted[:2]))
    out = tmp_path / "out"
    args = ["scan", str(folder), "--hashlist", f"md5:{listfile}", "--out", str(out), "--workers", "1"]
    done = scanner(*args, "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    table = pq.read_table(out / "outcomes.parquet").to_pydict()
    outcomes = {m: (o, r) for m, o, r in zip(table["member"], table["outcome"], table["reason"], strict=True)}
    assert len(table["member"]) == len(expected)
    matched = {m for m, (_, digest) in expected.items() if digest in wanted[:2]}
    for member, (error, _digest) in expected.items():
        if error is not None:
            assert outcomes[member] == ("invalid", error), member
        else:
            assert outcomes[member] == ("match" if member in matched else "clean", None), member
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reasons"]["not_a_regular_file"] == 7


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_a_shard_path_that_is_not_a_regular_file_is_a_named_error(tmp_path, kind):
    shards = [tmp_path / f"shard{suffix}" for suffix in (".csv", ".jsonl", ".txt", ".parquet", ".tar")]
    for shard in shards:
        if kind == "fifo":
            os.mkfifo(shard)
        else:
            shard.symlink_to("/dev/zero")
    what = "a FIFO" if kind == "fifo" else "a character device"
    expected = [f"{shard}: not a regular file ({what}): give a regular file" for shard in shards]
    # Opening the shard, and the check every local shard read goes through, made on the opened
    # descriptor without blocking.
    opened = child(OPEN_SOURCE, *map(str, shards))
    assert opened.returncode == 0, opened.stderr[-2000:]
    assert opened.stdout.splitlines() == [line for message in expected for line in (message, message)]
    listfile = tmp_path / "list.txt"
    listfile.write_text(md5(b"x") + "\n")
    out = tmp_path / "out"
    done = scanner("scan", str(shards[3]), "--hashlist", f"md5:{listfile}", "--out", str(out))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert expected[3] in done.stderr


def test_a_socket_given_as_a_shard_is_a_named_error(tmp_path):
    shard = tmp_path / "s.csv"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(shard))
        opened = child(OPEN_INPUT, str(shard))
    assert opened.returncode == 0, opened.stderr[-2000:]
    assert opened.stdout.strip() == f"{shard}: not a regular file (a socket or device): give a regular file"


def test_stat_size_is_only_a_hint_reads_stop_at_the_cap(tmp_path):
    """/proc files say size 0 and hold more: the cap, not stat, bounds the read."""
    from scanner.regularfile import open_regular, read_capped

    with open_regular("/proc/self/maps") as handle:
        assert read_capped(handle, 10) is None
    with open_regular("/proc/self/maps") as handle:
        assert len(read_capped(handle, 100 * MiB) or b"") > 10
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 100)
    with open_regular(str(small)) as handle:
        assert read_capped(handle, 100) == b"x" * 100
    with open_regular(str(small)) as handle:
        assert read_capped(handle, 99) is None


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_hash_lists_configs_and_hashed_files_that_are_not_regular_files_are_named_errors(tmp_path, kind):
    """Every other input a user names is opened the same way: a FIFO hung these, /dev/zero filled memory."""
    special = tmp_path / "special.txt"
    if kind == "fifo":
        os.mkfifo(special)
        what = "a FIFO"
    else:
        special.symlink_to("/dev/zero")
        what = "a character device"
    shard, listfile = tmp_path / "l.csv", tmp_path / "list.txt"
    shard.write_text("url\nhttp://127.0.0.1:9/x.jpg\n")
    listfile.write_text(md5(b"x") + "\n")
    scan = ["scan", str(shard), "--no-fetch", "--out", str(tmp_path / "out")]
    config = ["--hashlist", f"md5:{listfile}", "--config", str(special)]
    cases = [
        ([*scan, "--hashlist", f"md5:{special}"], f"{special}: cannot read the list"),
        ([*scan, *config], f"{special}: cannot read config"),
        (["hash", str(special)], f"{special}: cannot read: "),
    ]
    for args, message in cases:
        done = scanner(*args)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert message in done.stderr
        assert f"not a regular file ({what})" in done.stderr

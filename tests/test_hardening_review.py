"""Holes a second hostile review of issue 14 found, tried through the real CLI, real files and processes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import REPO, ScannerCli
from tests.loopback import LoopbackServer


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("how", "value"),
    [
        ("flag", "https://example.org/abuse\r\nX-Injected: 1"),  # header injection: aiohttp raised per row
        ("flag", "https://example.org/caf\u00e9"),  # httpx: UnicodeEncodeError per row
        ("toml", "scanner\nbot"),  # fetch.user_agent from a config file
        ("toml", "bot\x00"),
    ],
)
def test_a_user_agent_that_no_header_can_carry_is_a_setting_error_before_any_request(
    scanner_cli: ScannerCli, tmp_path: Path, how: str, value: str
) -> None:
    """Before: every row was `dead client_error` with a traceback printed per URL, and exit 0."""
    with LoopbackServer({"/a.jpg": _jpeg()}) as server:
        shard = tmp_path / "urls.csv"
        shard.write_text(f"url\n{server.url('/a.jpg')}\n", encoding="utf-8")
        hashes = tmp_path / "md5.txt"
        hashes.write_text("0" * 32 + "\n", encoding="utf-8")
        out = tmp_path / "out"
        args = ["scan", str(shard), "--hashlist", str(hashes), "--out", str(out), "--allow-private-networks"]
        args += ["--quiet", "--workers", "1", "--client", "httpx"]
        if how == "flag":
            args += ["--contact", value]
        else:
            config = tmp_path / "scan.toml"
            escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\x00", "\\u0000")
            config.write_text(f'[fetch]\nuser_agent = "{escaped}"\n', encoding="utf-8")
            args += ["--config", str(config)]
        result = scanner_cli(*args)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "printable ASCII" in result.stderr
        assert server.total_hits == 0
        assert not out.exists()


def _waiting_regular_file() -> str:
    """A file that is regular by stat but whose read waits (here /proc/kmsg: root only), or skip."""
    path = "/proc/kmsg"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        pytest.skip("no readable /proc/kmsg (a regular file whose read waits) on this machine")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            pytest.skip("/proc/kmsg is not a regular file here")
    finally:
        os.close(fd)
    return path


def test_a_regular_file_whose_read_waits_is_a_row_or_a_named_error_not_a_hang(
    scanner_cli: ScannerCli, tmp_path: Path
) -> None:
    """Before: open_regular made the descriptor blocking again, so an image, sidecar or shard symlinked to a
    pseudo-file such as /proc/kmsg (S_ISREG, size 0) hung the scan forever at planning."""
    waiting = _waiting_regular_file()
    jpeg = _jpeg()
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg)
    (folder / "a.json").symlink_to(waiting)  # a sidecar
    (folder / "k.jpg").symlink_to(waiting)  # an image
    hashes = tmp_path / "md5.txt"
    hashes.write_text(hashlib.md5(jpeg).hexdigest() + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = scanner_cli(
        "scan",
        str(folder),
        "--hashlist",
        str(hashes),
        "--out",
        str(out),
        "--quiet",
        "--workers",
        "1",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = {row["member"]: row for row in pq.read_table(out / "outcomes.parquet").to_pylist()}
    assert rows["a.jpg"]["outcome"] == "match"
    assert rows["k.jpg"]["outcome"] == "invalid"
    for name in ("waiting.csv", "waiting.txt", "waiting.jsonl"):
        shard = tmp_path / name
        shard.symlink_to(waiting)
        result = scanner_cli(
            "scan",
            str(shard),
            "--hashlist",
            str(hashes),
            "--out",
            str(tmp_path / f"out-{name}"),
            "--quiet",
            timeout=120,
        )
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        assert name in result.stderr
    listed = ["--hashlist", str(tmp_path / "waiting.txt"), "--out", str(tmp_path / "out-list")]
    for args in (["hash", str(folder / "k.jpg")], ["scan", str(folder), *listed]):
        result = scanner_cli(*args, timeout=120)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def _killed_scan(
    tmp_path: Path, server: LoopbackServer, fast_rows: int, committed: tuple[int, ...]
) -> tuple[list[str], dict[str, str], Path]:
    """A scan of `fast_rows` matching images then 4 URLs that hang, 4 rows a unit, SIGKILLed once the units
    `committed` are committed: its command line (ending in --out, for the caller's directory), environment
    and report directory."""
    jpeg = _jpeg()  # what the server serves at /a.jpg: the same bytes every call
    shard = tmp_path / "urls.csv"
    fast = [server.url(f"/a.jpg?n={i}") for i in range(fast_rows)]
    slow = [server.url(f"/slow?seconds=60&n={i}") for i in range(4)]
    shard.write_text("url\n" + "\n".join(fast + slow) + "\n", encoding="utf-8")
    hashes = tmp_path / "md5.txt"
    hashes.write_text(hashlib.md5(jpeg).hexdigest() + "\n", encoding="utf-8")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "scanner", "scan", str(shard), "--hashlist", str(hashes), "--quiet"]
    args += ["--allow-private-networks", "--workers", "1", "--rows-per-unit", "4", "--out"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    scan = subprocess.Popen([*args, str(out)], env=env, start_new_session=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not all((out / ".units" / f"u{i:06d}.done.json").exists() for i in committed):
            assert time.monotonic() < deadline and scan.poll() is None, f"units {committed} never committed"
            time.sleep(0.1)
    finally:
        os.killpg(scan.pid, signal.SIGKILL)
        scan.wait()
    return args, env, out


def test_a_fifo_device_or_link_in_the_checkpoint_is_a_named_error_not_a_hang(tmp_path: Path) -> None:
    """Before: a FIFO planted as a done marker, a unit file or the fingerprint hung the resume forever (the
    digest check opened it), a done marker or fingerprint linked to /dev/zero was read until the OOM killer,
    and one linked to a copy of itself was followed."""
    with LoopbackServer({"/a.jpg": _jpeg()}) as server:
        args, env, out = _killed_scan(tmp_path, server, fast_rows=4, committed=(0,))
        damages = {
            "fifo-marker": ("u000000.done.json", "fifo"),
            "fifo-unit-file": ("u000000.matches.jsonl", "fifo"),
            "fifo-fingerprint": ("fingerprint.json", "fifo"),
            "linked-marker": ("u000000.done.json", "link"),
            "linked-fingerprint": ("fingerprint.json", "link"),
        }
        for name, (target, kind) in damages.items():
            damaged = tmp_path / name
            shutil.copytree(out, damaged, symlinks=True)
            path = damaged / ".units" / target
            if kind == "fifo":
                path.unlink()
                os.mkfifo(path)
            else:
                kept = tmp_path / f"{name}-{target}"
                path.rename(kept)
                path.symlink_to(kept)
            result = subprocess.run(
                [*args, str(damaged)], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
            )
            assert result.returncode == 1, (name, result.stderr)
            assert "Traceback" not in result.stderr, name
            assert str(path) in result.stderr and "--restart" in result.stderr, (name, result.stderr)
        assert (
            server.hits("/slow") == 4
        )  # only the interrupted scan asked for them: each resume stopped first


def test_a_fifo_or_device_among_a_report_directorys_files_is_refused_by_every_command_that_reads_it(
    scanner_cli: ScannerCli, tmp_path: Path
) -> None:
    """Before: a FIFO as summary.json, manifest.json, matches.jsonl or outcomes.parquet hung report, verify
    or rescan forever, and one linked to /dev/zero was read until memory ran out."""
    jpeg = _jpeg()
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg)
    hashes = tmp_path / "md5.txt"
    hashes.write_text(hashlib.md5(jpeg).hexdigest() + "\n", encoding="utf-8")
    finished = tmp_path / "finished"
    result = scanner_cli(
        "scan", str(folder), "--hashlist", str(hashes), "--out", str(finished), "--quiet", "--keep-hashes"
    )
    assert result.returncode == 0, result.stderr
    for name in ("summary.json", "manifest.json", "matches.jsonl", "outcomes.parquet"):
        for kind in ("fifo", "device"):
            damaged = tmp_path / f"{name}-{kind}"
            shutil.copytree(finished, damaged)
            (damaged / name).unlink()
            if kind == "fifo":
                os.mkfifo(damaged / name)
            else:
                (damaged / name).symlink_to(os.devnull)
            out = ["--out", str(tmp_path / f"again-{name}-{kind}")]
            for command in (
                ["verify", str(damaged)],
                ["report", str(damaged)],
                ["export", str(damaged), "--output", str(tmp_path / "referrals.csv")],
                ["rescan", str(damaged), *out, "--quiet", "--allow-private-networks"],
                ["rematch", str(damaged), "--hashlist", str(hashes), *out],
            ):
                result = scanner_cli(*command, timeout=60)
                assert result.returncode == 1, (command, result.stderr)
                shown = "a FIFO" if kind == "fifo" else "a character device"
                expected = f"{damaged / name}: not a regular file ({shown})"
                assert expected in result.stderr, (command, result.stderr)


def test_demo_refuses_a_link_planted_as_its_input_folder_and_leaves_the_target_alone(
    scanner_cli: ScannerCli, tmp_path: Path
) -> None:
    """Before: `scanner demo --out DIR` with DIR/demo-input a symbolic link chmodded the link's target to
    0700 and wrote the demo's shard and hash list into it."""
    out = tmp_path / "demo"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    victim.chmod(0o755)
    (out / "demo-input").symlink_to(victim)
    result = scanner_cli("demo", "--out", str(out), "--images", "2", timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "symbolic link" in result.stderr
    assert stat.S_IMODE(victim.stat().st_mode) == 0o755
    assert list(victim.iterdir()) == []


def _tiny_file_size_limit() -> None:
    """In the child: every write fails with EFBIG, as on a disk with no room left (ENOSPC)."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def test_a_full_disk_when_report_export_or_sign_takes_the_lock_names_the_file_not_an_internal_error(
    scanner_cli: ScannerCli, tmp_path: Path
) -> None:
    """Before: the lock holder's pid and command line could not be written, and report, export and sign
    stopped with `internal error: OSError: [Errno 28] No space left on device` (EFBIG here)."""
    jpeg = _jpeg()
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg)
    hashes = tmp_path / "md5.txt"
    hashes.write_text(hashlib.md5(jpeg).hexdigest() + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert (
        scanner_cli("scan", str(folder), "--hashlist", str(hashes), "--out", str(out), "--quiet").returncode
        == 0
    )
    key = tmp_path / "key"
    assert scanner_cli("keygen", "--out", str(key)).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for command, written in (
        (["report", str(out)], "report.html"),
        (["export", str(out), "--format", "csv"], "referrals.csv"),
        (["sign", str(out), "--key", str(key)], "manifest.json.sig"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "scanner", *command],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=_tiny_file_size_limit,
        )
        assert result.returncode == 1, (command, result.stderr)
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert f"cannot write {out / written}" in result.stderr, result.stderr


def test_an_out_url_whose_server_refuses_the_connection_is_a_clear_error(
    scanner_cli: ScannerCli, tmp_path: Path
) -> None:
    """Before: `--out ftp://127.0.0.1:PORT/x` with nothing listening stopped with `internal error:
    ConnectionRefusedError` (fsspec's FTP file system connects when it is made)."""
    pytest.importorskip("fsspec")
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(_jpeg())
    hashes = tmp_path / "md5.txt"
    hashes.write_text("0" * 32 + "\n", encoding="utf-8")
    for command in (
        ["scan", str(folder), "--hashlist", str(hashes), "--quiet"],
        ["rematch", str(tmp_path / "missing" / "hashes.parquet"), "--hashlist", str(hashes)],
    ):
        result = scanner_cli(*command, "--out", f"ftp://127.0.0.1:{port}/reports", timeout=120)
        assert result.returncode == 1, (command, result.stderr)
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr, result.stderr
        if command[0] == "scan":
            assert "cannot reach it (Connection refused)" in result.stderr, result.stderr


def test_a_unit_copied_over_another_marker_and_all_is_refused_on_resume(tmp_path: Path) -> None:
    """Before: unit 0's files and done marker copied as unit 1's (the marker's unit and names edited, the
    digests still right) resumed into a report with unit 0's rows twice and unit 1's lost, exit 0."""
    with LoopbackServer({"/a.jpg": _jpeg()}) as server:
        args, env, out = _killed_scan(tmp_path, server, fast_rows=8, committed=(0, 1))
        args.append(str(out))
        units = out / ".units"
        for path in units.glob("u000001.*"):
            path.unlink()
        for path in units.glob("u000000.*"):
            shutil.copy(path, units / path.name.replace("u000000", "u000001"))
        marker = json.loads((units / "u000001.done.json").read_text(encoding="utf-8"))
        marker["unit"] = 1
        marker["files"] = {
            name.replace("u000000", "u000001"): digest for name, digest in marker["files"].items()
        }
        (units / "u000001.done.json").write_text(json.dumps(marker), encoding="utf-8")
        result = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert f"{units / 'u000001.outcomes.parquet'} does not hold its unit's rows" in result.stderr
        assert server.hits("/slow") == 4  # the resume stopped before fetching anything


def test_a_rescan_flag_out_of_range_is_blamed_on_the_flag_not_the_previous_manifest(
    scanner_cli: ScannerCli, tmp_path: Path
) -> None:
    """Before: `rescan --workers -1` said `the previous scan's manifest.json: run.workers must be ...`,
    sending the user to a file that was fine."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(_jpeg())
    hashes = tmp_path / "md5.txt"
    hashes.write_text("0" * 32 + "\n", encoding="utf-8")
    first = tmp_path / "first"
    assert (
        scanner_cli(
            "scan", str(folder), "--hashlist", str(hashes), "--out", str(first), "--keep-hashes"
        ).returncode
        == 0
    )
    for flag, value in (("--workers", "-1"), ("--timeout", "nan")):
        result = scanner_cli("rescan", str(first), "--out", str(tmp_path / "again"), flag, value)
        assert result.returncode == 1, result.stderr
        assert "flags:" in result.stderr and "manifest" not in result.stderr, result.stderr


_READ_REPORT_FILE = """
import sys
from pathlib import Path
from scanner.errors import InputError
from scanner.reports import html, jsonl
reader, path = sys.argv[1], Path(sys.argv[2])
try:
    if reader == "read_lines":
        list(jsonl.read_lines(path))
    else:
        getattr(html, reader)(path)
except InputError as exc:
    print(exc)
    sys.exit(1)
print("read it")
"""


@pytest.mark.parametrize(
    ("name", "reader"),
    [
        ("summary.json", "checked_summary"),
        ("manifest.json", "checked_manifest"),
        ("matches.jsonl", "read_lines"),
        ("matches.jsonl", "match_figures"),
        ("outcomes.parquet", "outcome_figures"),
    ],
)
@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_the_report_readers_themselves_refuse_a_fifo_or_device_without_the_clis_check(
    tmp_path: Path, name: str, reader: str, kind: str
) -> None:
    """Before: the report readers (reports/html.py _read_json, outcome_figures, reports/jsonl.py read_lines)
    opened by path and were safe only thanks to the CLI's up-front check: called as a library, a FIFO as
    summary.json hung forever and a link to /dev/zero as matches.jsonl was read until memory ran out."""
    path = tmp_path / name
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    done = subprocess.run(
        [sys.executable, "-c", _READ_REPORT_FILE, reader, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    shown = "a FIFO" if kind == "fifo" else "a character device"
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.strip() == f"{path}: not a regular file ({shown})", done.stdout + done.stderr


_HOLD_LOCK = """
import sys, time
from scanner.run.reportlock import report_lock
with report_lock(sys.argv[1], "scan"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_demo_into_a_locked_out_is_refused_before_it_writes_anything(
    scanner_cli: ScannerCli, tmp_path: Path
) -> None:
    """Before: `scanner demo` wrote demo-input/ (its shard and hash list) into --out, and only then did its
    scan find the report directory locked by another scanner process."""
    out = tmp_path / "demo"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(out)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        result = scanner_cli("demo", "--out", str(out), "--images", "2", timeout=120)
        assert result.returncode == 1, result.stderr
        assert f"in use by another scanner process (pid {holder.pid}" in result.stderr, result.stderr
        assert sorted(p.name for p in out.iterdir()) == [".scanner.lock"], "nothing was written"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_rematch_names_a_fifo_or_device_given_as_hashes_as_not_a_regular_file(
    scanner_cli: ScannerCli, tmp_path: Path, kind: str
) -> None:
    """Before: `scanner rematch /tmp/x.parquet --hashlist L --out O` said "no such file" for a FIFO or a
    link to /dev/zero, unlike every other input."""
    hashes = tmp_path / "hashes.parquet"
    if kind == "fifo":
        os.mkfifo(hashes)
    else:
        hashes.symlink_to("/dev/zero")
    listed = tmp_path / "md5.txt"
    listed.write_text(hashlib.md5(b"x").hexdigest() + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = scanner_cli("rematch", str(hashes), "--hashlist", str(listed), "--out", str(out), timeout=60)
    assert result.returncode == 1, result.stderr
    shown = "a FIFO" if kind == "fifo" else "a character device"
    assert f"{hashes}: not a regular file ({shown})" in result.stderr, result.stderr

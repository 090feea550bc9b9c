"""The core promise: a scan writes nothing outside --out, and nothing it writes contains image bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from images import encode, make_image

from scanner.cli.demo import serve

REPO = Path(__file__).resolve().parents[1]

AUDIT_SITECUSTOMIZE = textwrap.dedent(
    """
    import os, sys
    _log = open(os.environ["AUDIT_LOG"], "a", buffering=1)
    _allowed = os.path.realpath(os.environ["AUDIT_ALLOWED"])
    # numba's kernel cache, found as scanner/kernelcache.py finds it
    _kernels = os.path.realpath(
        os.environ.get("SCANNER_KERNEL_CACHE") or os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "scanner", "kernels"))
    _log.write(f"start {os.getpid()}\\n")

    def _hook(event, args):
        if event != "open" or len(args) < 3 or isinstance(args[0], int):
            return
        path, mode, flags = args[0], args[1], args[2]
        write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & write_flags)
        if not writing:
            return
        real = os.path.realpath(os.fsdecode(path))
        device = real.startswith("/dev/") and not real.startswith(("/dev/shm/", "/dev/mqueue/"))
        inside = real == _allowed or real.startswith(_allowed + os.sep) or device
        cache = real == _kernels or real.startswith(_kernels + os.sep)
        _log.write(("write " if inside else "cache " if cache else "VIOLATION ") + real + "\\n")

    sys.addaudithook(_hook)
    """
)


def served_images(count: int) -> dict[str, tuple[int, str, bytes, dict]]:
    routes = {}
    for i in range(count):
        fmt = ("JPEG", "PNG", "WEBP")[i % 3]
        routes[f"/i/{i}"] = (200, "application/octet-stream", encode(make_image(1000 + i), fmt), {})
    return routes


def run_audited_scan(tmp_path: Path, routes: dict, extra_args: list[str]) -> tuple[Path, list[str]]:
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(AUDIT_SITECUSTOMIZE)
    out = tmp_path / "out"
    log = tmp_path / "audit.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hook_dir), str(REPO)]),
        "AUDIT_LOG": str(log),
        "AUDIT_ALLOWED": str(out),
        "SCANNER_KERNEL_CACHE": str(tmp_path / "kernels"),
    }
    with serve(routes) as base:
        shard = tmp_path / "shard.parquet"
        pq.write_table(pa.table({"url": [base + path for path in routes]}), shard)
        listfile = tmp_path / "list.txt"
        listfile.write_text("0" * 32 + "\n")
        pdq_list = tmp_path / "pdq.txt"
        pdq_list.write_text("0" * 64 + "\n")  # so the workers hash PDQ, with kernels from numba's cache
        command = [
            sys.executable,
            "-m",
            "scanner",
            "scan",
            str(shard),
            "--hashlist",
            f"md5:{listfile}",
            "--hashlist",
            f"pdq:{pdq_list}",
            "--out",
            str(out),
            "--allow-private-networks",
            "--quiet",
            "--workers",
            "2",
            *extra_args,
        ]
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out, log.read_text().splitlines()


def test_scan_writes_only_inside_out_and_never_image_bytes(tmp_path):
    """Outside --out only numba's compiled-kernel cache is written (kernelcache.py), and only its files."""
    routes = served_images(12)
    out, log = run_audited_scan(tmp_path, routes, [])
    starts = {line for line in log if line.startswith("start ")}
    assert len(starts) >= 3, "the audit hook must run in the main process and in both hashing workers"
    assert [line for line in log if line.startswith("VIOLATION")] == []
    cached = [p for p in (tmp_path / "kernels").rglob("*") if p.is_file()]
    assert cached, "the hashing workers must have kept their compiled PDQ kernels in the cache"
    assert all(p.suffix in (".nbi", ".nbc") for p in cached), cached
    written = {Path(line.split(" ", 1)[1]) for line in log if line.startswith("write ")}
    assert out / "outcomes.parquet" in {  # written as .NAME.RANDOM.partial, then renamed
        p.parent / p.name.removeprefix(".").removesuffix(".partial").rsplit(".", 1)[0] for p in written
    }
    outcomes = pq.read_table(out / "outcomes.parquet").to_pydict()
    assert outcomes["outcome"] == ["clean"] * 12
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files, "the scan must have written its reports"
    files += cached
    needles = [body[len(body) // 2 : len(body) // 2 + 64] for _, _, body, _ in routes.values()]
    for path in files:
        data = path.read_bytes()
        assert not any(needle in data for needle in needles), f"{path} holds image bytes"


def test_write_guard_refuses_writes_outside_out(tmp_path):
    allowed = tmp_path / "out"
    allowed.mkdir()
    script = textwrap.dedent(
        f"""
        import tempfile
        from scanner import nostore
        from scanner.errors import ContentAtRestError
        nostore.install([{str(allowed)!r}])
        open({str(allowed / "ok.txt")!r}, "w").write("fine")
        for attempt in (lambda: open({str(tmp_path / "leak.jpg")!r}, "wb"), tempfile.TemporaryFile,
                        lambda: tempfile.NamedTemporaryFile(dir={str(tmp_path)!r}),
                        lambda: open("/dev/shm/scanner-leak.jpg", "wb")):
            try:
                attempt()
            except ContentAtRestError:
                print("refused")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.stdout.split() == ["refused"] * 4, done.stderr
    assert (allowed / "ok.txt").read_text() == "fine"
    assert not (tmp_path / "leak.jpg").exists()
    assert not os.path.exists("/dev/shm/scanner-leak.jpg")


def test_write_guard_lets_only_numba_files_into_the_kernel_cache(tmp_path):
    """The kernel cache is no way around the guard: numba's index and data files, nothing else."""
    cache = tmp_path / "kernels"
    script = textwrap.dedent(
        f"""
        import os
        from scanner import nostore
        from scanner.errors import ContentAtRestError
        nostore.install([])
        sub = os.path.join({str(cache)!r}, "scanner_0123")
        os.makedirs(sub)
        for name in ("pdq_from_luma-190.py311.nbi", "pdq_from_luma-190.py311.1.nbc",
                     "pdq_from_luma-190.py311.nbi.tmp.0123456789abcdef",
                     "body.jpg", "x.nbi.jpg", "x.nbcache"):
            try:
                open(os.path.join(sub, name), "wb").close()
                print("written", name)
            except ContentAtRestError:
                print("refused", name)
        """
    )
    env = {**os.environ, "SCANNER_KERNEL_CACHE": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60, env=env
    )
    assert done.stdout.splitlines() == [
        "written pdq_from_luma-190.py311.nbi",
        "written pdq_from_luma-190.py311.1.nbc",
        "written pdq_from_luma-190.py311.nbi.tmp.0123456789abcdef",
        "refused body.jpg",
        "refused x.nbi.jpg",
        "refused x.nbcache",
    ], done.stderr


@pytest.mark.parametrize("mode", ["r", "rb"])
def test_write_guard_allows_reading(tmp_path, mode):
    script = (
        f"from scanner import nostore; nostore.install([{str(tmp_path)!r}]); "
        f"print(len(open({str(REPO / 'README.md')!r}, {mode!r}).read()) > 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.stdout.strip() == "True", done.stderr

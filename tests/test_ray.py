"""The Ray runner: the planner's units on a local Ray cluster give the local runner's reports, row for row."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from images import encode, make_image
from loopback import LoopbackServer
from PIL import Image

from scanner.audits.rescan import rescan
from scanner.config import build_config
from scanner.errors import ConfigError, ScannerError
from scanner.hashing import hash_image
from scanner.run.mirror import local_dir
from scanner.run.scan import prepare
from scanner.runners import local

try:
    import ray

    from scanner.runners import ray as ray_runner
except ImportError:
    ray = None

REPO = Path(__file__).resolve().parents[1]
NO_RAY = "ray is not installed (pip install .[ray])"

SHARDS, ROWS_PER_SHARD, ROWS_PER_UNIT = 4, 24, 6
FORMATS = ("JPEG", "PNG", "WEBP")
IMAGES = {
    f"/img/{i}.{FORMATS[i % 3].lower()}": encode(make_image(700 + i, (200, 150)), FORMATS[i % 3])
    for i in range(40)
}
SLOW = "/slow?seconds=2"


def shard_urls(server: LoopbackServer, shard: int) -> list[str]:
    """Images, dead links and a lying server; the second shard holds one slow row (a unit held in flight)."""
    paths = list(IMAGES)
    urls = []
    for i in range(ROWS_PER_SHARD):
        n = shard * ROWS_PER_SHARD + i
        if shard == 1 and i == 3:
            urls.append(server.url(SLOW))
        elif n % 11 == 5:
            urls.append(server.url(f"/status/404?n={n}"))
        elif n % 13 == 7:
            urls.append(server.url("/html-as-jpeg"))
        else:
            urls.append(server.url(paths[n % len(paths)] + f"?n={n}"))
    return urls


def write_list(path: Path) -> None:
    """One exact MD5 and one PDQ of a re-encoded copy, so both match kinds appear in matches.jsonl."""
    exact = hash_image(IMAGES["/img/4.png"], frozenset({"md5"})).md5.hex()
    copy = Image.open(io.BytesIO(IMAGES["/img/7.png"])).convert("RGB").resize((160, 120))
    near = hash_image(encode(copy, "JPEG", quality=50), frozenset({"pdq"})).pdq.hex()
    path.write_text(f"hash_type,hash,id,category\nmd5,{exact},e-1,test\npdq,{near},e-2,test\n")


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(IMAGES) as running:
        yield running


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, server) -> tuple[list[str], Path]:
    tmp = tmp_path_factory.mktemp("inputs")
    shards = []
    for shard in range(SHARDS):
        path = tmp / f"part-{shard:05d}.parquet"
        urls = shard_urls(server, shard)
        pq.write_table(pa.table({"key": [f"{shard}-{i}" for i in range(len(urls))], "url": urls}), path)
        shards.append(str(path))
    write_list(tmp / "list.csv")
    return shards, tmp / "list.csv"


def make_config(inputs: tuple[list[str], Path], out: Path | str, runner: str) -> object:
    shards, listfile = inputs
    return build_config(
        {
            "inputs": shards,
            "out": str(out),
            "hashlist": [f"test={listfile}"],
            # generous connect timeout: a busy test machine may leave the loopback server's backlog full
            "fetch": {"allow_private_networks": True, "connect_timeout": 30.0, "total_timeout": 60.0},
            "source": {"rows_per_unit": ROWS_PER_UNIT},
            "run": {"runner": runner, "workers": 2, "units_in_flight": 2, "progress": False},
        },
        "test",
    )


@pytest.fixture(scope="module")
def local_out(tmp_path_factory, inputs) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    local.scan(make_config(inputs, out, "local"))
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Path:
    """One local Ray cluster for the module, its session files kept apart so they can be searched."""
    if ray is None:
        pytest.skip(NO_RAY)
    temp_dir = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp_dir), logging_level=logging.WARNING)
    yield temp_dir
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_out(tmp_path_factory, cluster, inputs) -> Path:
    out = tmp_path_factory.mktemp("ray-run") / "out"
    ray_runner.scan(make_config(inputs, out, "ray"))
    return out


def outcomes(out: Path) -> list[dict]:
    return pq.read_table(out / "outcomes.parquet").drop_columns(["fetched_at"]).to_pylist()


def evidence(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "evidence.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "observed_at"} for r in records]


def assert_same_reports(out: Path, expected: Path) -> None:
    assert outcomes(out) == outcomes(expected)
    assert (out / "matches.jsonl").read_bytes() == (expected / "matches.jsonl").read_bytes()
    assert evidence(out) == evidence(expected)


def needs_ray(test):
    """Mark a test as needing the ray extra; without Ray it is skipped, saying so."""
    return pytest.mark.ray(pytest.mark.skipif(ray is None, reason=NO_RAY)(test))


@needs_ray
def test_ray_scan_gives_the_local_reports(ray_out, local_out):
    assert_same_reports(ray_out, local_out)
    rows = outcomes(ray_out)
    assert len(rows) == SHARDS * ROWS_PER_SHARD
    assert {r["outcome"] for r in rows} == {"match", "clean", "dead", "invalid"}
    matched = [json.loads(line)["hash_type"] for line in (ray_out / "matches.jsonl").read_text().splitlines()]
    assert sorted(set(matched)) == ["md5", "pdq"]
    summaries = [json.loads((d / "summary.json").read_text()) for d in (ray_out, local_out)]
    assert summaries[0]["outcomes"] == summaries[1]["outcomes"]


@needs_ray
def test_no_image_bytes_at_rest_in_ray_files_or_reports(ray_out, cluster):
    needles = [body[len(body) // 2 : len(body) // 2 + 64] for body in IMAGES.values()]
    files = [p for root in (cluster, ray_out) for p in root.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".log") for p in files), "Ray's session logs must be among the files searched"
    for path in files:
        data = path.read_bytes()
        assert not any(needle in data for needle in needles), f"{path} holds image bytes"


def kill_workers_when_requested(server: LoopbackServer, path: str, seen: int) -> threading.Thread:
    """Once the slow route is hit again (a unit is held in flight), kill every scanner worker actor."""

    def kill() -> None:
        deadline = time.monotonic() + 60
        while server.hits(path) <= seen and time.monotonic() < deadline:
            time.sleep(0.01)
        for name in ray.util.list_named_actors():
            if name.startswith("scanner-unit-worker-"):
                ray.kill(ray.get_actor(name), no_restart=True)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@needs_ray
def test_killed_workers_mid_run_still_give_every_row_once(
    tmp_path, cluster, inputs, local_out, server, caplog
):
    killer = kill_workers_when_requested(server, "/slow", server.hits("/slow"))
    with caplog.at_level(logging.WARNING, logger="scanner.runners.ray"):
        ray_runner.scan(make_config(inputs, tmp_path / "out", "ray"))
    killer.join()
    assert any("its worker died" in r.getMessage() and "retrying" in r.getMessage() for r in caplog.records)
    rows = outcomes(tmp_path / "out")
    assert len({(r["shard"], r["row"]) for r in rows}) == len(rows) == SHARDS * ROWS_PER_SHARD
    assert_same_reports(tmp_path / "out", local_out)


def unit_urls(units: list) -> set[str]:
    """The row-unique URLs (those with ?n=) the given units read from their shards."""
    urls = set()
    for unit in units:
        column = pq.read_table(unit.shard, columns=["url"]).column("url").to_pylist()
        urls.update(u for u in column[unit.span.start : unit.span.stop] if "?n=" in u)
    return urls


@needs_ray
def test_rerun_skips_committed_units(tmp_path, cluster, inputs, local_out, server):
    config = make_config(inputs, tmp_path / "out", "ray")
    prepared = prepare(config)
    half = len(prepared.todo) // 2
    ray_runner.run_units(prepared, prepared.todo[:half])
    skipped, rest = unit_urls(prepared.todo[:half]), unit_urls(prepared.todo[half:])
    server.reset_hits()
    ray_runner.scan(config)
    requested = {server.url(path) for _, path, _ in server.requests()}
    assert skipped and not skipped & requested
    assert rest <= requested
    assert_same_reports(tmp_path / "out", local_out)


@needs_ray
def test_a_unit_failing_every_attempt_stops_the_scan_with_its_name(tmp_path, cluster, server, caplog):
    shard = tmp_path / "vanishing.parquet"
    pq.write_table(pa.table({"url": [server.url(p) for p in list(IMAGES)[:4]]}), shard)
    listfile = tmp_path / "list.csv"
    write_list(listfile)
    prepared = prepare(make_config(([str(shard)], listfile), tmp_path / "out", "ray"))
    shard.unlink()
    with (
        caplog.at_level(logging.WARNING, logger="scanner.runners.ray"),
        pytest.raises(ScannerError) as caught,
    ):
        ray_runner.run_units(prepared, prepared.todo, max_attempts=2)
    message = str(caught.value)
    assert "unit 0" in message and "failed 2 times" in message and "no such file" in message
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 1
    assert prepared.checkpoint.done() == set()


@needs_ray
def test_cli_runs_on_an_existing_cluster_by_address(tmp_path, cluster, inputs, local_out):
    shards, listfile = inputs
    address = ray.get_runtime_context().gcs_address
    settings = tmp_path / "scan.toml"
    settings.write_text("[fetch]\nconnect_timeout = 30.0\ntotal_timeout = 60.0\n")
    command = [
        sys.executable,
        "-m",
        "scanner",
        "scan",
        *shards,
        "--hashlist",
        f"test={listfile}",
        "--config",
        str(settings),
        "--out",
        f"file://{tmp_path / 'out'}",  # a file:// URL is the local path
        "--allow-private-networks",
        "--quiet",
        "--rows-per-unit",
        str(ROWS_PER_UNIT),
        "--runner",
        "ray",
        "--ray-address",
        address,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    assert_same_reports(tmp_path / "out", local_out)


@pytest.fixture(scope="module")
def kept(tmp_path_factory, inputs) -> Path:
    """A local scan of the inputs that kept its hash records, for rescans."""
    out = tmp_path_factory.mktemp("kept") / "out"
    config = make_config(inputs, out, "local")
    local.scan(dataclasses.replace(config, audit=dataclasses.replace(config.audit, keep_hashes=True)))
    return out


@needs_ray
def test_rescan_command_on_ray_gives_the_local_rescan(tmp_path, cluster, kept):
    """`scanner rescan --runner ray`: the actors read the stored rows from the previous scan's
    hashes.parquet and re-check them as the local runner does, row for row, change for change."""
    rescan(kept, str(tmp_path / "local"), (), {"run.workers": 2, "fetch.allow_private_networks": True})
    command = [
        *(sys.executable, "-m", "scanner", "rescan", str(kept), "--out", str(tmp_path / "ray")),
        "--allow-private-networks",
        *("--runner", "ray", "--ray-address", ray.get_runtime_context().gcs_address, "--quiet"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    assert_same_reports(tmp_path / "ray", tmp_path / "local")
    changes = [(tmp_path / run / "changes.jsonl").read_bytes() for run in ("ray", "local")]
    assert changes[0] == changes[1]
    hashes = [
        pq.read_table(tmp_path / run / "hashes.parquet").drop_columns(["fetched_at"])
        for run in ("ray", "local")
    ]
    assert hashes[0].num_rows == SHARDS * ROWS_PER_SHARD and hashes[0].equals(hashes[1])
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["config"]["run"]["runner"] == "ray"


def scan_in_fresh_interpreter(
    tmp_path: Path, *flags: str, hide_ray: bool = False
) -> subprocess.CompletedProcess:
    """`scanner scan` on inputs that do not exist, in a new Python (where `import ray` fails, if asked)."""
    args = ["scan", "shard.parquet", "--hashlist", "list.txt", "--out", str(tmp_path / "out"), *flags]
    hide = "sys.modules['ray'] = None\n" if hide_ray else ""
    script = f"import sys\n{hide}from scanner.cli.main import main\nsys.exit(main({args!r}))\n"
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_ray_runner_without_ray_is_a_clear_error(tmp_path):
    done = scan_in_fresh_interpreter(tmp_path, "--runner", "ray", hide_ray=True)
    assert done.returncode == 1
    assert "--runner ray needs Ray" in done.stderr and "pip install" in done.stderr
    assert not (tmp_path / "out" / "outcomes.parquet").exists()


def test_unknown_runner_is_refused(tmp_path, inputs):
    config = make_config(inputs, tmp_path / "out", "spark")
    from scanner.cli.common import runner_for

    with pytest.raises(ConfigError, match="spark"):
        runner_for(config)


@needs_ray
def test_reports_on_a_filesystem_url_and_resume_from_there(
    tmp_path, cluster, inputs, local_out, server, monkeypatch
):
    fsspec = pytest.importorskip("fsspec", reason="fsspec is not installed (pip install .[remote])")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the staging directory goes under tmp_path
    url = f"memory://scans/{tmp_path.name}"
    config = make_config(inputs, url, "ray")
    prepared = prepare(config)
    half = len(prepared.todo) // 2
    ray_runner.run_units(prepared, prepared.todo[:half])
    skipped = unit_urls(prepared.todo[:half])
    assert local_dir(url).is_relative_to(tmp_path)
    shutil.rmtree(local_dir(url))  # resume as if on another machine: only the URL holds the committed units
    server.reset_hits()
    ray_runner.scan(config)
    assert skipped and not skipped & {server.url(path) for _, path, _ in server.requests()}
    filesystem, root = fsspec.core.url_to_fs(url)
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    for name in ("outcomes.parquet", "matches.jsonl", "evidence.jsonl", "summary.json", "manifest.json"):
        filesystem.get_file(f"{root}/{name}", str(fetched / name))
    assert_same_reports(fetched, local_out)
    left = sorted(p.rsplit("/", 1)[1] for p in filesystem.find(f"{root}/.units"))
    assert left == ["complete", "fingerprint.json"]


@needs_ray
def test_an_address_nobody_listens_at_fails_fast(tmp_path):
    done = scan_in_fresh_interpreter(tmp_path, "--runner", "ray", "--ray-address", "127.0.0.1:1")
    assert done.returncode == 1
    assert "no Ray cluster answers at 127.0.0.1:1" in done.stderr


@needs_ray
def test_a_signal_type_plugin_on_ray_matches_as_the_built_in(tmp_path, cluster, inputs):
    """Each actor and its hashing worker load the plug-in named in the config (docs/plugins.md)."""
    pytest.importorskip("threatexchange")
    from scanner.plugins import unload_plugins

    shards, _ = inputs
    md5 = hash_image(IMAGES["/img/4.png"], frozenset({"md5"})).md5.hex()
    listfile = tmp_path / "md5s.csv"
    listfile.write_text(f"hash_type,hash,id\nmd5,{md5},m\nvideo_md5,{md5},m\n")
    data = {
        "inputs": shards,
        "out": str(tmp_path / "out"),
        "hashlist": [f"both={listfile}"],
        "fetch": {"allow_private_networks": True, "connect_timeout": 30.0, "total_timeout": 60.0},
        "source": {"rows_per_unit": ROWS_PER_UNIT},
        "run": {"runner": "ray", "workers": 2, "units_in_flight": 2, "progress": False},
        "plugins": {"signal_types": ["threatexchange.signal_type.md5:VideoMD5Signal"]},
    }
    try:
        ray_runner.scan(build_config(data, "test"))
    finally:
        unload_plugins()
    found = [json.loads(line) for line in (tmp_path / "out" / "matches.jsonl").read_text().splitlines()]
    rows = {
        kind: [(m["shard"], m["row"]) for m in found if m["hash_type"] == kind]
        for kind in ("md5", "video_md5")
    }
    assert rows["md5"] and rows["md5"] == rows["video_md5"]

"""hf:// dataset inputs read from a Hub on 127.0.0.1 (tests/hubserver.py): real Parquet shards, real scans,
the commit pinned once, recorded in the manifest and held by a resume."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_scanner
from hubserver import HubRepo, HubServer
from images import encode, make_image
from loopback import LoopbackServer

from scanner.errors import SourceError
from scanner.hashing import hash_image
from scanner.reports.verify import verify_report
from scanner.sources import SourceOptions, expand_inputs, open_source
from scanner.sources.hub import parse, pin_inputs

hub_constants = pytest.importorskip("huggingface_hub.constants", reason="the hf extra (pip install .[hf])")

IMAGES = [encode(make_image(900 + i, (96, 72)), "JPEG") for i in range(4)]


def shard(urls: list[str]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"url": urls}), buffer)
    return buffer.getvalue()


@pytest.fixture
def hub_endpoint(monkeypatch: pytest.MonkeyPatch):
    """A Hub with one dataset repository, its endpoint the one huggingface_hub uses in this process (the API's
    and the file URLs', which it derives from HF_ENDPOINT when imported)."""
    repo = HubRepo("org/pictures")
    repo.commit({"data/train-0.parquet": shard(["http://x.test/0"]), "README.md": b"# pictures\n"})
    with HubServer([repo]) as server:
        monkeypatch.setattr(hub_constants, "ENDPOINT", server.endpoint)
        template = server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        yield repo, server


def test_parse_splits_repository_revision_and_path():
    assert parse("hf://datasets/org/name@v1.0/data/*.parquet").revision == "v1.0"
    parsed = parse("hf://datasets/org/name@refs%2Fpr%2F3/data/x.parquet")
    assert (parsed.repo_id, parsed.revision, parsed.path) == ("org/name", "refs/pr/3", "data/x.parquet")
    assert parse("hf://datasets/org/name/x.parquet").revision is None
    assert parsed.url("abc") == "hf://datasets/org/name@abc/data/x.parquet"
    for bad in ("hf://models/org/name/x.parquet", "hf://datasets/org/x.parquet", "hf://datasets/org/name@/x"):
        with pytest.raises(SourceError, match="hf://"):
            parse(bad)


def test_a_branch_is_pinned_to_its_commit_and_globs_expand_at_that_commit(hub_endpoint):
    repo, server = hub_endpoint
    inputs, pins = pin_inputs(
        ["hf://datasets/org/pictures@main/data/*.parquet", "hf://datasets/org/pictures/README.md"]
    )
    sha = repo.branches["main"]
    assert [p.commit for p in pins] == [sha, sha]
    assert inputs[0] == f"hf://datasets/org/pictures@{sha}/data/*.parquet"
    assert expand_inputs(inputs[:1]) == [f"hf://datasets/org/pictures@{sha}/data/train-0.parquet"]
    assert sum(path.endswith("/revision/main") for _method, path in server.requests) == 1  # one lookup


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "hf://datasets/org/missing/x.parquet",
            r"dataset repository org/missing not found on http://127\.0\.0\.1",
        ),
        (
            "hf://datasets/org/pictures@nosuch/x.parquet",
            r"revision 'nosuch' not found in dataset org/pictures",
        ),
    ],
)
def test_a_missing_repository_or_revision_is_one_line_naming_it(hub_endpoint, url, message):
    with pytest.raises(SourceError, match=message) as caught:
        pin_inputs([url])
    assert "\n" not in str(caught.value) and url in str(caught.value)


def test_a_commit_id_that_is_not_one_is_refused(hub_endpoint):
    repo, _server = hub_endpoint
    repo.branches["main"] = "../../other/repo"
    repo.commits["../../other/repo"] = {}
    with pytest.raises(SourceError, match=r"gave no commit id for revision 'main'"):
        pin_inputs(["hf://datasets/org/pictures/data/*.parquet"])


def test_a_hub_that_does_not_answer_is_one_line(monkeypatch):
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(SourceError, match=r"cannot reach the Hub at http://127\.0\.0\.1:9") as caught:
        pin_inputs(["hf://datasets/org/pictures/x.parquet"])
    assert "\n" not in str(caught.value)


def read_all(path: str) -> int:
    source = open_source(path, SourceOptions())
    return sum(len(rows) for span in source.spans() for rows in source.read(span))


def test_shards_are_read_by_ranges_and_a_hub_that_breaks_them_is_one_line_naming_the_shard(
    hub_endpoint, monkeypatch
):
    repo, server = hub_endpoint
    body = shard([f"http://x.test/{i}" for i in range(100_000)])
    repo.commit({"data/train-0.parquet": body})
    [path] = expand_inputs(pin_inputs(["hf://datasets/org/pictures/data/*.parquet"])[0])
    assert read_all(path) == 100_000
    assert server.bytes_sent <= len(body) + 128 * 1024  # the data once, and a block around the footer
    server.ignore_ranges = True  # a range answered with the whole file
    with pytest.raises(SourceError, match=r"train-0\.parquet: not a readable Parquet file") as caught:
        read_all(path)
    assert "\n" not in str(caught.value)
    server.ignore_ranges, server.cut_bodies = False, True  # half a body, then the connection closed
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)  # its retry waits
    with pytest.raises(SourceError, match=r"train-0\.parquet: .*remote read failed: peer closed") as caught:
        read_all(path)
    assert "\n" not in str(caught.value)


def hub_scan(tmp_path: Path, server: HubServer, url: str, out: Path, listfile: Path):
    env = {"HF_ENDPOINT": server.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp_path / "hf")}
    flags = ["--hashlist", f"md5:{listfile}", "--out", str(out), "--allow-private-networks", "--quiet"]
    return run_scanner("scan", url, *flags, "--workers", "1", env=env)


def test_an_hf_scan_reads_one_commit_records_it_and_refuses_a_resume_after_the_branch_moved(tmp_path):
    files = {f"/{i}.jpg": body for i, body in enumerate(IMAGES)}
    listfile = tmp_path / "list.txt"
    listfile.write_text(hash_image(IMAGES[1], frozenset({"md5"})).md5.hex() + "\n")
    with LoopbackServer(files) as images:
        repo = HubRepo("org/pictures")
        first = repo.commit(
            {
                f"data/train-{n}.parquet": shard([images.url(f"/{n * 2 + i}.jpg") for i in range(2)])
                for n in range(2)
            }
        )
        with HubServer([repo]) as server:
            out = tmp_path / "out"
            done = hub_scan(tmp_path, server, "hf://datasets/org/pictures@main/data/*.parquet", out, listfile)
            assert done.returncode == 0, done.stderr
            named = [path for _method, path in server.requests if "/main" in path]
            assert named == ["/api/datasets/org/pictures/revision/main"]  # every other read names the commit
            manifest = json.loads((out / "manifest.json").read_text())
            assert manifest["hub_revisions"] == [
                {"input": "hf://datasets/org/pictures@main/data/*.parquet", "repo": "org/pictures",
                 "revision": "main", "commit": first}
            ]  # fmt: skip
            assert [(i["path"], i["commit"]) for i in manifest["inputs"]] == [
                (f"hf://datasets/org/pictures@{first}/data/train-{n}.parquet", first) for n in range(2)
            ]
            summary = json.loads((out / "summary.json").read_text())
            assert summary["outcomes"]["match"] == 1 and summary["outcomes"]["clean"] == 3
            assert verify_report(out).ok

            second = repo.commit({"data/train-0.parquet": shard([images.url("/0.jpg")])})
            moved = hub_scan(
                tmp_path, server, "hf://datasets/org/pictures@main/data/*.parquet", out, listfile
            )
            assert moved.returncode == 1
            assert moved.stderr.count("\n") == 1 and "Traceback" not in moved.stderr
            assert f"at commit {first}, but the revision given now names commit {second}" in moved.stderr
            assert f"give hf://datasets/org/pictures@{first}/data/*.parquet to finish" in moved.stderr

            pinned = f"hf://datasets/org/pictures@{first}/data/*.parquet"
            again = hub_scan(tmp_path, server, pinned, out, listfile)
            assert again.returncode == 0, again.stderr  # the same commit: the scan it holds
    assert not (tmp_path / "hf").exists()  # huggingface_hub cached nothing: shards are read, never stored


def test_a_missing_file_in_the_repository_is_one_line(tmp_path, hub_endpoint):
    _repo, server = hub_endpoint
    listfile = tmp_path / "list.txt"
    listfile.write_text("0" * 32 + "\n")
    done = hub_scan(
        tmp_path, server, "hf://datasets/org/pictures/data/nosuch.parquet", tmp_path / "o", listfile
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "no such file" in done.stderr and "nosuch.parquet" in done.stderr

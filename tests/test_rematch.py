"""rematch: stored hash records against an updated list, no network at all, the matches of a fresh scan."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from audit_support import images, matched_entries, outcomes, run_scan, write_shard
from images import encode
from loopback import LoopbackServer
from PIL import Image

from scanner.audits.rematch import rematch
from scanner.config import build_config
from scanner.errors import ConfigError, InputError
from scanner.hashing import hash_image
from scanner.reports.verify import verify_report

REPO = Path(__file__).resolve().parents[1]

NETWORK_AUDIT = textwrap.dedent(
    """
    import os, sys
    _log = open(os.environ["NETWORK_LOG"], "a", buffering=1)

    def _hook(event, args):
        if event.startswith("socket."):
            _log.write(f"{event} {args!r}\\n")

    sys.addaudithook(_hook)
    """
)

BODIES = images(6)
FILES = {f"/{name}.jpg": body for name, body in zip("abcdef", BODIES, strict=True)}
FILES["/page.jpg"] = (b"<!doctype html><p>not an image</p>", "image/jpeg")
PATHS = [
    "/a.jpg",
    "/b.jpg",
    "/c.jpg",
    "/d.jpg",
    "/status/404",
    "/page.jpg",
    "/redirect-to?url=/e.jpg",
    "/f.jpg",
]


def near_copy_pdq(body: bytes) -> str:
    """The PDQ of a resized, recompressed copy: within the default threshold of the original's."""
    copy = encode(Image.open(io.BytesIO(body)).convert("RGB").resize((120, 90)), "JPEG", quality=60)
    return hash_image(copy, frozenset({"pdq"})).pdq.hex()


def write_typed_list(path: Path, entries: list[tuple[str, str, str]]) -> str:
    """A CSV list of (type, hash, id) entries; returns its spec."""
    path.write_text("hash_type,hash,id\n" + "".join(f"{t},{h},{i}\n" for t, h, i in entries))
    return f"{path.stem}={path}"


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Scan A (list v1, hashes kept), then list v2 and a fresh scan B with it, on one loopback server."""
    tmp = tmp_path_factory.mktemp("rematch")
    md5 = {name: hashlib.md5(body).hexdigest() for name, body in zip("abcdef", BODIES, strict=True)}
    with LoopbackServer(FILES) as server:
        urls = [server.url(p) for p in PATHS]
        shard = write_shard(tmp / "shard.parquet", {"url": urls, "key": [f"k{i}" for i in range(len(urls))]})
        v1 = [("md5", md5["a"], "a-v1"), ("md5", md5["d"], "d-v1"), ("url", urls[7], "f-url")]
        v2 = [
            ("md5", md5["a"], "a-v1"),
            ("md5", md5["b"], "b-v2"),
            ("pdq", near_copy_pdq(BODIES[2]), "c-near"),
            ("url", urls[4], "dead-url"),
        ]
        lists = {"v1": write_typed_list(tmp / "v1.csv", v1), "v2": write_typed_list(tmp / "v2.csv", v2)}
        run_scan(shard, tmp / "a", [lists["v1"]], audit={"keep_hashes": True}, source={"rows_per_unit": 3})
        assert server.hits("/f.jpg") == 0
        run_scan(shard, tmp / "b", [lists["v2"]])
    return {"tmp": tmp, "shard": shard, **{name: tmp / name for name in ("a", "b")}, **lists}


def test_rematch_gives_the_matches_a_fresh_scan_gives(scans) -> None:
    out = scans["tmp"] / "c"
    result = rematch([str(scans["a"])], build_config({"out": str(out), "hashlist": [scans["v2"]]}, "test"))
    assert matched_entries(scans["a"]) == [
        (0, "v1", "md5", "a-v1"),
        (3, "v1", "md5", "d-v1"),
        (7, "v1", "url", "f-url"),
    ]
    assert (
        matched_entries(out)
        == matched_entries(scans["b"])
        == [
            (0, "v2", "md5", "a-v1"),
            (1, "v2", "md5", "b-v2"),
            (2, "v2", "pdq", "c-near"),
            (4, "v2", "url", "dead-url"),
        ]
    )
    fresh, again = outcomes(scans["b"]), outcomes(out)
    assert fresh == ["match", "match", "match", "clean", "match", "invalid", "clean", "clean"]
    # Row 7 was screened by URL in scan A and never fetched: with no hashes to match, it is unchecked.
    assert again == [*fresh[:7], "unchecked"]
    assert result.summary["matches"]["by_hash_type"] == {"md5": 2, "pdq": 1, "url": 1}
    for name in ("outcomes.parquet", "matches.jsonl", "evidence.jsonl", "summary.json", "hashes.parquet"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    assert verify_report(out).ok
    assert pq.read_table(out / "hashes.parquet").equals(pq.read_table(scans["a"] / "hashes.parquet"))


def test_rematch_cli_opens_no_socket(scans, tmp_path: Path, scanner_cli) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NETWORK_AUDIT)
    log = tmp_path / "network.log"
    out = tmp_path / "c"
    env = {"PYTHONPATH": os.pathsep.join([str(hook), str(REPO)]), "NETWORK_LOG": str(log)}
    command = ["rematch", str(scans["a"]), "--hashlist", scans["v2"], "--out", str(out)]
    done = scanner_cli(*command, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "matches: 4 on 4 rows" in done.stdout
    assert log.read_text() == ""
    assert matched_entries(out) == matched_entries(scans["b"])


def test_hash_records_alone_are_rematched_too(scans, tmp_path: Path) -> None:
    copy = tmp_path / "records-2026.parquet"
    shutil.copy(scans["a"] / "hashes.parquet", copy)
    out = tmp_path / "c"
    rematch([str(copy)], build_config({"out": str(out), "hashlist": [scans["v2"]]}, "test"))
    # Without outcomes.parquet: an image's hashes count as clean, digests alone as invalid, none as unchecked.
    assert outcomes(out) == ["match", "match", "match", "clean", "match", "invalid", "clean", "unchecked"]
    assert matched_entries(out) == matched_entries(scans["b"])


def test_rematch_refuses_what_it_cannot_do(scans, tmp_path: Path) -> None:
    config = build_config({"out": str(tmp_path / "c"), "hashlist": [scans["v2"]]}, "test")
    with pytest.raises(InputError, match="--keep-hashes"):
        rematch([str(scans["b"])], config)  # scanned without --keep-hashes
    dihedral = build_config(
        {"out": str(tmp_path / "c"), "hashlist": [scans["v2"]], "match": {"pdq_dihedral": True}}, "t"
    )
    with pytest.raises(ConfigError, match="dihedral"):
        rematch([str(scans["a"])], dihedral)
    with pytest.raises(ConfigError, match="no hash list"):
        rematch([str(scans["a"])], build_config({"out": str(tmp_path / "c")}, "test"))


def test_rematch_refuses_dihedral_matching_from_flag_or_config(scans, tmp_path: Path, scanner_cli) -> None:
    """Scan A ran without --pdq-dihedral: its records hold the plain PDQ only, and the rotated and flipped
    hashes would need the image, never stored (a dihedral scan's are matched: test_rematch_dihedral)."""
    config = tmp_path / "dihedral.toml"
    config.write_text("[match]\npdq_dihedral = true\n")
    common = ["rematch", str(scans["a"]), "--hashlist", scans["v2"]]
    for how, out in ((["--pdq-dihedral"], "flag"), (["--config", str(config)], "config")):
        done = scanner_cli(*common, *how, "--out", str(tmp_path / out), cwd=tmp_path)
        assert done.returncode == 1, done.stdout
        assert done.stderr.startswith("scanner: error: rematch cannot match rotations and flips")
        assert "row 0 holds the plain PDQ hash only" in done.stderr, done.stderr
        assert "never stored" in done.stderr and str(scans["a"] / "hashes.parquet") in done.stderr
        assert "Traceback" not in done.stderr
        assert not (tmp_path / out / "outcomes.parquet").exists()


def test_rematch_to_a_filesystem_url_goes_through_the_mirror(scans, memory_out) -> None:
    config = build_config({"out": memory_out.url, "hashlist": [scans["v2"]]}, "test")
    result = rematch([str(scans["a"])], config)
    reports = memory_out.published_reports(result.out)
    staging = result.out
    assert matched_entries(staging) == matched_entries(scans["b"])
    assert {"outcomes.parquet", "matches.jsonl", "hashes.parquet", "summary.json"} <= set(reports)
    shutil.rmtree(staging)  # as on another machine: the URL says the rematch is done
    assert rematch([str(scans["a"])], config).summary == result.summary


def test_rematch_command_publishes_to_a_filesystem_url(scans, tmp_path: Path, scanner_cli) -> None:
    pytest.importorskip("fsspec", reason="fsspec is not installed (pip install .[remote])")
    url = f"memory://reports/{tmp_path.name}"
    command = ["rematch", str(scans["a"]), "--hashlist", scans["v2"], "--out", url]
    done = scanner_cli(*command, cwd=tmp_path, env={"TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert f"published to: {url}" in done.stdout and "matches: 4 on 4 rows" in done.stdout
    assert not (tmp_path / "memory:").exists()
    assert list((tmp_path / "scanner-staging").iterdir())  # the staging directory, under TMPDIR

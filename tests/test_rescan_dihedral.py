"""rescan after a --pdq-dihedral scan: rotated and flipped copies of listed images stay matched, and a newly
listed image's rotated copy is found from the stored hashes, with no download; older records without the
dihedral hashes get their bodies hashed again, or are refused when a rotated match would be lost."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from audit_support import matches, outcomes, run_scan, write_shard
from dihedral_support import DIHEDRAL, NAMES, PATHS, as_version_1, originals, pdq_list, served_files
from loopback import LoopbackServer

from scanner.audits.rescan import rescan
from scanner.errors import InputError

ONE_WORKER = {"run.workers": 1, "fetch.allow_private_networks": True}  # served from 127.0.0.1


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """Two dihedral scans with --keep-hashes: `first` lists the rotated copy's original (a transform match),
    `plainly` lists the plain image only; the server stays up for the rescans."""
    tmp = tmp_path_factory.mktemp("rescan-dihedral")
    original = originals()
    with LoopbackServer(served_files(original)) as server:
        shard = write_shard(tmp / "shard.parquet", {"url": [server.url(path) for path in PATHS]})
        keep = {"audit": {"keep_hashes": True}, **DIHEDRAL}
        run_scan(shard, tmp / "first", [pdq_list(tmp / "v1.csv", {"rotated": original["rotated"]})], **keep)
        run_scan(shard, tmp / "plainly", [pdq_list(tmp / "p.csv", {"plain": original["plain"]})], **keep)
        lists = {
            name: pdq_list(tmp / f"{name}.csv", {n: original[n] for n in listed})
            for name, listed in (("v2", NAMES[:2]), ("all", NAMES))
        }
        yield {"tmp": tmp, "server": server, **lists}


def requests(server: LoopbackServer) -> list[tuple[str, str, bool]]:
    """(method, path, conditional) of each request since the last reset, sorted."""
    return sorted((m, p, "If-None-Match" in h) for m, p, h in server.requests())


@pytest.fixture(scope="module")
def rescanned(served) -> dict:
    """The first scan rescanned with a list adding the flipped copy's original."""
    served["server"].reset_hits()
    result = rescan(served["tmp"] / "first", str(served["tmp"] / "second"), [served["v2"]], ONE_WORKER)
    return {"tmp": served["tmp"], "result": result, "requests": requests(served["server"])}


def test_the_first_scan_matched_the_rotated_copy_only_through_a_transform(rescanned) -> None:
    first = rescanned["tmp"] / "first"
    assert outcomes(first) == ["match", "clean", "clean"]
    [match] = matches(first)
    assert (match["row"], match["hash_type"], match["entry_id"]) == (0, "pdq", "rotated")
    assert match["transform"] not in (None, "original")
    stored = pq.read_table(first / "hashes.parquet").column("pdq_dihedral").to_pylist()
    assert all(len(variants) == 8 for variants in stored)


def test_rescan_keeps_a_rotated_match_and_finds_a_newly_listed_flipped_copy(rescanned) -> None:
    tmp = rescanned["tmp"]
    assert outcomes(tmp / "second") == ["match", "match", "clean"]
    found = matches(tmp / "second")
    assert found[0] == matches(tmp / "first")[0]  # same entry, same transform, same distance
    assert (found[1]["row"], found[1]["entry_id"]) == (1, "flipped")
    assert found[1]["transform"] not in (None, "original")
    changes = [json.loads(line) for line in (tmp / "second" / "changes.jsonl").read_text().splitlines()]
    assert [(c["row"], c["change"]) for c in changes] == [(1, "new_match")]
    assert rescanned["result"].summary["changes"]["matches_gone"] == 0


def test_rescan_never_downloads_the_rotated_matches_again(rescanned) -> None:
    # Both are known matches from their stored dihedral hashes: a liveness check, not a (conditional) GET.
    assert rescanned["requests"] == [
        ("GET", "/plain.jpg", True),
        ("HEAD", "/flipped.jpg", False),
        ("HEAD", "/rotated.jpg", False),
    ]


def test_rescan_carries_the_dihedral_hashes_forward(rescanned) -> None:
    tmp = rescanned["tmp"]
    first, second = (pq.read_table(tmp / name / "hashes.parquet") for name in ("first", "second"))
    assert second.column("pdq_dihedral").equals(first.column("pdq_dihedral"))


def test_old_records_without_dihedral_hashes_get_bodies_hashed_again(served) -> None:
    """Version 1 records (no pdq_dihedral column) of a scan with no transform match: a conditional request
    could come back 304 with nothing to match rotations against, so the rows are fetched whole."""
    tmp, server = served["tmp"], served["server"]
    old = as_version_1(tmp / "plainly", tmp / "plainly-v1")
    server.reset_hits()
    rescan(old, str(tmp / "plainly-rescanned"), [served["all"]], ONE_WORKER)
    assert requests(server) == [
        ("GET", "/flipped.jpg", False),
        ("GET", "/rotated.jpg", False),
        ("HEAD", "/plain.jpg", False),
    ]
    assert outcomes(tmp / "plainly-rescanned") == ["match", "match", "match"]
    assert [m["entry_id"] for m in matches(tmp / "plainly-rescanned")] == NAMES
    variants = pq.read_table(tmp / "plainly-rescanned" / "hashes.parquet").column("pdq_dihedral").to_pylist()
    assert variants[0] is not None and variants[1] is not None
    assert variants[2] is None  # liveness only: its old record is carried as it was


def test_old_records_of_a_scan_that_matched_through_a_transform_are_refused(served, tmp_path) -> None:
    old = as_version_1(served["tmp"] / "first", tmp_path / "first-v1")
    server = served["server"]
    server.reset_hits()
    with pytest.raises(InputError, match="1 rows matched through a rotation or flip") as refused:
        rescan(old, str(tmp_path / "second"), (), ONE_WORKER)
    assert str(old / "hashes.parquet") in str(refused.value)
    assert server.total_hits == 0
    assert not (tmp_path / "second" / "outcomes.parquet").exists()

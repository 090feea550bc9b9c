"""rematch --pdq-dihedral: the rotated and flipped PDQ hashes a dihedral scan stored give the matches a fresh
dihedral scan gives; records without them (older files, or scans without --pdq-dihedral) are refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from audit_support import matches, outcomes, run_scan, write_shard
from dihedral_support import DIHEDRAL, NAMES, PATHS, as_version_1, originals, pdq_list, served_files
from loopback import LoopbackServer

from scanner.audits.rematch import rematch
from scanner.audits.stored import StoredScan
from scanner.config import ScanConfig, build_config
from scanner.errors import ConfigError
from scanner.reports.hashes import HASHES_SCHEMA, open_hashes, stored_hashes
from scanner.reports.verify import verify_report


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Dihedral scan A (list v1: the rotated copy's original, hashes kept), then list v2 adding the flipped
    copy's original and a fresh dihedral scan B with it."""
    tmp = tmp_path_factory.mktemp("rematch-dihedral")
    original = originals()
    v1 = pdq_list(tmp / "v1.csv", {"rotated": original["rotated"]})
    v2 = pdq_list(tmp / "v2.csv", {name: original[name] for name in NAMES[:2]})
    with LoopbackServer(served_files(original)) as server:
        shard = write_shard(tmp / "shard.parquet", {"url": [server.url(path) for path in PATHS]})
        run_scan(shard, tmp / "a", [v1], audit={"keep_hashes": True}, **DIHEDRAL)
        run_scan(shard, tmp / "b", [v2], **DIHEDRAL)
    return {"tmp": tmp, "a": tmp / "a", "b": tmp / "b", "v2": v2}


def dihedral_config(out: Path, hashlist: str, dihedral: bool = True) -> ScanConfig:
    """A rematch into `out` against one list, dihedral matching on or off."""
    match = {"pdq_dihedral": dihedral}
    return build_config({"out": str(out), "hashlist": [hashlist], "match": match}, "test")


def test_rematch_with_stored_variants_gives_a_fresh_dihedral_scans_matches(scans) -> None:
    out = scans["tmp"] / "c"
    result = rematch([str(scans["a"])], dihedral_config(out, scans["v2"]))
    fresh = matches(scans["b"])
    assert [(m["row"], m["entry_id"]) for m in fresh] == [(0, "rotated"), (1, "flipped")]
    assert all(m["transform"] not in (None, "original") for m in fresh)
    assert matches(out) == fresh  # entries, distances, qualities and transforms alike
    assert outcomes(out) == outcomes(scans["b"]) == ["match", "match", "clean"]
    assert result.summary["matches"]["rows"] == 2
    assert pq.read_table(out / "hashes.parquet").equals(pq.read_table(scans["a"] / "hashes.parquet"))
    assert verify_report(out).ok


def test_rematch_command_accepts_the_flag_for_records_with_variants(scans, tmp_path, scanner_cli) -> None:
    out = tmp_path / "c"
    command = ["rematch", str(scans["a"]), "--hashlist", scans["v2"], "--pdq-dihedral", "--out", str(out)]
    done = scanner_cli(*command, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "matches: 2 on 2 rows" in done.stdout
    assert matches(out) == matches(scans["b"])


def test_without_the_flag_stored_variants_are_not_matched(scans, tmp_path) -> None:
    rematch([str(scans["a"])], dihedral_config(tmp_path / "c", scans["v2"], dihedral=False))
    assert matches(tmp_path / "c") == [] and outcomes(tmp_path / "c") == ["clean", "clean", "clean"]


def test_version_1_records_are_read_without_variants(scans, tmp_path) -> None:
    old = as_version_1(scans["a"], tmp_path / "a-v1")
    assert "pdq_dihedral" not in open_hashes(old).schema_arrow.names
    [row, *_] = StoredScan(old).read(0, 3)
    [current, *_] = StoredScan(scans["a"]).read(0, 3)
    assert current.hashes.pdq_dihedral is not None and current.hashes.pdq_dihedral[0] == current.hashes.pdq
    assert row.hashes == stored_hashes(row.record) == dataclasses.replace(current.hashes, pdq_dihedral=None)
    out = tmp_path / "plain"
    rematch([str(old)], dihedral_config(out, scans["v2"], dihedral=False))
    rewritten = pq.read_table(out / "hashes.parquet")
    assert rewritten.schema.metadata == HASHES_SCHEMA.metadata  # written as version 2, the column null
    assert rewritten.column("pdq_dihedral").null_count == 3


def test_version_1_records_are_refused_for_dihedral_matching(scans, tmp_path, scanner_cli) -> None:
    old = as_version_1(scans["a"], tmp_path / "a-v1")
    with pytest.raises(ConfigError, match="row 0 holds the plain PDQ hash only") as refused:
        rematch([str(old)], dihedral_config(tmp_path / "c", scans["v2"]))
    assert str(old / "hashes.parquet") in str(refused.value)
    command = ["rematch", str(old), "--hashlist", scans["v2"], "--pdq-dihedral", "--out", str(tmp_path / "d")]
    done = scanner_cli(*command, cwd=tmp_path)
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("scanner: error: rematch cannot match rotations and flips")
    assert "never stored" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "d" / "outcomes.parquet").exists()

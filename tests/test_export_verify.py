"""Referral exports (what intake forms ask for, nothing more, 0600) and verify (digests, summary schema)."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import stat
import tarfile
from pathlib import Path

import pytest
from audit_support import images, run_scan, write_list
from report_builder import MATCHES, build_report, caption_of, key_of, url_of

from scanner.cli.main import main
from scanner.errors import InputError
from scanner.reports.export import REFERRAL_FIELDS, write_referrals
from scanner.reports.verify import summary_schema, validate, verify_report
from scanner.reports.writer import refresh_digests


def expected_referrals(built) -> list[dict]:
    """One per match, in the order the scan wrote them, from the scenario."""
    return [
        {
            "url": url_of(name, row),
            "shard": str(built.shards[name]),
            "row": row,
            "key": key_of(name, row),
            "list": hashlist,
            "entry_id": entry,
            "hash_type": hash_type,
            "distance": distance,
            "server_ip": f"192.0.2.{row}",
        }
        for name, row, hashlist, entry, _category, hash_type, distance, _quality in MATCHES
    ]


def test_csv_export_has_one_row_per_match_and_only_referral_fields(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    path, count = write_referrals(built.out, "csv")
    assert path == built.out / "referrals.csv"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == REFERRAL_FIELDS
        rows = list(reader)
    assert count == len(rows) == len(MATCHES)
    for row, want in zip(rows, expected_referrals(built), strict=True):
        key = want.pop("key")
        assert row["key"] == ("'" + key if key.startswith("=") else key)  # no formula runs in a spreadsheet
        assert {k: row[k] for k in want} == {k: str(v) for k, v in want.items()}
        assert row["content_type"] == "image/jpeg" and row["observed_at"].startswith("2025-10-09T08:")
        assert row["dataset"] == str(built.shards["part-00000.parquet"].parent)
    assert "caption" not in path.read_text(encoding="utf-8")


def test_jsonl_export_with_captions_reads_them_from_the_shard(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    output = tmp_path / "elsewhere" / "referrals.jsonl"
    output.parent.mkdir()
    path, count = write_referrals(built.out, "jsonl", with_captions=True, output=output)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert path == output and count == len(records) == len(MATCHES)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for record, (name, row, *_rest) in zip(records, MATCHES, strict=True):
        assert list(record) == [*REFERRAL_FIELDS, "caption"]
        assert record["caption"] == caption_of(name, row)
        assert record["key"] == key_of(name, row)  # JSON needs no formula guard


def test_referrals_from_a_corpus_shard_name_the_member(tmp_path: Path) -> None:
    bodies = images(3)
    tar = tmp_path / "corpus.tar"
    with tarfile.open(tar, "w") as archive:
        for i, body in enumerate(bodies):
            _add_member(archive, f"part-7/{i:06d}.jpg", body)
            _add_member(
                archive, f"part-7/{i:06d}.json", json.dumps({"url": f"http://img.example/{i}.jpg"}).encode()
            )
    listed = [hashlib.md5(bodies[i]).hexdigest() for i in (0, 2)]
    run_scan(tar, tmp_path / "out", [f"md5:{write_list(tmp_path / 'l.txt', listed)}"])
    path, count = write_referrals(tmp_path / "out", "jsonl")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert count == 2
    assert [(r["row"], r["member"], r["url"]) for r in records] == [
        (i, f"part-7/{i:06d}.jpg", f"http://img.example/{i}.jpg") for i in (0, 2)
    ]
    assert all(r["shard"] == str(tar) and r["hash_type"] == "md5" for r in records)
    path, _ = write_referrals(tmp_path / "out", "csv")
    with open(path, newline="", encoding="utf-8") as handle:
        assert [row["member"] for row in csv.DictReader(handle)] == ["part-7/000000.jpg", "part-7/000002.jpg"]


def test_referrals_from_url_lists_have_an_empty_member(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    path, _ = write_referrals(built.out, "jsonl")
    assert {json.loads(line)["member"] for line in path.read_text(encoding="utf-8").splitlines()} == {None}


def _add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def test_captions_need_parquet_shards(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    lines = (built.out / "matches.jsonl").read_text().splitlines()
    moved = [json.dumps({**json.loads(line), "shard": "/data/list.csv"}) for line in lines]
    evidence = (built.out / "evidence.jsonl").read_text().splitlines()
    (built.out / "matches.jsonl").write_text("\n".join(moved) + "\n")
    (built.out / "evidence.jsonl").write_text(
        "\n".join(json.dumps({**json.loads(line), "shard": "/data/list.csv"}) for line in evidence) + "\n"
    )
    with pytest.raises(InputError, match="Parquet shards only"):
        write_referrals(built.out, "csv", with_captions=True)
    assert not (built.out / "referrals.csv").exists()


def test_match_without_evidence_names_the_line(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    evidence = (built.out / "evidence.jsonl").read_text().splitlines()
    (built.out / "evidence.jsonl").write_text("\n".join(evidence[:-1]) + "\n")
    with pytest.raises(InputError, match=rf"matches.jsonl:{len(MATCHES)}: no evidence"):
        write_referrals(built.out, "jsonl")


def test_export_command_writes_inside_dir(tmp_path: Path, capsys) -> None:
    built = build_report(tmp_path)
    assert main(["export", str(built.out), "--format", "jsonl"]) == 0
    assert (built.out / "referrals.jsonl").is_file()
    assert f"{len(MATCHES)} referral rows" in capsys.readouterr().out


def test_fresh_scan_verifies_and_exports_are_only_noted(tmp_path: Path, capsys) -> None:
    built = build_report(tmp_path)
    write_referrals(built.out, "csv")
    result = verify_report(built.out)
    assert result.ok and result.checked == 5
    assert result.notes == ["not in the manifest: referrals.csv"]
    assert main(["verify", str(built.out)]) == 0
    assert capsys.readouterr().out.startswith("OK: 5 files match")


def test_verify_names_changed_missing_and_bad_entries(tmp_path: Path, capsys) -> None:
    built = build_report(tmp_path)
    with open(built.out / "matches.jsonl", "a") as handle:
        handle.write("\n")
    (built.out / "evidence.jsonl").unlink()
    manifest = json.loads((built.out / "manifest.json").read_text())
    manifest["files"]["../outside.txt"] = "0" * 64
    (built.out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", str(built.out)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED: 3 problem(s)")
    assert "changed: matches.jsonl (manifest sha256 " in out
    assert "missing: evidence.jsonl" in out
    assert "'../outside.txt' is not a plain file name" in out


def test_verify_checks_summary_schema_and_totals(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    summary = json.loads((built.out / "summary.json").read_text())
    summary["rows"] = -1
    summary["matches"]["by_list"]["iwf"]["rows"] = True
    summary["extra"] = 1
    _rewrite_summary(built.out, summary)
    problems = verify_report(built.out).problems
    assert problems == [
        "summary.json: $.rows: -1 is below 0",
        "summary.json: $.matches.by_list.iwf.rows: expected integer, got bool",
        "summary.json: $: unexpected 'extra'",
    ]
    summary = copy.deepcopy(built.summary)
    summary["outcomes"]["clean"] += 1
    _rewrite_summary(built.out, summary)
    assert verify_report(built.out).problems == [
        f"summary.json: outcomes.clean is {summary['outcomes']['clean']} but outcomes.parquet has "
        f"{summary['outcomes']['clean'] - 1}"
    ]


def _rewrite_summary(out: Path, summary: dict) -> None:
    (out / "summary.json").write_text(json.dumps(summary))
    refresh_digests(out, ["summary.json"])


def test_verify_refuses_a_directory_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"manifest\.json: cannot read"):
        verify_report(tmp_path)


def test_schema_accepts_real_summaries_and_is_within_the_validator(tmp_path: Path) -> None:
    built = build_report(
        tmp_path, history=[{"finished_at": "2025-01-01T00:00:00Z", "rows": 3, "outcomes": {}}]
    )
    schema = summary_schema()
    assert validate(built.summary, schema) == []
    assert schema["properties"]["schema_version"]["const"] == built.summary["schema_version"]
    assert validate({**built.summary, "history": [{"rows": 1}]}, schema) == [
        "$.history[0]: missing 'finished_at'",
        "$.history[0]: missing 'outcomes'",
    ]


def test_validator_subset() -> None:
    schema = {
        "type": "object",
        "required": ["a"],
        "properties": {
            "a": {"$ref": "#/$defs/n"},
            "b": {"enum": ["x", "y"]},
            "c": {"type": ["string", "null"]},
        },
        "additionalProperties": False,
        "$defs": {"n": {"type": "number", "maximum": 1}},
    }
    assert validate({"a": 0.5, "b": "x", "c": None}, schema) == []
    assert validate({"a": 2, "b": "z", "c": 3, "d": 0}, schema) == [
        "$.a: 2 is above 1",
        "$.b: 'z' is not one of ['x', 'y']",
        "$.c: expected string or null, got int",
        "$: unexpected 'd'",
    ]
    assert validate({}, schema) == ["$: missing 'a'"]
    assert validate({"a": False}, schema) == ["$.a: expected number, got bool"]
    with pytest.raises(ValueError, match="unsupported keyword"):
        validate(1, {"oneOf": []})

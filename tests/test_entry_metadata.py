"""A list's own columns (NCMEC member, pytx collab and tags) reach the referral: matches.jsonl, `scanner
export` and report.html's match table, under `entry`; `--omit-entry-field` leaves chosen ones out, and a
rematch carries them as a scan does. Real processes, a real folder of images, no network."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from images import encode, make_image

from scanner.lists import HashEntries, load_hashlist

NCMEC_HEAD = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2">\n<images count="2">\n'
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder of three images, an NCMEC response listing two of them (one also PhotoDNA, skipped)."""
    root = tmp_path_factory.mktemp("entry-metadata")
    images = root / "images"
    images.mkdir()
    digests = []
    for i in range(3):
        body = encode(make_image(100 + i, (64, 48)), "PNG")
        (images / f"img{i}.png").write_bytes(body)
        digests.append(hashlib.md5(body).hexdigest())
    entries = [
        f'<image><member id="{40 + i}">Member {i}</member><id>ncmec-{i}</id>'
        f"<classification>A{i + 1}</classification><fingerprints><md5>{digests[i]}</md5>"
        f"<pdna>{'AB' * 96}</pdna></fingerprints></image>"
        for i in range(2)
    ]
    page = root / "ncmec.xml"
    page.write_text(NCMEC_HEAD + "\n".join(entries) + "\n</images>\n</queryResult>\n", encoding="utf-8")
    return {"images": images, "list": page, "root": root}


def scan(scanner_cli, corpus: dict[str, Path], out: Path, *flags: str) -> subprocess.CompletedProcess:
    listed = f"ncmec={corpus['list']}"
    done = scanner_cli(
        "scan", str(corpus["images"]), "--hashlist", listed, "--out", str(out), "--keep-hashes", *flags
    )
    assert done.returncode == 0, done.stderr
    return done


def matches(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "matches.jsonl").read_text(encoding="utf-8").splitlines()]


def test_the_entry_columns_reach_matches_export_and_report(scanner_cli, corpus, tmp_path: Path) -> None:
    out = tmp_path / "out"
    scan(scanner_cli, corpus, out)
    found = sorted(matches(out), key=lambda m: m["entry_id"])
    assert [(m["entry_id"], m["category"]) for m in found] == [("ncmec-0", "A1"), ("ncmec-1", "A2")]
    assert found[0]["entry"] == {"member": "Member 0", "member_id": "40", "kind": "image"}
    done = scanner_cli("export", str(out), "--format", "csv")
    assert done.returncode == 0, done.stderr
    with (out / "referrals.csv").open(encoding="utf-8", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["entry_id"])
    assert json.loads(rows[1]["entry"]) == {"member": "Member 1", "member_id": "41", "kind": "image"}
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<th>entry</th>" in html and "kind=image; member=Member 0; member_id=40" in html


def test_omitted_columns_are_left_out_and_rematch_carries_the_rest(scanner_cli, corpus, tmp_path) -> None:
    out = tmp_path / "out"
    scan(scanner_cli, corpus, out, "--omit-entry-field", "member", "--omit-entry-field", "member_id")
    assert {json.dumps(m["entry"]) for m in matches(out)} == {'{"kind": "image"}'}
    again = tmp_path / "rematch"
    command = ["rematch", str(out), "--hashlist", f"ncmec={corpus['list']}", "--out", str(again), "--quiet"]
    done = scanner_cli(*command, "--omit-entry-field", "kind")
    assert done.returncode == 0, done.stderr
    assert sorted((m["entry"] for m in matches(again)), key=json.dumps) == [
        {"member": "Member 0", "member_id": "40"},
        {"member": "Member 1", "member_id": "41"},
    ]


def test_skipped_entries_are_reported_in_summary_manifest_cli_and_html(scanner_cli, corpus, tmp_path) -> None:
    out = tmp_path / "out"
    done = scan(scanner_cli, corpus, out)
    line = "ncmec: 2 pdna entries skipped (no hasher for pdna: install a plug-in)"
    assert line in done.stdout
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["skipped_list_entries"]["ncmec"]["pdna"]["entries"] == 2
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["lists"][0]["skipped"]["pdna"]["why"] == "no hasher for pdna: install a plug-in"
    assert line in (out / "report.html").read_text(encoding="utf-8")
    verified = scanner_cli("verify", str(out))
    assert verified.returncode == 0, verified.stderr + verified.stdout


def test_metadata_is_read_only_for_matched_entries(corpus) -> None:
    """Columns stay columnar: a match reads one row of them, and omitting a column drops it from memory."""
    entries: HashEntries = load_hashlist(str(corpus["list"])).entries["md5"]
    assert entries.fields(1) == (("member", "Member 1"), ("member_id", "41"), ("kind", "image"))
    assert entries.without_fields(["member", "kind", "member_id"]).metadata is None
    assert entries.without_fields(["nothing"]) is entries


def test_repeated_metadata_values_are_held_once(tmp_path: Path) -> None:
    rows = [f"md5,{i:032x},Partner Collab,tag{i}" for i in range(10)]
    path = tmp_path / "list.csv"
    path.write_text("\n".join(["hash_type,hash,collab,tags", *rows]) + "\n", encoding="utf-8")
    entries = load_hashlist(str(path)).entries["md5"]
    metadata = entries.metadata
    assert metadata is not None
    assert pa.types.is_dictionary(metadata.schema.field("collab").type)
    assert not pa.types.is_dictionary(metadata.schema.field("tags").type)  # all distinct: kept plain
    assert entries.fields(3) == (("collab", "Partner Collab"), ("tags", "tag3"))

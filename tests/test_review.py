"""The review loop end to end: verdicts recorded and shown, a planted flood entry flagged and held, false
positives turned into a negative list that suppresses them, referral drafts. Real HTTP over loopback, real
Parquet, real processes for the commands that write into a report directory."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_scanner
from images import encode, make_image
from loopback import LoopbackServer

from scanner.cli.main import main
from scanner.config import build_config
from scanner.hashing import hash_image
from scanner.lists import Matcher, Query, load_hashlist
from scanner.reports.review import ReviewConfig, is_flood
from scanner.reports.verdicts import Verdicts, url_sha256
from scanner.runners.local import scan

POPULAR = make_image(21)  # one picture served at many URLs: the planted flood entry is its PDQ
TARGET = encode(make_image(22), "JPEG")  # the true match: an exact MD5 entry
WRONG = make_image(23)  # the false positive: a PDQ entry the review says is wrong
FILES = {
    **{f"/popular{i}.jpg": encode(POPULAR.resize((480 - 40 * i, 360 - 30 * i)), "JPEG") for i in range(6)},
    "/target.jpg": TARGET,
    "/wrong.png": encode(WRONG, "PNG"),
    **{f"/other{i}.jpg": encode(make_image(30 + i), "JPEG") for i in range(4)},
}


def _lists(tmp: Path) -> tuple[Path, Path]:
    popular = hash_image(encode(POPULAR, "PNG"), frozenset({"pdq"})).pdq.hex()
    md5 = hash_image(TARGET, frozenset({"md5"})).md5.hex()
    wrong = hash_image(encode(WRONG, "JPEG", quality=50), frozenset({"pdq"})).pdq.hex()
    main_list, flood_list = tmp / "tlist.csv", tmp / "flist.csv"
    main_list.write_text(f"hash_type,hash,id,category\nmd5,{md5},E-1,test\npdq,{wrong},E-2,test\n")
    flood_list.write_text(f"hash_type,hash,id,category\npdq,{popular},F-1,test\n")
    return main_list, flood_list


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """A scan with hash records kept, flood settings low enough for a 12-row shard."""
    tmp = tmp_path_factory.mktemp("review")
    main_list, flood_list = _lists(tmp)
    with LoopbackServer(FILES) as server:
        urls = [server.url(path) for path in FILES]
        shard = tmp / "shard.parquet"
        keys = [f"k{i}" for i in range(len(urls))]
        pq.write_table(pa.table({"SAMPLE_ID": keys, "URL": urls}), shard, row_group_size=4)
        config = build_config(
            {
                "inputs": [str(shard)],
                "out": str(tmp / "out"),
                "hashlist": [f"tlist={main_list}", f"flist={flood_list}"],
                "fetch": {"allow_private_networks": True, "max_retries": 0},
                "source": {"rows_per_unit": 4},
                "audit": {"keep_hashes": True},
                "review": {"flood_rows": 3},
                "run": {"workers": 2},
            },
            "test",
        )
        result = scan(config)
    rows = {Path(url).name: i for i, url in enumerate(urls)}
    return tmp, tmp / "out", rows, urls, result.summary


def _outcomes(out: Path) -> dict[int, str]:
    return {r["row"]: r["outcome"] for r in pq.read_table(out / "outcomes.parquet").to_pylist()}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_a_flood_entry_is_flagged_with_its_list_id_and_rows(scanned) -> None:
    _tmp, out, rows, _urls, summary = scanned
    assert summary["floods"] == [{"list": "flist", "entry_id": "F-1", "rows": 6, "hold": False}]
    outcomes = _outcomes(out)
    assert all(outcomes[rows[f"popular{i}.jpg"]] == "match" for i in range(6))  # flagged, not held
    assert "Likely bad list entries" in (out / "report.html").read_text(encoding="utf-8")
    assert main(["verify", str(out)]) == 0


def _rematch_holding_floods(scanner_cli, tmp: Path, out: Path, held_out: Path):
    """The scan rematched into held_out with --hold-floods (flood_rows 3): the popular picture's rows held."""
    return scanner_cli(
        "rematch", str(out), "--hashlist", f"tlist={tmp / 'tlist.csv'}", "--hashlist",
        f"flist={tmp / 'flist.csv'}", "--out", str(held_out), "--hold-floods", "--config", str(_low(tmp)),
    )  # fmt: skip


def test_hold_floods_reports_held_rows_and_keeps_them_for_review(scanned, scanner_cli) -> None:
    tmp, out, rows, _urls, _summary = scanned
    held_out = tmp / "held"
    done = _rematch_holding_floods(scanner_cli, tmp, out, held_out)
    assert done.returncode == 0, done.stderr
    outcomes = _outcomes(held_out)
    popular = {rows[f"popular{i}.jpg"] for i in range(6)}
    assert {outcomes[r] for r in popular} == {"held"}
    assert outcomes[rows["target.jpg"]] == "match"
    summary = json.loads((held_out / "summary.json").read_text())
    assert summary["outcomes"]["held"] == 6 and summary["floods"][0]["hold"] is True
    held = _lines(held_out / "held.jsonl")
    assert {r["row"] for r in held} == popular and all(r["matches"][0]["entry_id"] == "F-1" for r in held)
    assert all(r["evidence"]["row"] == r["row"] for r in held)
    assert not any(m["entry_id"] == "F-1" for m in _lines(held_out / "matches.jsonl"))
    assert "outcomes: match 2, clean 4, dead 0, invalid 0, blocked 0, held 6" in done.stdout
    flood = "likely bad list entry: flist F-1 matched 6 rows; rows it alone matched are held (held.jsonl)"
    assert flood in done.stdout
    assert main(["verify", str(held_out)]) == 0
    released = tmp / "released"  # held rows keep their hash records: without the flag they match again
    done = scanner_cli(
        "rematch", str(held_out), "--hashlist", f"tlist={tmp / 'tlist.csv'}", "--hashlist",
        f"flist={tmp / 'flist.csv'}", "--out", str(released), "--config", str(_low(tmp)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {_outcomes(released)[r] for r in popular} == {"match"}


def test_a_negative_entry_alone_is_no_match(tmp_path) -> None:
    listed, negative = tmp_path / "listed.csv", tmp_path / "neg.csv"
    near = hash_image(encode(WRONG, "PNG"), frozenset({"pdq"}))
    listed.write_text(f"hash_type,hash,id\nmd5,{'0' * 32},L-1\n")
    negative.write_text(f"hash_type,hash,id\npdq,{near.pdq.hex()},N-1\n")
    lists = [load_hashlist(f"listed={listed}"), load_hashlist(f"neg={negative}")]
    matcher = Matcher.from_lists(lists, negative=["neg"])
    only_negative = Query({"pdq": near.pdq, "md5": bytes(15) + b"\x01"}, near.pdq_quality)
    both = Query({"pdq": near.pdq, "md5": bytes(16)}, near.pdq_quality)
    found = matcher.match_batch([only_negative, both])
    assert found[0] == []
    assert [(m.list, m.entry_id, m.value) for m in found[1]] == [
        ("listed", "L-1", "0" * 32),
        ("neg", "N-1", near.pdq.hex()),
    ]


def _low(tmp: Path) -> Path:
    config = tmp / "low.toml"
    config.write_text("[review]\nflood_rows = 3\n")
    return config


def _verdicts_csv(tmp: Path, rows: dict[str, int], urls: list[str], name: str = "verdicts.csv") -> Path:
    shard = str(tmp / "shard.parquet")
    path = tmp / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["shard", "row", "url_sha256", "key", "verdict", "note"])
        writer.writerow([shard, rows["target.jpg"], "", "", "confirmed", "checked twice"])
        writer.writerow(["", "", url_sha256(urls[rows["wrong.png"]]), "", "false_positive", "a landscape"])
        wrong_digest = url_sha256("http://elsewhere.example/x.jpg")
        writer.writerow([shard, rows["popular0.jpg"], wrong_digest, "", "confirmed", "another dataset"])
        writer.writerow([shard, rows["other0.jpg"], "", "", "confirmed", "not a matched row"])
    return path


@pytest.fixture(scope="module")
def reviewed(scanned):
    """The scan with verdicts imported: one confirmed, one false positive, two lines refused."""
    tmp, out, rows, urls, _summary = scanned
    verdicts = _verdicts_csv(tmp, rows, urls)
    done = run_scanner("review", "import", str(out), str(verdicts), "--operator", "ana")
    return (*scanned, done)


def test_verdicts_are_recorded_shown_exported_and_checked(reviewed, scanner_cli) -> None:
    tmp, out, rows, urls, _summary, done = reviewed
    assert done.returncode == 1, done.stderr  # two lines refused: said, and the status says so
    assert "2 verdicts recorded, 2 lines refused" in done.stdout
    assert "its url_sha256 is not the row's" in done.stdout and "is no matched row" in done.stdout
    path = out / "verdicts.jsonl"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    recorded = _lines(path)
    assert [r["verdict"] for r in recorded] == ["confirmed", "false_positive"]
    assert set(recorded[0]) == {
        "shard", "row", "url_sha256", "key", "verdict", "note", "operator", "recorded_at",
    }  # fmt: skip
    assert recorded[0]["operator"] == "ana" and recorded[0]["url_sha256"] == url_sha256(
        urls[rows["target.jpg"]]
    )
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<th>verdict</th>" in html and "false_positive" in html and "confirmed" in html
    assert main(["verify", str(out)]) == 0  # report.html rewritten, its digest refreshed
    export = tmp / "confirmed.jsonl"
    assert (
        main(["export", str(out), "--format", "jsonl", "--verdict", "confirmed", "--output", str(export)])
        == 0
    )
    assert [(r["row"], r["verdict"]) for r in _lines(export)] == [(rows["target.jpg"], "confirmed")]
    unreviewed = tmp / "unreviewed.jsonl"
    assert (
        main(
            ["export", str(out), "--format", "jsonl", "--verdict", "unreviewed", "--output", str(unreviewed)]
        )
        == 0
    )
    assert {r["row"] for r in _lines(unreviewed)} == {rows[f"popular{i}.jpg"] for i in range(6)}
    listed = scanner_cli("review", "list", str(out))
    assert "confirmed 1, false_positive 1, unreviewed 6" in listed.stdout


def test_a_verdict_for_a_reshuffled_row_is_not_applied(scanned) -> None:
    _tmp, _out, rows, urls, _summary = scanned
    verdicts = Verdicts()
    target = rows["target.jpg"]
    record = {"shard": "s", "row": target, "url_sha256": url_sha256(urls[target]), "key": f"k{target}"}
    verdicts.latest[("s", target)] = {**record, "verdict": "confirmed"}
    assert verdicts.of("s", target, urls[target], f"k{target}") == "confirmed"
    assert verdicts.of("s", target, urls[target + 1], f"k{target}") == "unreviewed"  # another URL there now
    assert verdicts.of("s", target, urls[target], "k99") == "unreviewed"


def test_cybertip_drafts_hold_the_confirmed_rows_only(reviewed) -> None:
    tmp, out, rows, urls, _summary, _done = reviewed
    path = tmp / "drafts.jsonl"
    assert main(["export", str(out), "--format", "cybertip-draft", "--output", str(path)]) == 0
    (draft,) = _lines(path)
    assert draft["sent"] is False
    assert draft["internetDetails"]["webPageIncident"]["url"] == urls[rows["target.jpg"]]
    details = draft["fileDetails"]
    assert details["ipCaptureEvent"]["ipAddress"] == "127.0.0.1"
    assert details["contentType"] == "image/jpeg" and details["fileSize"] == len(TARGET)
    md5 = hash_image(TARGET, frozenset({"md5"})).md5.hex()
    assert details["originalFileHash"] == [{"hashType": "md5", "value": md5}]
    assert draft["scanner"]["matches"][0]["entryId"] == "E-1" and draft["scanner"]["verdict"] == "confirmed"


def test_false_positives_become_a_negative_list_that_suppresses_them(reviewed, scanner_cli) -> None:
    tmp, out, rows, urls, _summary, _done = reviewed
    negative = tmp / "neg.csv"
    done = scanner_cli("review", "negative", str(out), "--out", str(negative))
    assert done.returncode == 0, done.stderr
    entries = list(csv.DictReader(negative.open(encoding="utf-8")))
    wrong = hash_image(encode(WRONG, "PNG"), frozenset({"pdq"})).pdq.hex()
    assert [(e["hash_type"], e["hash"]) for e in entries] == [("pdq", wrong)]
    again = tmp / "suppressed"
    done = scanner_cli(
        "rematch", str(out), "--hashlist", f"tlist={tmp / 'tlist.csv'}", "--hashlist",
        f"flist={tmp / 'flist.csv'}", "--negative-list", str(negative), "--out", str(again),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    outcomes = _outcomes(again)
    assert outcomes[rows["wrong.png"]] == "suppressed" and outcomes[rows["target.jpg"]] == "match"
    (kept,) = _lines(again / "suppressed.jsonl")
    assert kept["row"] == rows["wrong.png"] and {m["list"] for m in kept["matches"]} == {"tlist", "neg"}
    summary = json.loads((again / "summary.json").read_text())
    assert summary["outcomes"]["suppressed"] == 1
    # the verdicts came along with the rematch, and still hold for the same rows
    carried = Verdicts.load(again)
    assert carried.of("x", 0, None, None) == "unreviewed"
    target = rows["target.jpg"]
    assert carried.of(str(tmp / "shard.parquet"), target, urls[target], f"k{target}") == "confirmed"
    assert main(["verify", str(again)]) == 0


def test_clean_drops_rows_by_verdict(reviewed, scanner_cli) -> None:
    tmp, out, rows, _urls, _summary, _done = reviewed
    done = scanner_cli(
        "clean", str(tmp / "shard.parquet"), "--report", str(out), "--out", str(tmp / "clean"),
        "--drop", "confirmed",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    removed = pq.read_table(tmp / "clean" / "removed.parquet").to_pylist()
    assert [r["row"] for r in removed] == [rows["target.jpg"]]
    done = scanner_cli(
        "clean", str(tmp / "shard.parquet"), "--report", str(out), "--out", str(tmp / "clean2"),
        "--drop", "confirmed,unreviewed",
    )  # fmt: skip
    removed = {r["row"] for r in pq.read_table(tmp / "clean2" / "removed.parquet").to_pylist()}
    assert rows["wrong.png"] not in removed and rows["target.jpg"] in removed and len(removed) == 7


def test_unknown_verdict_names_are_refused(scanned) -> None:
    _tmp, out, _rows, _urls, _summary = scanned
    assert main(["export", str(out), "--verdict", "maybe"]) == 1


def test_an_entry_is_a_flood_by_rows_or_by_share_past_a_floor() -> None:
    config = ReviewConfig()  # more than 100 rows, or more than 0.1% of the rows and more than 10
    assert not is_flood(100, 1_000_000, config) and is_flood(101, 1_000_000, config)
    assert is_flood(11, 10_000, config) and not is_flood(10, 10_000, config)  # 0.1% of 10,000 is 10
    assert not is_flood(10, 20, config)  # half of a small scan, but only 10 rows
    assert not is_flood(50, 100_000, config)  # 0.05%


def test_a_suppressed_row_is_no_unreviewed_row_for_clean(tmp_path) -> None:
    from scanner.audits.clean import _by_verdict

    dropped = _by_verdict(tmp_path, ("unreviewed",))  # no verdict recorded: every match is unreviewed
    assert dropped is not None
    row = {"shard": "s.parquet", "row": 1, "url": "http://a.example/x.jpg", "key": None}
    assert dropped({**row, "outcome": "match"}) and dropped({**row, "outcome": "held"})
    assert not dropped({**row, "outcome": "suppressed"})  # a negative list reviewed it already
    assert not dropped({**row, "outcome": "clean"})


def test_a_verdict_csv_keeps_a_notes_line_ends_and_refuses_other_digits(tmp_path) -> None:
    from scanner.reports.verdicts import _int, read_input

    source = tmp_path / "v.csv"
    source.write_bytes(b'shard,row,verdict,note\r\ns.parquet,3,confirmed,"two\r\nlines"\r\n')
    [(_where, record)] = list(read_input(source))
    assert record == {"shard": "s.parquet", "row": "3", "verdict": "confirmed", "note": "two\r\nlines"}
    assert _int("3") == 3
    with pytest.raises(ValueError, match="not a row number"):
        _int("\u0663")  # ARABIC-INDIC DIGIT THREE


def test_a_held_row_confirmed_by_review_is_referred(scanned, scanner_cli) -> None:
    tmp, out, rows, _urls, _summary = scanned
    held_out = tmp / "held-reviewed"
    done = _rematch_holding_floods(scanner_cli, tmp, out, held_out)
    assert done.returncode == 0, done.stderr
    shard, first, second = str(tmp / "shard.parquet"), rows["popular0.jpg"], rows["popular1.jpg"]
    verdicts = tmp / "held-verdicts.csv"
    verdicts.write_text(f"shard,row,verdict\n{shard},{first},confirmed\n{shard},{second},false_positive\n")
    done = scanner_cli("review", "import", str(held_out), str(verdicts), "--operator", "ana")
    assert done.returncode == 0, done.stdout + done.stderr

    def held(*flags: str) -> list[tuple[int, str]]:
        """The exported records of the flood entry F-1, which matched held rows only."""
        target = held_out / "referrals.jsonl"
        done = scanner_cli("export", str(held_out), "--format", "jsonl", "--output", str(target), *flags)
        assert done.returncode == 0, done.stderr
        return sorted((r["row"], r["verdict"]) for r in _lines(target) if r["entry_id"] == "F-1")

    assert held() == [(first, "confirmed")]  # unreviewed and false-positive held rows stay out
    assert held("--verdict", "confirmed") == [(first, "confirmed")]
    waiting = sorted((rows[f"popular{i}.jpg"], "unreviewed") for i in range(2, 6))
    assert held("--verdict", "unreviewed") == waiting
    assert held("--verdict", "false_positive") == [(second, "false_positive")]
    drafts = tmp / "drafts.jsonl"
    done = scanner_cli("export", str(held_out), "--format", "cybertip-draft", "--output", str(drafts))
    assert done.returncode == 0, done.stderr
    drafted = {d["scanner"]["row"]["row"]: d["scanner"]["verdict"] for d in _lines(drafts)}
    assert drafted.get(first) == "confirmed" and set(drafted.values()) == {"confirmed"}

"""rescan on loopback: liveness only for known matches, conditional requests, 304 re-use, what changed."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from audit_support import images, matched_entries, outcomes, run_scan, write_list, write_shard
from loopback import LoopbackServer

from scanner.audits.rescan import rescan
from scanner.errors import InputError
from scanner.pipeline import Progress
from scanner.reports.verify import verify_report

LOOPBACK = {"run.workers": 1, "fetch.allow_private_networks": True}  # the images are served from 127.0.0.1
NAMES = ["match", "same", "changed", "gone", "back", "newmatch", "taken", "screened"]


@pytest.fixture(scope="module")
def rescanned(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A scan with --keep-hashes, then the server changes and the list grows, then a rescan; then one more
    image goes and the rescan is rescanned."""
    tmp = tmp_path_factory.mktemp("rescan")
    bodies = dict(zip(NAMES, images(len(NAMES) + 1), strict=False))
    replacement = images(1, first_seed=900)[0]
    md5 = {name: hashlib.md5(body).hexdigest() for name, body in bodies.items()}
    files = {f"/{name}.jpg": bodies[name] for name in NAMES if name != "back"}
    with LoopbackServer(files) as server:
        urls = [server.url(f"/{name}.jpg") for name in NAMES]
        shard = write_shard(tmp / "shard.parquet", {"url": urls, "key": NAMES})
        v1 = write_list(tmp / "v1.txt", [md5["match"], md5["taken"]])
        run_scan(
            shard, tmp / "first", [f"list=md5:{v1}"], audit={"keep_hashes": True}, source={"rows_per_unit": 3}
        )
        server.files["/changed.jpg"] = (replacement, "image/jpeg")
        del server.files["/gone.jpg"], server.files["/taken.jpg"]
        server.files["/back.jpg"] = (bodies["back"], "image/jpeg")
        v2 = write_list(
            tmp / "v2.csv", ["hash_type,hash,id", f"md5,{md5['match']},m1", f"md5,{md5['taken']},t1"]
        )
        with (tmp / "v2.csv").open("a") as handle:
            handle.write(f"md5,{md5['newmatch']},n1\nurl,{urls[7]},s1\n")
        server.reset_hits()
        result = rescan(
            tmp / "first", str(tmp / "second"), [f"list={v2}"], {**LOOPBACK, "source.rows_per_unit": 3}
        )
        requests = [(method, path.split("?")[0]) for method, path, _ in server.requests()]
        del server.files["/same.jpg"]
        rescan(tmp / "second", str(tmp / "third"), (), {**LOOPBACK, "source.rows_per_unit": 3})
    return {"tmp": tmp, "result": result, "requests": requests, "urls": urls}


def test_rescan_outcomes_and_what_changed(rescanned) -> None:
    tmp = rescanned["tmp"]
    assert outcomes(tmp / "first") == ["match", "clean", "clean", "clean", "dead", "clean", "match", "clean"]
    assert outcomes(tmp / "second") == [
        "match",
        "clean",
        "changed",
        "dead",
        "clean",
        "match",
        "dead",
        "match",
    ]
    changes = [json.loads(line) for line in (tmp / "second" / "changes.jsonl").read_text().splitlines()]
    assert [(c["key"], c["change"], c["previous"], c["current"]) for c in changes] == [
        ("changed", "content_changed", "clean", "changed"),
        ("gone", "newly_dead", "clean", "dead"),
        ("back", "newly_live", "dead", "clean"),
        ("newmatch", "new_match", "clean", "match"),
        ("taken", "newly_dead", "match", "dead"),
        ("taken", "match_gone", "match", "dead"),
        ("screened", "new_match", "clean", "match"),
    ]
    summary = rescanned["result"].summary
    assert {k: v for k, v in summary["changes"].items() if k != "previous"} == {
        "newly_dead": 2,
        "newly_live": 1,
        "new_matches": 2,
        "matches_back": 0,
        "matches_gone": 1,
        "content_changed": 1,
        "not_modified": 1,
        "liveness_only": 3,
    }
    first = json.loads((tmp / "first" / "summary.json").read_text())
    assert summary["changes"]["previous"]["finished_at"] == first["finished_at"]
    assert summary["history"] == [
        {k: first[k] for k in ("finished_at", "rows", "outcomes", "live_rate", "liveness")}
    ]
    assert [(row, hash_type, entry) for row, _, hash_type, entry in matched_entries(tmp / "second")] == [
        (0, "md5", "m1"),
        (5, "md5", "n1"),
        (7, "url", "s1"),
    ]
    assert verify_report(tmp / "second").ok


def test_rescans_carry_the_history_and_the_page_draws_link_rot_over_time(rescanned) -> None:
    tmp = rescanned["tmp"]
    scans = [json.loads((tmp / name / "summary.json").read_text()) for name in ("first", "second", "third")]
    entries = [{k: s[k] for k in ("finished_at", "rows", "outcomes", "live_rate", "liveness")} for s in scans]
    assert scans[2]["history"] == entries[:2]  # oldest first: the first scan, then the rescan it had
    assert scans[2]["changes"]["previous"]["out"] == str((tmp / "second").resolve())
    assert scans[2]["changes"]["newly_dead"] == 1 and outcomes(tmp / "third")[1] == "dead"
    html = (tmp / "third" / "report.html").read_text(encoding="utf-8")
    trend = html[html.index("Link rot across scans of these inputs") :]
    trend = trend[: trend.index("</svg>")]
    # link rot: dead / requested rows, as summary.json's liveness counts them (1 - live_rate)
    rot = [s["liveness"]["dead"] / (s["liveness"]["live"] + s["liveness"]["dead"]) for s in scans]
    assert [round(1 - share, 6) for share in rot] == [s["live_rate"] for s in scans]
    assert rot[0] < rot[1] < rot[2]
    assert re.findall(r">(\d+\.\d%)</text>", trend) == [f"{100 * share:.1f}%" for share in rot]
    assert "Changes since the previous scan" in html
    assert "Link rot across scans of these inputs" in (tmp / "second" / "report.html").read_text()
    assert verify_report(tmp / "third").ok


def test_known_matches_get_liveness_checks_only_and_listed_urls_no_request(rescanned) -> None:
    requests = rescanned["requests"]
    by_path: dict[str, list[str]] = {}
    for method, path in requests:
        by_path.setdefault(path, []).append(method)
    assert by_path["/match.jpg"] == by_path["/newmatch.jpg"] == by_path["/taken.jpg"] == ["HEAD"]
    assert "/screened.jpg" not in by_path
    assert by_path["/same.jpg"] == by_path["/changed.jpg"] == by_path["/gone.jpg"] == ["GET"]
    assert by_path["/back.jpg"] == ["GET"]


def test_conditional_requests_and_records_carried_forward(rescanned) -> None:
    tmp = rescanned["tmp"]
    first = {r["key"]: r for r in pq.read_table(tmp / "first" / "hashes.parquet").to_pylist()}
    second = {r["key"]: r for r in pq.read_table(tmp / "second" / "hashes.parquet").to_pylist()}
    hashes = ("md5", "sha1", "sha256", "pdq", "phash", "dhash", "etag")
    assert all(second["same"][h] == first["same"][h] for h in hashes)  # 304: stored hashes re-used
    assert second["same"]["fetched_at"] > first["same"]["fetched_at"]
    assert second["changed"]["sha256"] != first["changed"]["sha256"]
    assert second["changed"]["etag"] != first["changed"]["etag"]
    for key in ("gone", "taken", "match"):  # dead or never downloaded again: the last record stays
        assert all(second[key][h] == first[key][h] for h in (*hashes, "fetched_at"))
    assert first["back"]["md5"] is None and second["back"]["md5"] is not None


def test_rescan_of_a_scan_without_hash_records_says_why(tmp_path: Path) -> None:
    shard = write_shard(tmp_path / "shard.parquet", {"url": ["http://127.0.0.1:9/a.jpg"]})
    run_scan(shard, tmp_path / "first", [f"md5:{write_list(tmp_path / 'l.txt', ['0' * 32])}"])
    with pytest.raises(InputError, match="without --keep-hashes"):
        rescan(tmp_path / "first", str(tmp_path / "second"))


class Recorded(Progress):
    """The progress events a rescan gives, as a bar would receive them."""

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.matched_rows = self.units = self.closed = 0

    def row_done(self, result) -> None:
        self.rows.append(result.outcome)

    def rows_done(self, counts) -> None:  # from unit worker processes, in batches
        self.rows.extend(outcome for (outcome, *_), rows in counts.items() for _ in range(rows))

    def matched(self, rows: int) -> None:
        self.matched_rows += rows

    def unit_done(self) -> None:
        self.units += 1

    def close(self) -> None:
        self.closed += 1


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """Five live images, one of them listed, scanned with --keep-hashes in units of two rows; the server stays
    up for the rescans."""
    tmp = tmp_path_factory.mktemp("served")
    bodies = images(5, first_seed=700)
    with LoopbackServer({f"/{n}.jpg": body for n, body in enumerate(bodies)}) as server:
        shard = write_shard(tmp / "shard.parquet", {"url": [server.url(f"/{n}.jpg") for n in range(5)]})
        listed = write_list(tmp / "l.txt", [hashlib.md5(bodies[3]).hexdigest()])
        run_scan(
            shard,
            tmp / "first",
            [f"md5:{listed}"],
            audit={"keep_hashes": True},
            source={"rows_per_unit": 2},
            run={"progress": True, "workers": 1},
        )
        yield {"tmp": tmp, "server": server}


def test_rescan_reports_progress_row_by_row_and_unit_by_unit(served, tmp_path: Path) -> None:
    settings = {**LOOPBACK, "source.rows_per_unit": 2}
    recorded, silenced = Recorded(), Recorded()
    first = served["tmp"] / "first"
    result = rescan(first, str(tmp_path / "shown"), (), settings, make_progress=lambda run: recorded)
    assert len(recorded.rows) == 5 and recorded.units == 3 and recorded.closed == 1
    assert recorded.matched_rows == result.summary["matches"]["rows"] == 1
    off = {**settings, "run.progress": False}  # as in a scan's config: no bar even when one is offered
    rescan(first, str(tmp_path / "off"), (), off, make_progress=lambda run: silenced)
    assert silenced.rows == [] and silenced.closed == 0


def test_rescan_command_shows_a_bar_unless_quiet(served, tmp_path: Path, scanner_cli) -> None:
    common = ["rescan", str(served["tmp"] / "first"), "--workers", "1", "--allow-private-networks"]
    shown = scanner_cli(*common, "--out", str(tmp_path / "shown"), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    bar = shown.stderr.rstrip().rsplit("\r", 1)[-1]
    assert "5/5" in bar and "units 1/1" in bar and "matches 1" in bar, shown.stderr
    quiet = scanner_cli(*common, "--out", str(tmp_path / "quiet"), "--quiet", cwd=tmp_path)
    assert (
        quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == f"reports: {tmp_path / 'quiet'}\n"
    )  # --quiet: only where the reports are


def test_rescan_reaches_private_networks_only_when_asked_again(served, tmp_path: Path, scanner_cli) -> None:
    """The earlier scan allowed 127.0.0.1; a rescan without the flag does not inherit it, and says so."""
    common = ["rescan", str(served["tmp"] / "first"), "--workers", "1", "--quiet"]
    served["server"].reset_hits()
    refused = scanner_cli(*common, "--out", str(tmp_path / "refused"), cwd=tmp_path)
    assert refused.returncode == 0, refused.stderr
    warning = [line for line in refused.stderr.splitlines() if "private networks" in line]
    assert len(warning) == 1 and "--allow-private-networks" in warning[0], refused.stderr
    assert outcomes(tmp_path / "refused") == ["blocked"] * 5 and served["server"].total_hits == 0
    manifest = json.loads((tmp_path / "refused" / "manifest.json").read_text())
    assert manifest["allow_private_networks"] is False
    allowed = scanner_cli(
        *common, "--allow-private-networks", "--out", str(tmp_path / "allowed"), cwd=tmp_path
    )
    assert allowed.returncode == 0 and allowed.stderr == "", allowed.stderr
    assert outcomes(tmp_path / "allowed") == ["clean", "clean", "clean", "match", "clean"]
    assert served["server"].total_hits == 5


def test_rescan_to_a_filesystem_url_goes_through_the_mirror_and_resumes_from_it(served, memory_out) -> None:
    first, server = served["tmp"] / "first", served["server"]
    result = rescan(first, memory_out.url, (), LOOPBACK)
    reports = memory_out.published_reports(result.out)
    staging = result.out
    assert {"outcomes.parquet", "hashes.parquet", "changes.jsonl", "summary.json", "report.html"} <= set(
        reports
    )
    assert sorted(set(memory_out.files()) - set(reports)) == [".units/complete", ".units/fingerprint.json"]
    shutil.rmtree(staging)  # as on another machine: only the URL holds the finished rescan
    server.reset_hits()
    again = rescan(first, memory_out.url, (), LOOPBACK)
    assert server.total_hits == 0 and again.summary == result.summary


def test_a_rescan_keeps_the_scans_plug_ins_and_review_rules(tmp_path) -> None:
    from scanner.audits.rescan import rescan_config

    negative = tmp_path / "neg.csv"
    negative.write_text("hash_type,hash,id\nmd5," + "0" * 32 + ",N-1\n")
    saved = {
        "plugins": {"signal_types": ["signal_plugins:ToySignal"], "tx_extensions": []},
        "review": {"negative_lists": [str(negative)], "hold_floods": True, "flood_rows": 4},
    }
    config = rescan_config({"config": saved}, str(tmp_path / "out"), [], {})
    assert config.plugins.signal_types == ("signal_plugins:ToySignal",)
    assert config.review.negative_lists == (str(negative),)
    assert (config.review.hold_floods, config.review.flood_rows) == (True, 4)


def test_a_rescan_adds_negative_lists_and_floods_to_the_scans_own(tmp_path, scanner_cli) -> None:
    """A false positive reviewed after the scan stays out of the weekly rescan: --negative-list adds to the
    previous scan's negative lists, which the rescan keeps."""
    bodies = images(3)
    md5 = [hashlib.md5(body).hexdigest() for body in bodies]
    old_negative = write_list(tmp_path / "old-neg.csv", ["hash_type,hash,id", "md5," + "0" * 32 + ",N-0"])
    negative = write_list(tmp_path / "neg.csv", ["hash_type,hash,id", f"md5,{md5[1]},N-1"])
    with LoopbackServer({f"/{i}.jpg": body for i, body in enumerate(bodies)}) as server:
        shard = write_shard(tmp_path / "shard.parquet", {"url": [server.url(f"/{i}.jpg") for i in range(3)]})
        listed = write_list(tmp_path / "list.txt", md5[:2])
        review = {"negative_lists": [str(old_negative)]}
        audit = {"keep_hashes": True}
        run_scan(shard, tmp_path / "first", [f"list=md5:{listed}"], audit=audit, review=review)
        assert outcomes(tmp_path / "first") == ["match", "match", "clean"]
        args = ["rescan", str(tmp_path / "first"), "--allow-private-networks", "--workers", "1"]
        done = scanner_cli(*args, "--out", str(tmp_path / "second"), "--negative-list", str(negative))
    assert done.returncode == 0, done.stderr
    assert outcomes(tmp_path / "second") == ["match", "suppressed", "clean"]
    saved = json.loads((tmp_path / "second" / "manifest.json").read_text())["config"]["review"]
    assert saved["negative_lists"] == [str(old_negative), str(negative)]
    assert saved["hold_floods"] is False


def test_a_rescan_holds_floods_when_asked_even_if_the_scan_did_not(tmp_path) -> None:
    from scanner.audits.rescan import rescan_config

    saved = {"review": {"hold_floods": False, "negative_lists": ["a.csv"]}}
    overrides = {"review.hold_floods": True, "review.negative_lists": ["a.csv", "b.csv"]}
    config = rescan_config({"config": saved}, str(tmp_path / "out"), [], overrides)
    assert config.review.hold_floods is True
    assert config.review.negative_lists == ("a.csv", "b.csv")  # a list given again is not doubled
    # This week's review/neg.csv beside last week's neg.csv: both kept, the new one named apart; ./a.csv is
    # the file already kept.
    overrides = {"review.negative_lists": ["./a.csv", "review/a.csv", "mine=other/a.csv"]}
    config = rescan_config({"config": saved}, str(tmp_path / "out"), [], overrides)
    assert config.review.negative_lists == ("a.csv", "a-2=review/a.csv", "mine=other/a.csv")

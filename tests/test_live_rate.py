"""An honest live rate: live means the URL answered; rows never requested (blocked, screened, no usable URL,
unchecked) are counted apart; with --no-fetch it is not measured. One definition (scanner.outcomes.liveness)
behind summary.json, the CLI summary, the progress bar's last line and report.html, agreeing to the row."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from loopback import LoopbackServer

from scanner.cli.pictures import encode, make_image
from scanner.outcomes import Liveness, liveness
from scanner.reports.records import RowResult

LIVE_RATE_CASES = [
    (("clean", None, 1.0), Liveness.LIVE),
    (("invalid", "not_an_image", 1.0), Liveness.LIVE),  # it answered, with something that is no image
    (("match", None, 1.0), Liveness.LIVE),  # hashed and matched, or a redirect to a listed URL
    (("dead", "http_404", 1.0), Liveness.DEAD),
    (("dead", "timeout", 1.0), Liveness.DEAD),
    (("blocked", "blocked_private_address", 1.0), Liveness.NOT_REQUESTED),
    (("invalid", "empty_url", None), Liveness.NOT_REQUESTED),
    (("invalid", "invalid_url", 1.0), Liveness.NOT_REQUESTED),  # the fetcher stamps it, never connects
    (("match", None, None), Liveness.NOT_REQUESTED),  # a screened URL
    (("clean", None, None), Liveness.NOT_REQUESTED),  # --no-fetch, or a local image
    (("unchecked", None, None), Liveness.NOT_REQUESTED),
    (("invalid", "corrupt_member", None), Liveness.NOT_REQUESTED),
]


@pytest.mark.parametrize(("row", "expected"), LIVE_RATE_CASES)
def test_liveness_of_each_kind_of_row(row: tuple, expected: Liveness) -> None:
    assert liveness(*row) == expected


def _shard(tmp_path: Path, server: LoopbackServer) -> tuple[Path, Path]:
    rows = [
        server.url("/a.jpg"),  # live: an image
        server.url("/b.jpg"),  # live: an image
        server.url("/page.html"),  # live: it answered, with no image (invalid not_an_image)
        server.url("/status/404"),  # dead
        "",  # not requested: empty URL
        "http://10.1.2.3/x.jpg",  # not requested: blocked private address
        server.url("/listed.jpg"),  # not requested: screened
    ]
    shard = tmp_path / "urls.csv"
    lines = [f"{url},k{i}" for i, url in enumerate(rows)]  # a key, so the empty URL's row is a row
    shard.write_text("url,key\n" + "\n".join(lines) + "\n", encoding="utf-8")
    hashlist = tmp_path / "list.csv"
    hashlist.write_text(f"hash_type,hash\nurl,{server.url('/listed.jpg')}\n", encoding="utf-8")
    config = tmp_path / "scan.toml"
    config.write_text('[fetch]\nallowed_networks = ["127.0.0.0/8"]\nmax_retries = 0\n', encoding="utf-8")
    return shard, hashlist, config


def test_a_scan_reports_one_live_rate_everywhere(tmp_path: Path, scanner_cli) -> None:
    """3 live, 1 dead, 3 never requested: live rate 75.0% of 4 requested, in every place it is shown."""
    files = {"/a.jpg": encode(make_image(1), "JPEG"), "/b.jpg": encode(make_image(2), "JPEG")}
    with LoopbackServer({**files, "/page.html": b"<html>no image</html>"}) as server:
        shard, hashlist, config = _shard(tmp_path, server)
        out = tmp_path / "out"
        done = scanner_cli(
            "scan", str(shard), "--hashlist", str(hashlist), "--config", str(config), "--out", str(out)
        )
        assert server.hits("/listed.jpg") == 0
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["liveness"] == {"live": 3, "dead": 1, "not_requested": 3}
    assert summary["live_rate"] == 0.75
    assert summary["outcomes"]["match"] == 1 and summary["outcomes"]["blocked"] == 1
    assert "live rate: 75.0% (3 of 4 requested URLs answered); 3 rows not requested" in done.stdout
    last_bar = [line for line in re.split(r"[\r\n]", done.stderr) if "live " in line][-1]
    assert "live 75.0%" in last_bar, done.stderr
    page = (out / "report.html").read_text(encoding="utf-8")
    tiles = dict(
        (k, v) for v, k in re.findall(r'<div class="v">([^<]*)</div><div class="k">([^<]*)</div>', page)
    )
    assert tiles["Rows scanned"] == "7"
    assert (tiles["Live (URL answered)"], tiles["Dead"], tiles["Not requested"]) == ("3", "1", "3")
    assert (tiles["Live rate"], tiles["Link rot"]) == ("75.0%", "25.0%")


def test_no_fetch_says_the_live_rate_was_not_measured(tmp_path: Path, scanner_cli) -> None:
    with LoopbackServer({}) as server:
        shard, hashlist, config = _shard(tmp_path, server)
        out = tmp_path / "out"
        done = scanner_cli(
            "scan", str(shard), "--hashlist", str(hashlist), "--config", str(config), "--out", str(out),
            "--no-fetch",
        )  # fmt: skip
        assert server.total_hits == 0
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["live_rate"] is None
    assert summary["liveness"] == {"live": 0, "dead": 0, "not_requested": 7}
    assert "live rate: not measured, no URL was requested; 7 rows not requested" in done.stdout
    assert "live n/a" in [line for line in re.split(r"[\r\n]", done.stderr) if "live " in line][-1]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<div class="v">not measured</div><div class="k">Live rate</div>' in page
    assert "100.0%" not in page.split("</section>")[0]


def test_the_progress_bar_counts_only_requested_rows(capsys) -> None:
    from scanner.run.progress import BarProgress

    bar = BarProgress(total=4)
    for outcome, reason, fetched in (("changed", None, 1.0), ("match", None, None), ("dead", "timeout", 1.0)):
        bar.row_done(RowResult("s", 0, "u", None, outcome, reason=reason, fetched_at=fetched))
    bar.row_done(RowResult("s", 0, "u", None, "blocked", reason="blocked_scheme", fetched_at=1.0))
    bar.close()
    last = re.split(r"[\r\n]", capsys.readouterr().err.rstrip())[-1]
    assert "live 50.0%, dead 1 (timeout 1), matches 0" in last, last


def test_the_bar_fed_by_unit_workers_in_batches_shows_the_same_live_rate(capsys) -> None:
    """A unit worker counts its rows by (outcome, liveness) and sends the counts in batches: the
    coordinator's bar keeps the one definition of live, as if it had seen each row."""
    from scanner.run.progress import BarProgress
    from scanner.runners.procs import _BatchedProgress

    sent: list[tuple] = []
    worker = _BatchedProgress(sent.append)
    for (outcome, reason, fetched), _ in LIVE_RATE_CASES:
        worker.row_done(RowResult("s", 0, "u", None, outcome, reason=reason, fetched_at=fetched))
    worker.flush()
    bar = BarProgress(total=len(LIVE_RATE_CASES))
    for kind, by_unit, matches in sent:
        assert kind == "rows" and matches == 0
        for counts in by_unit.values():  # each unit's apart: the bar takes back a unit run again
            bar.rows_done(counts)
    bar.close()
    last = re.split(r"[\r\n]", capsys.readouterr().err.rstrip())[-1]
    assert f"{len(LIVE_RATE_CASES)}/{len(LIVE_RATE_CASES)}" in last and "live 60.0%" in last, last


def _bar_lines(stderr: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", stderr) if "live " in line]


def test_the_bar_shows_dead_and_invalid_by_top_reasons_and_units_done(tmp_path: Path, scanner_cli) -> None:
    """Three 404s, two 500s and one 403 (dead), two pages and one empty URL (invalid), in units of two rows:
    the last line counts each kind with its two most common reasons, and every unit done."""
    paths = ["/status/404"] * 3 + ["/status/500"] * 2 + ["/status/403", "/page.html", "/page.html"]
    with LoopbackServer({"/page.html": b"<html>no image</html>"}) as server:
        _, hashlist, config = _shard(tmp_path, server)
        shard = tmp_path / "reasons.csv"
        rows = [server.url(path) for path in paths] + [""]
        shard.write_text("url,key\n" + "".join(f"{u},k{i}\n" for i, u in enumerate(rows)), encoding="utf-8")
        done = scanner_cli(
            "scan", str(shard), "--hashlist", str(hashlist), "--config", str(config),
            "--out", str(tmp_path / "out"), "--rows-per-unit", "2",
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    last = _bar_lines(done.stderr)[-1]
    assert "units 5/5" in last, last
    assert "dead 6 (http_404 3, http_500 2)" in last and "http_403" not in last, last
    assert "invalid 3 (not_an_image 2, empty_url 1)" in last, last


def test_the_bar_measures_its_rate_from_the_first_row() -> None:
    """Lists loading and workers starting before any row is no part of the rate: 100 rows in the 0.6 s after
    the first batch, 2 s after the bar appeared, are about 170 rows/s, not the 95 of 200 rows in 2.6 s."""
    from scanner.run.progress import BarProgress

    bar = BarProgress(total=10_000, done=500, units=20, units_done=1)
    time.sleep(2.0)
    batch = {("clean", None, Liveness.LIVE): 100}
    bar.rows_done(batch)
    time.sleep(0.6)
    bar.rows_done(batch)
    shown = bar._bar.format_dict
    bar.close()
    assert shown["n"] == 700 and shown["elapsed"] < 1.5, shown
    assert 99 < shown["rate"] * shown["elapsed"] < 110, shown  # the second batch over its own time

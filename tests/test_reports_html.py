"""report.html: the figures people act on, self-contained, script-free, URLs on request; seen by Chromium."""

from __future__ import annotations

import json
import re
import shutil
import stat
import struct
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from browser import measure
from conftest import run_scanner
from report_builder import LISTS, MATCHES, SHARD_ROWS, build_report, expected_outcomes, url_of

from scanner.cli.main import main
from scanner.config import ScanConfig
from scanner.outcomes import OUTCOMES
from scanner.reports.files import sha256_file
from scanner.reports.html import (
    BATCH_ROWS,
    COLOURS,
    SAFETY_DEFAULTS,
    SIGNATURE_NOTE,
    TRACK,
    bar_chart,
    column_chart,
    outcome_figures,
    render_report,
    write_html_report,
)
from scanner.reports.records import OUTCOME_SCHEMA
from scanner.reports.verify import verify_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page(HTMLParser):
    """Every tag with its attributes, and the visible text as one string."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.texts: list[str] = []
        self.feed(html)
        self.text = " ".join(t.strip() for t in self.texts if t.strip())

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.texts.append(data)


def expected_figures() -> list[str]:
    """The main figures as the page prints them, derived from the scenario."""
    outcomes = expected_outcomes()
    rows = sum(outcomes.values())
    # summary.json's live_rate: of the requested rows (not blocked, unchecked or the one empty URL)
    live = sum(outcomes[o] for o in ("match", "clean", "invalid", "changed", "held", "suppressed")) - 1
    requested = live + outcomes["dead"]
    return [
        f"{rows:,}",
        f"{100 * live / requested:.1f}% Live rate",
        f"{100 * outcomes['dead'] / requested:.1f}% Link rot",
        *(f"{n:,} ({100 * n / rows:.1f}%)" for n in outcomes.values()),
        f"{len(MATCHES):,}",
    ]


def test_every_scan_writes_a_private_report_listed_in_the_manifest(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    report = built.out / "report.html"
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    manifest = json.loads((built.out / "manifest.json").read_text())
    assert manifest["files"]["report.html"] == sha256_file(report)
    assert verify_report(built.out).ok


def test_page_shows_the_main_figures(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    page = Page((built.out / "report.html").read_text(encoding="utf-8"))
    for figure in expected_figures():
        assert figure in page.text
    rows = sum(expected_outcomes().values())
    reasons = Counter(r for shard in SHARD_ROWS.values() for _, _, r in shard if r)
    for reason, n in reasons.items():
        assert f"{reason} {n:,} ({100 * n / rows:.1f}%)" in page.text
    by_list = Counter(m[2] for m in MATCHES)
    for name, n in by_list.items():
        assert f"{name} {n:,} ({100 * n / len(MATCHES):.1f}%)" in page.text
    for hashlist in ("ncmec", "iwf"):
        assert ("ab" * 32 if hashlist == "ncmec" else "cd" * 32) in page.text
    assert "Hamming distance of pdq matches" in page.text
    assert "distance 25: 1" in page.text
    assert "Changes since the previous scan" not in page.text  # a first scan has none


def test_every_outcome_has_its_colour_and_count(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    page = Page((built.out / "report.html").read_text(encoding="utf-8"))
    outcomes = expected_outcomes()
    rows = sum(outcomes.values())
    assert set(outcomes) == set(OUTCOMES)  # the scenario has rows of every outcome
    for outcome, n in outcomes.items():
        assert f"{outcome} {n:,} ({100 * n / rows:.1f}%)" in page.text
    fills = {attrs.get("fill") for tag, attrs in page.tags if tag == "rect"}
    assert {COLOURS[o] for o in OUTCOMES} <= fills
    assert len({COLOURS[o] for o in OUTCOMES}) == len(OUTCOMES)


def test_live_rate_is_the_summary_value(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    summary = json.loads((built.out / "summary.json").read_text())
    page = Page(render_report(built.out))
    assert f"{100 * summary['live_rate']:.1f}% Live rate" in page.text
    (built.out / "summary.json").write_text(json.dumps({**summary, "live_rate": 0.125}))
    assert "12.5% Live rate" in Page(render_report(built.out)).text


def test_a_rescan_shows_what_changed(tmp_path: Path) -> None:
    changes = {
        "previous": {"out": "/reports/<first>", "finished_at": "2025-01-01T00:00:00.000+00:00"},
        "newly_dead": 4,
        "newly_live": 1,
        "new_matches": 2,
        "matches_gone": 3,
        "content_changed": 5,
        "not_modified": 40,
        "liveness_only": 6,
    }
    built = build_report(tmp_path, changes=changes)
    html = (built.out / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    rows = sum(expected_outcomes().values())
    assert "Changes since the previous scan" in page.text
    assert "Previous scan finished 2025-01-01T00:00:00.000+00:00 ( /reports/<first> )" in page.text
    assert "<first>" not in html  # escaped
    labels = {"newly_dead": "newly dead", "newly_live": "newly live", "new_matches": "new matches"}
    labels.update(matches_gone="matches gone", content_changed="content changed")
    for name, label in labels.items():
        assert f"{label} {changes[name]:,} ({100 * changes[name] / rows:.1f}%)" in page.text
    assert "40 rows answered 304 Not Modified" in page.text
    assert "6 rows known to match were checked for liveness only" in page.text
    assert verify_report(built.out).ok


def test_page_has_no_script_and_no_external_reference(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    html = render_report(built.out, show_urls=True)
    page = Page(html)
    assert "script" not in {tag for tag, _ in page.tags}
    for tag, attrs in page.tags:
        assert not {"src", "href", "xlink:href", "action", "srcset"} & set(attrs), tag
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    assert "url(" not in html and "@import" not in html
    csp = next(a["content"] for t, a in page.tags if a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp


def test_urls_appear_only_with_show_urls(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    matched = {url_of(m[0], m[1]) for m in MATCHES}
    hidden = (built.out / "report.html").read_text(encoding="utf-8")
    assert "://" not in hidden
    assert not any(url in Page(hidden).text for url in matched)
    shown = Page(render_report(built.out, show_urls=True))
    for url in matched:
        assert url in shown.text  # as escaped text: the hostile ones did not become tags
    assert "svg" not in {t for t, a in shown.tags if "onload" in a}
    unmatched = url_of("part-00000.parquet", 0)
    assert unmatched not in shown.text


def test_report_command_regenerates_and_keeps_the_manifest_true(tmp_path: Path, capsys) -> None:
    built = build_report(tmp_path)
    assert main(["report", str(built.out), "--show-urls"]) == 0
    assert "http://a.example/" in Page((built.out / "report.html").read_text(encoding="utf-8")).text
    assert verify_report(built.out).ok
    assert "report.html" in capsys.readouterr().out


def test_rescans_draw_link_rot_over_time(tmp_path: Path) -> None:
    history = [
        {"finished_at": "2025-01-01T00:00:00.000+00:00", "rows": 100, "outcomes": {"dead": 10}},
        {"finished_at": "2025-06-01T00:00:00.000+00:00", "rows": 100, "outcomes": {"dead": 20}},
    ]
    built = build_report(tmp_path, history)
    page = Page((built.out / "report.html").read_text(encoding="utf-8"))
    assert "Link rot across scans of these inputs" in page.text
    assert "10.0%" in page.text and "20.0%" in page.text
    assert "polyline" in {t for t, _ in page.tags}
    assert verify_report(built.out).ok


def test_outcome_figures_span_many_batches(tmp_path: Path) -> None:
    kinds = [("clean", 200, None), ("dead", 404, "http_404"), ("dead", None, "timeout"), ("match", 200, None)]
    rows = 2 * BATCH_ROWS + 7
    picked = [kinds[i * 7 % 4] for i in range(rows)]
    shards = [f"s{i % 3}" for i in range(rows)]
    columns = {name: pa.nulls(rows, OUTCOME_SCHEMA.field(name).type) for name in OUTCOME_SCHEMA.names}
    columns.update(
        shard=shards, row=range(rows), outcome=[k[0] for k in picked], http_status=[k[1] for k in picked]
    )
    columns["reason"] = [k[2] for k in picked]
    table = pa.table(
        {n: pa.array(v, OUTCOME_SCHEMA.field(n).type) for n, v in columns.items()}, schema=OUTCOME_SCHEMA
    )
    pq.write_table(table, tmp_path / "outcomes.parquet", row_group_size=BATCH_ROWS // 2)
    figures = outcome_figures(tmp_path / "outcomes.parquet")
    assert figures.rows == rows
    assert figures.outcomes == Counter(k[0] for k in picked)
    assert figures.reasons == Counter(k[2] for k in picked if k[2])
    assert figures.status_classes == Counter(f"{k[1] // 100}xx" if k[1] else "none" for k in picked)
    assert figures.by_shard["s1"] == Counter(k[0] for k, s in zip(picked, shards, strict=True) if s == "s1")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_chromium_renders_the_figures(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    report = write_html_report(built.out)
    dom = _chromium(tmp_path, "--dump-dom", report.as_uri())
    for figure in expected_figures():
        assert figure in Page(dom).text
    assert dom.count("<svg") >= 8


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_chromium_shows_the_demo_report_at_desktop_and_phone_widths(tmp_path: Path) -> None:
    """The demo's own report, as a browser draws it: the figures of its summary.json in the page's text, and
    a screenshot at each width in the test's tmp dir (printed, for a person to look at; never committed)."""
    out = tmp_path / "demo"
    result = run_scanner("demo", "--out", str(out), "--quiet", "--images", "12", timeout=180)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    page = Page(_chromium(tmp_path, "--dump-dom", (out / "report.html").as_uri())).text
    liveness = summary["liveness"]
    for figure, label in [
        (summary["rows"], "Rows scanned"),
        (liveness["live"], "Live (URL answered)"),
        (liveness["dead"], "Dead"),
        (liveness["not_requested"], "Not requested"),
        (summary["matches"]["total"], "Match records"),
        (summary["matches"]["rows"], "Matched rows"),
    ]:
        assert f"{figure:,} {label}" in page, label
    assert f"{100 * summary['live_rate']:.1f}% Live rate" in page
    assert "Scan report: demo-shard-00000.parquet" in page
    assert "fetch.allow_private_networks = true" in page  # the demo serves on 127.0.0.1
    for width in (1280, 390):
        shot = tmp_path / f"demo-report-{width}.png"
        _chromium(
            tmp_path,
            f"--window-size={width},3000",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            (out / "report.html").as_uri(),
        )
        head = shot.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", head[16:24]) == (width, 3000)
        print(f"screenshot: {shot}")


# What a reader meets at a width: the page's own width, any element sticking out of the page (not inside a
# figure or table that scrolls sideways), the smallest chart text as drawn (a chart scaled down to fit shrinks
# its text) and each bar's drawn length as a share of its track, beside the share printed next to it.
LAYOUT = """(() => {
  const scrolls = (e) => {
    for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) {
      if (["auto", "scroll"].includes(getComputedStyle(p).overflowX)) return true;
    }
    return false;
  };
  const out = [...document.body.querySelectorAll("*")].filter(
    (e) => e.getBoundingClientRect().right > innerWidth + 0.5 && !scrolls(e));
  const text = [...document.querySelectorAll("svg text")].map((t) => parseFloat(getComputedStyle(t).fontSize)
    * t.ownerSVGElement.getBoundingClientRect().width / t.ownerSVGElement.viewBox.baseVal.width);
  const bars = [...document.querySelectorAll('svg rect[fill="TRACK"]')].map((track) => [
    100 * track.nextElementSibling.getBoundingClientRect().width / track.getBoundingClientRect().width,
    track.nextElementSibling.nextElementSibling.textContent]);
  return {page: document.documentElement.scrollWidth, width: innerWidth, bars, smallest: Math.min(...text),
          out: out.map((e) => e.tagName.toLowerCase())};
})()""".replace("TRACK", TRACK)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
@pytest.mark.parametrize("width", [1280, 390])
def test_charts_are_readable_and_nothing_overflows_at_desktop_and_phone_widths(
    tmp_path: Path, width: int
) -> None:
    """Before: at 390 px every chart was scaled down to fit, its text drawn 6.5 px high."""
    built = build_report(tmp_path)
    shot = tmp_path / f"report-{width}.png"
    flags = [CHROMIUM, *chromium_flags(tmp_path)]
    seen = measure(flags, (built.out / "report.html").as_uri(), width, 800, LAYOUT, shot)
    print(f"screenshot: {shot}")
    assert seen["width"] == width
    assert seen["page"] <= width and seen["out"] == []
    assert seen["smallest"] >= 10
    assert len(seen["bars"]) > 20
    for drawn, printed in seen["bars"]:
        share = float(re.search(r"(\d+\.\d)%", printed)[1])
        assert drawn == pytest.approx(share, abs=0.2) or (share < 0.5 and drawn < 0.5), (drawn, printed)


def _chromium(tmp_path: Path, *args: str) -> str:
    return subprocess.run(
        [CHROMIUM, *chromium_flags(tmp_path), *args], capture_output=True, text=True, timeout=120, check=True
    ).stdout


def chromium_flags(tmp_path: Path) -> list[str]:
    """Headless, offline, and with a profile of its own."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]


class Bars(HTMLParser):
    """Per bar chart row: its label, the track's width and the bar's width and colour."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.label: str | None = None
        self.in_text = self.in_title = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        self.in_text = self.in_text or tag == "text"
        self.in_title = self.in_title or tag == "title"
        if tag == "rect" and self.label is not None and attrs.get("fill") == TRACK:
            self.rows.append({"label": self.label, "track": float(attrs["width"])})
        elif tag == "rect" and self.rows and "bar" not in self.rows[-1] and self.label is not None:
            self.rows[-1].update(bar=float(attrs["width"]), fill=attrs.get("fill"))
            self.label = None

    def handle_endtag(self, tag: str) -> None:
        self.in_text = self.in_text and tag != "text"
        self.in_title = self.in_title and tag != "title"

    def handle_data(self, data: str) -> None:
        if self.in_text and not self.in_title and data.strip():
            self.label = data.strip()


def test_bars_are_as_long_as_their_share_not_as_the_largest_item() -> None:
    """Before: seven reasons at 1.5% each were drawn full width, and a 7.7% change looked like 100%."""
    rows = Bars(bar_chart([(f"reason{i}", 15) for i in range(7)], 1000)).rows
    assert len(rows) == 7
    for row in rows:
        assert row["bar"] == pytest.approx(0.015 * row["track"], abs=0.1)
    (row,) = Bars(bar_chart([("content changed", 1)], 13)).rows
    assert row["bar"] == pytest.approx(row["track"] / 13, abs=0.1)


def test_every_bar_of_the_page_is_its_printed_share(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    html = (built.out / "report.html").read_text(encoding="utf-8")
    rows = Bars(html).rows
    assert len(rows) > 20
    shares = [float(m) for m in re.findall(r"\(?(\d+\.\d)%\)?</text>", html)]
    widths = [100 * row["bar"] / row["track"] for row in rows]
    drawn = [w for w in widths if w > 1]  # a 0-count bar is not drawn, a tiny one is 1 px
    assert all(any(abs(w - s) < 0.2 for s in shares) for w in drawn), (drawn, shares)
    assert max(widths) < 100 - 1  # nothing in the scenario is all the rows, so no bar is full


def test_failure_reasons_are_grouped_under_their_outcome_in_its_colour(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    html = (built.out / "report.html").read_text(encoding="utf-8")
    text = Page(html).text
    outcomes = expected_outcomes()
    fills = {row["label"]: row["fill"] for row in Bars(html).rows}
    reasons_of: dict[str, set[str]] = {}
    for shard in SHARD_ROWS.values():
        for outcome, _, reason in shard:
            if reason:
                reasons_of.setdefault(outcome, set()).add(reason)
    headings = [
        f"{o}: {outcomes[o]:,} row{'s' * (outcomes[o] != 1)}, by reason"
        for o in ("dead", "invalid", "blocked")
    ]
    places = [text.index(h) for h in headings]
    assert places == sorted(places)
    for outcome, heading, start in zip(("dead", "invalid", "blocked"), headings, places, strict=True):
        following = [text.find(h, start + 1) for h in headings if text.find(h, start + 1) > start]
        end = min(following, default=len(text))
        for reason in reasons_of[outcome]:
            assert start < text.index(f"{reason} ") < end, (heading, reason)
            assert fills[reason] == COLOURS[outcome], reason


def test_distance_histograms_have_titled_ticked_axes_and_the_threshold_line(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    html = (built.out / "report.html").read_text(encoding="utf-8")
    text = Page(html).text
    assert "Hamming distance of pdq matches (threshold 31)" in text
    assert text.count("Hamming distance (bits that differ)") == 2  # pdq and dhash
    assert text.count("match records") >= 2
    chart = column_chart({3: 4, 12: 1, 40: 2}, 64, 256, threshold=31)
    svg = Page(chart)
    lines = [a for t, a in svg.tags if t == "line" and a.get("class") == "threshold"]
    assert len(lines) == 1
    columns = {
        int(m[1]): float(m[0]) for m in re.findall(r'<rect x="([\d.]+)"[^>]*><title>distance (\d+):', chart)
    }
    assert columns[31] < float(lines[0]["x1"]) <= columns[32]  # between the last match and the first miss
    assert "threshold 31" in svg.text
    for tick in ("0", "2", "4"):  # the y axis: 0, half and the top count
        assert f">{tick}</text>" in chart
    assert all(f">{x}</text>" in chart for x in (0, 8, 16, 32, 64))  # the x axis, every 8 of 65 columns
    manifest = json.loads((built.out / "manifest.json").read_text())
    manifest["config"]["match"]["pdq_threshold"] = 20
    assert (
        "Hamming distance of pdq matches (threshold 20)"
        in Page(render_report(built.out, manifest=manifest)).text
    )


def test_trend_points_say_the_date_and_time_of_each_scan(tmp_path: Path) -> None:
    """Before: two scans on one day were both labelled with the date alone."""
    history = [
        {"finished_at": "2025-06-01T09:05:00.000+00:00", "rows": 100, "outcomes": {"dead": 10}},
        {"finished_at": "2025-06-01T17:30:12.500+02:00", "rows": 100, "outcomes": {"dead": 20}},
    ]
    built = build_report(tmp_path, history)
    text = Page((built.out / "report.html").read_text(encoding="utf-8")).text
    assert "2025-06-01 09:05:00 UTC" in text
    assert "2025-06-01 17:30:12 +02:00" in text


def test_the_title_names_the_dataset_and_the_run_kind(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    manifest = json.loads((built.out / "manifest.json").read_text())

    def title(manifest: dict) -> str:
        html = render_report(built.out, manifest=manifest)
        tab = re.findall(r"<title>(.*?)</title>", html)[0]  # the head's; SVG <title>s follow
        (heading,) = re.findall(r"<h1>(.*?)</h1>", html)
        assert tab == heading
        return tab

    assert title(manifest) == "Scan report: data/ (2 inputs)"
    one = {**manifest, "inputs": manifest["inputs"][:1]}
    assert title(one) == "Scan report: part-00000.parquet"
    assert title({**one, "rematched": ["/r/hashes.parquet"]}) == "Rematch report: part-00000.parquet"
    assert title({**one, "previous": {"out": "/r"}}) == "Rescan report: part-00000.parquet"
    changes = dict.fromkeys(("newly_dead", "newly_live", "new_matches", "matches_gone"), 0)
    changes.update(content_changed=0, not_modified=0, liveness_only=0)
    previous = {"out": "/r", "finished_at": "2025-01-01T00:00:00.000+00:00"}
    rescanned = build_report(tmp_path / "again", changes={"previous": previous, **changes})
    assert "<title>Rescan report: data/ (2 inputs)</title>" in (rescanned.out / "report.html").read_text()


def test_loosened_safety_settings_are_a_warning_at_the_top(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    manifest = json.loads((built.out / "manifest.json").read_text())
    assert "Safety settings" not in Page(render_report(built.out, manifest=manifest)).text
    manifest["config"]["fetch"] = {
        "allow_private_networks": True,
        "allowed_networks": ["10.0.0.0/8"],
        "verify_tls": False,
        "max_bytes": 1 << 30,
        "max_redirects": 3,  # tighter than the default: not a warning
    }
    manifest["config"]["hashing"] = {"max_pixels": 10**10}
    text = Page(render_report(built.out, manifest=manifest)).text
    top = text.index("Safety settings changed from their defaults")
    assert top < text.index("Rows scanned")  # above the figures, not only in the raw config
    for shown in (
        "fetch.allow_private_networks = true",
        'fetch.allowed_networks = ["10.0.0.0/8"]',
        "fetch.verify_tls = false",
        "fetch.max_bytes = 1073741824",
        "hashing.max_pixels = 10000000000",
    ):
        assert top < text.index(shown) < text.index("Rows scanned"), shown
    assert "fetch.max_redirects" not in text
    rescan = {k: v for k, v in manifest.items() if k != "config"} | {"allow_private_networks": True}
    assert "allow_private_networks = true" in Page(render_report(built.out, manifest=rescan)).text


def test_safety_defaults_are_the_configs() -> None:
    defaults = ScanConfig().to_dict()
    for (section, name), (default, _) in SAFETY_DEFAULTS.items():
        value = defaults[section][name]
        assert (list(value) if isinstance(value, tuple) else value) == default, name


def test_hash_list_counts_are_a_table_and_the_signature_is_explained(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    html = (built.out / "report.html").read_text(encoding="utf-8")
    table = re.search(r"Entries per list and hash type</figcaption>(.*?)</table>", html, re.S)
    assert table is not None
    cells = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", table[1])]
    assert cells[0] == ["list", "md5", "pdq", "dhash", "total"]
    expected = [
        [hl["name"], *(str(hl["counts"].get(k, "")) for k in ("md5", "pdq", "dhash"))] for hl in LISTS
    ]
    assert [row[:4] for row in cells[1:]] == expected
    assert [row[4] for row in cells[1:]] == [str(sum(hl["counts"].values())) for hl in LISTS]
    assert '{"md5": 2' not in html
    assert SIGNATURE_NOTE in Page(html).text

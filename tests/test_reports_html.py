"""report.html: the figures people act on, self-contained, script-free, URLs on request; seen by Chromium."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from report_builder import MATCHES, SHARD_ROWS, build_report, expected_outcomes, url_of

from scanner.cli.main import main
from scanner.outcomes import OUTCOMES
from scanner.reports.files import sha256_file
from scanner.reports.html import BATCH_ROWS, COLOURS, outcome_figures, render_report, write_html_report
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
    live = sum(outcomes[o] for o in ("match", "clean", "invalid", "changed")) - 1
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
    dom = subprocess.run(
        [CHROMIUM, *chromium_flags(tmp_path), "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    text = Page(dom).text
    for figure in expected_figures():
        assert figure in text
    assert dom.count("<svg") >= 8


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

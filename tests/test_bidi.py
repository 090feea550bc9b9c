"""Planted values cannot read as something else: bidi controls, zero-width and other format characters, C0/C1
controls, separators and invisible fillers show as visible <U+XXXX> tokens in report.html and the CSV export,
the JSONL export keeps the exact value (as \\u escapes), and CSV cells cannot run as spreadsheet formulas."""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_scanner
from hypothesis import given
from hypothesis import strategies as st
from images import encode, make_image
from loopback import LoopbackServer

from scanner.hashing import hash_image
from scanner.reports import safetext

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
# Each family of characters that can make a value read differently from what it is, as the tests define it
# (independently of scanner.reports.safetext).
FAMILIES = {
    "bidi": BIDI,
    "zero_width": "\u200b\u200c\u200d\u2060\ufeff",
    "other_format": "\u00ad\u180e\u2061\U000e0041\U000e007f",
    "c0": "\x01\x08\x1b\x7f\t\r\n",
    "c1": "\x80\x85\x9b\x9f",
    "separators": "\u2028\u2029\u00a0\u3000",
    "fillers": "\u115f\u3164\uffa0\u2800\u034f\ufe0f\U000e0100",
}
PLANTED = "".join(FAMILIES.values())
FORMULAS = ('=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\uff1d1+1")
NORMAL = "日本語 Ελληνικά مرحبا 😀 café"  # legible text of any script stays as it is


def forbidden(char: str) -> bool:
    """What may never appear raw in a report a person reads (line feeds aside, checked by the caller)."""
    return (
        unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs")
        or char in BIDI
        or char in FAMILIES["separators"] + FAMILIES["fillers"]
    )


def shown(text: str) -> str:
    """The text as the tests expect a reader to see it: each planted character as its token."""
    return "".join(f"<U+{ord(c):04X}>" if c in PLANTED else c for c in text)


def assert_nothing_hidden(text: str, where: str, allowed: str = "\n") -> None:
    raw = sorted({f"U+{ord(c):04X}" for c in text if forbidden(c) and c not in allowed})
    assert not raw, f"{where} holds raw {raw}"


IMAGE = encode(make_image(31), "JPEG")


@pytest.fixture(scope="module")
def planted_scan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    """A real scan over loopback of rows whose URLs, keys and list entries hold each family; every row
    matches (the same image, on an MD5 list), so every value reaches the reports and the exports."""
    tmp = tmp_path_factory.mktemp("bidi")
    with LoopbackServer({"/img.jpg": IMAGE}) as server:
        urls = [
            server.url(f"/img.jpg?row={i}&name={chars}gpj.exe") for i, chars in enumerate(FAMILIES.values())
        ]
        keys = [f"key-{name}-{chars}-end" for name, chars in FAMILIES.items()]
        urls += [server.url(f"/img.jpg?formula={i}") for i in range(len(FORMULAS))]
        keys += list(FORMULAS)
        urls.append(server.url("/img.jpg?normal=" + NORMAL))
        keys.append(NORMAL)
        pq.write_table(pa.table({"SAMPLE_ID": keys, "URL": urls}), tmp / "planted.parquet")
        md5 = hash_image(IMAGE, frozenset({"md5"})).md5.hex()
        entry, category = "E\u202e1\u200b", "cat\u2067egory\u2069"
        (tmp / "list.csv").write_text(f"hash_type,hash,id,category\nmd5,{md5},{entry},{category}\n")
        done = run_scanner(
            "scan",
            str(tmp / "planted.parquet"),
            "--hashlist",
            f"tlist={tmp / 'list.csv'}",
            "--out",
            str(tmp / "out"),
            "--allow-private-networks",
            "--quiet",
            "--workers",
            "1",
            cwd=tmp,
        )
    assert done.returncode == 0, done.stderr
    return tmp / "out", urls, keys


def test_report_html_shows_every_hidden_character_as_a_marked_token(planted_scan) -> None:
    out, _urls, keys = planted_scan
    page = (out / "report.html").read_text(encoding="utf-8")  # as the scan wrote it: keys shown, URLs not
    assert_nothing_hidden(page, "report.html")
    for char in PLANTED:
        assert f'<span class="hc">&lt;U+{ord(char):04X}&gt;</span>' in page, f"U+{ord(char):04X}"
    assert NORMAL in page  # other scripts are left alone
    for key in keys[: len(FAMILIES)]:
        visible = shown(key).replace("<", "&lt;").replace(">", "&gt;")
        assert visible in page.replace('<span class="hc">', "").replace("</span>", "")


def test_report_html_with_urls_and_charts_shows_them_too(planted_scan) -> None:
    out, urls, _keys = planted_scan
    assert run_scanner("report", str(out), "--show-urls").returncode == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert_nothing_hidden(page, "report.html --show-urls")
    flat = page.replace('<span class="hc">', "").replace("</span>", "")
    for url in urls[: len(FAMILIES)]:
        assert shown(url).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in flat
    # the category is a bar label in an SVG chart: marked with <tspan>, as a <span> would end the <svg>
    assert '<tspan class="hc">&lt;U+2067&gt;</tspan>' in page


def test_csv_export_shows_tokens_and_runs_no_formula(planted_scan) -> None:
    out, urls, keys = planted_scan
    done = run_scanner("export", str(out), "--format", "csv")
    assert done.returncode == 0, done.stderr
    text = (out / "referrals.csv").read_bytes().decode("utf-8")
    assert_nothing_hidden(text.replace("\r\n", ""), "referrals.csv", allowed="")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == len(urls)
    by_row = {int(row["row"]): row for row in rows}
    for i, (url, key) in enumerate(zip(urls, keys, strict=True)):
        assert by_row[i]["url"] == shown(url)
        want = shown(key)
        assert by_row[i]["key"] == ("'" + want if key in FORMULAS else want)
    assert {row["entry_id"] for row in rows} == {"E<U+202E>1<U+200B>"}
    assert {row["category"] for row in rows} == {"cat<U+2067>egory<U+2069>"}


def test_jsonl_export_keeps_the_exact_values_with_nothing_raw(planted_scan) -> None:
    out, urls, keys = planted_scan
    done = run_scanner("export", str(out), "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    data = (out / "referrals.jsonl").read_bytes().decode("utf-8")
    assert_nothing_hidden(data, "referrals.jsonl")
    records = {r["row"]: r for r in (json.loads(line) for line in data.split("\n") if line)}
    assert [records[i]["url"] for i in range(len(urls))] == urls  # the evidence, exactly
    assert [records[i]["key"] for i in range(len(keys))] == keys
    assert {r["entry_id"] for r in records.values()} == {"E\u202e1\u200b"}
    assert "\\u202e" in data and NORMAL in data  # escaped, while other scripts stay readable


def test_the_scan_reports_escape_every_hidden_character_the_exports_do(planted_scan) -> None:
    """One rule for hidden characters: the scan's own JSON reports (matches, evidence, summary, manifest)
    escape every family the exports escape (zero-width, tag characters, fillers, non-ASCII spaces, bidi,
    C0/C1), not only line separators and bidi controls, and their values read back exact."""
    out, urls, keys = planted_scan
    for name in ("matches.jsonl", "evidence.jsonl", "summary.json", "manifest.json"):
        text = (out / name).read_bytes().decode("utf-8")
        assert_nothing_hidden(text, name)
        assert not any(safetext.is_hidden(c) for c in text.replace("\n", "")), name
    lines = (out / "matches.jsonl").read_bytes().decode("utf-8").split("\n")
    matches = {m["row"]: m for m in map(json.loads, filter(None, lines))}
    exact = list(zip(urls, keys, strict=True))
    assert [(matches[i]["url"], matches[i]["key"]) for i in range(len(urls))] == exact
    assert {(m["entry_id"], m["category"]) for m in matches.values()} == {
        ("E\u202e1\u200b", "cat\u2067egory\u2069")
    }
    assert "\\u200b" in lines[0] and NORMAL in "".join(lines)  # escaped, while other scripts stay readable


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_character_of_each_family_is_revealed(family: str) -> None:
    for char in FAMILIES[family]:
        assert safetext.reveal(f"a{char}b") == f"a<U+{ord(char):04X}>b"
        assert safetext.csv_cell(f"{char}=1") == f"<U+{ord(char):04X}>=1"
    assert safetext.reveal(NORMAL) == NORMAL


def test_csv_cells_that_start_like_a_formula_are_quoted() -> None:
    for formula in FORMULAS:
        assert safetext.csv_cell(formula) == "'" + formula
    assert safetext.csv_cell("http://x/=1") == "http://x/=1" and safetext.csv_cell(7) == 7


@given(st.text())
def test_json_escaping_is_exact_and_leaves_nothing_hidden(text: str) -> None:
    line = safetext.escape_json(json.dumps({"v": text}, ensure_ascii=False))
    assert json.loads(line) == {"v": text}
    assert_nothing_hidden(line, "json", allowed="")
    assert not any(safetext.is_hidden(c) for c in safetext.reveal(text))

"""Any Unicode in any string of a matched row reads back unchanged from every report: scan, resume and
merge, rematch, rescan, export and verify (issue 14 item 3). str.splitlines() splits on more than "\\n"
(U+2028, U+2029, U+0085, \\x0b \\x0c \\x1c-\\x1e, \\r): before the fix one of them in a URL, key, shard or
member name, list entry or Content-Type made matches.jsonl unreadable at the end of every run of the scan,
and evidence.jsonl unreadable to every later rematch and rescan. Real shards, tars, lists and servers."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from audit_support import images, write_shard
from conftest import REPO, run_scanner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import LoopbackServer

from scanner.audits.rematch import rematch
from scanner.audits.rescan import rescan
from scanner.config import build_config
from scanner.pipeline import Progress
from scanner.reports.export import write_referrals
from scanner.reports.verify import verify_report
from scanner.reports.writer import refresh_digests
from scanner.runners.local import scan

# Every character str.splitlines() ends a line at, but "\n" (which JSON always escapes).
SEPARATORS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"]
NOT_IN_NAMES = "/\x00"  # what no file or tar member name can hold ("." ends a webdataset key)


@dataclass(frozen=True)
class Case:
    """One matched row's strings, built around `text` (the Unicode under test). Sources and lists trim
    surrounding whitespace (documented), so the text sits between ASCII letters, where it must survive."""

    index: int
    text: str

    @property
    def key(self) -> str:
        return f"k{self.text}k"

    @property
    def entry_id(self) -> str:
        return f"e{self._listable}e{self.index}"

    @property
    def category(self) -> str:
        return f"c{self._listable}c"

    @property
    def content_type(self) -> str:
        return "image/jpeg; x=a" + _drop(self.text, "\r\n\x00") + "b"

    @property
    def shard_name(self) -> str:
        return f"s{self.index}{_drop(self.text, NOT_IN_NAMES)[:40]}s.parquet"

    @property
    def member(self) -> str:
        return f"m{self.index}{_drop(self.text, NOT_IN_NAMES + '.')[:40]}m.jpg"

    def url(self, base: str) -> str:
        return f"{base}/p{self.text}p.jpg?q=q{self.text}q"

    @property
    def _listable(self) -> str:
        return _drop(self.text, "\r\n")  # a list is split on "\n" and refuses a stray "\r"


def _drop(text: str, characters: str) -> str:
    return "".join(c for c in text if c not in characters)


class EveryPath(dict):
    """A loopback file table that serves one body on every path: the path holds the text under test."""

    def __init__(self, entry: tuple[bytes, str]) -> None:
        super().__init__()
        self.entry = entry

    def __contains__(self, path: object) -> bool:
        return True

    def __getitem__(self, path: str) -> tuple[bytes, str]:
        return self.entry


def on_the_wire(text: str) -> str:
    """A header value as its UTF-8 bytes (http.server sends header strings as Latin-1)."""
    return text.encode("utf-8").decode("latin-1")


class StopAfter(Progress):
    """Interrupts a scan once `units` units are committed (as a Ctrl-C or a crash would)."""

    def __init__(self, units: int) -> None:
        self.left = units

    def unit_done(self) -> None:
        self.left -= 1
        if self.left == 0:
            raise Interrupted


class Interrupted(Exception):
    pass


@dataclass
class Built:
    cases: list[Case]
    urls: list[str]
    tar_url: str
    tmp: Path
    shards: Path
    listspec: str


@contextmanager
def built(tmp: Path, texts: list[str]) -> Iterator[Built]:
    """One Parquet shard per text (one fetched row each, its own server so its own Content-Type), one tar
    whose members carry the texts, one list with an entry per row; the servers run until the block ends."""
    cases = [Case(i, text) for i, text in enumerate(texts)]
    bodies = images(len(cases) + 1, first_seed=700)
    shards = tmp / "shards"
    shards.mkdir()
    with ExitStack() as stack:
        urls = []
        for case, body in zip(cases, bodies, strict=False):
            server = LoopbackServer()
            server.files = EveryPath((body, on_the_wire(case.content_type)))
            urls.append(case.url(stack.enter_context(server).base_url))
            write_shard(shards / case.shard_name, {"url": [urls[-1]], "key": [case.key]})
        tar_url = urls[0] + "#tar"
        write_tar(shards / "corpus.tar", cases, bodies[-1], tar_url)
        rows = [
            ["md5", hashlib.md5(b).hexdigest(), c.entry_id, c.category]
            for c, b in zip(cases, bodies, strict=False)
        ]
        rows.append(["md5", hashlib.md5(bodies[-1]).hexdigest(), "tar-entry", "tar"])
        listfile = tmp / "list.csv"
        with listfile.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(
                [["hash_type", "hash", "id", "category"], *rows]
            )
        yield Built(cases, urls, tar_url, tmp, shards, f"l={listfile}")


def write_tar(path: Path, cases: list[Case], body: bytes, url: str) -> None:
    """A webdataset tar: per case, one image member named with its text and a sidecar naming its key."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for case in cases:
            stem = case.member.removesuffix(".jpg")
            sidecar = json.dumps({"url": url, "key": case.key}).encode()
            for name, data in ((case.member, body), (f"{stem}.json", sidecar)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def scan_config(inputs: Path, out: Path, listspec: str) -> object:
    data = {
        "inputs": [str(inputs)],
        "out": str(out),
        "hashlist": [listspec],
        "fetch": {"allow_private_networks": True},
        "run": {"progress": False, "workers": 1},
        "source": {"rows_per_unit": 1},
        "audit": {"keep_hashes": True},
    }
    return build_config(data, "test")


def scan_interrupted_then_resumed(b: Built, out: Path) -> None:
    """A scan interrupted after some committed units, then the same scan again: it resumes and merges."""
    config = scan_config(b.shards, out, b.listspec)
    with pytest.raises(Interrupted):
        scan(config, restart=True, make_progress=lambda prepared: StopAfter(max(1, len(b.cases) // 2)))
    assert list((out / ".units").glob("u*.matches.jsonl")), "no unit was committed before the interruption"
    scan(config)


def read_jsonl(path: Path) -> list[dict]:
    """A JSON Lines file as any reader splits it: str.splitlines() must give the same lines as "\\n"."""
    text = path.read_text(encoding="utf-8")
    lines = [line for line in text.split("\n") if line]
    assert text.splitlines() == lines, f"{path.name} has a line break other than \\n in it"
    return [json.loads(line) for line in lines]


def expected_matches(b: Built) -> dict[tuple[str, str], dict]:
    """By (shard file name, entry id): what each match row must hold."""
    expected = {}
    for case, url in zip(b.cases, b.urls, strict=True):
        expected[(case.shard_name, case.entry_id)] = {
            "url": url,
            "key": case.key,
            "category": case.category,
            "content_type": case.content_type,
        }
        expected[("corpus.tar", "tar-entry", case.member)] = {
            "url": b.tar_url,
            "key": case.key,
            "category": "tar",
        }
    return expected


def check_reports(b: Built, out: Path, *, fetched: bool = True) -> None:
    """matches.jsonl, evidence.jsonl, outcomes.parquet and both exports hold every string as it went in;
    verify finds the reports whole."""
    expected = expected_matches(b)
    evidence = {(Path(r["shard"]).name, r["row"]): r for r in read_jsonl(out / "evidence.jsonl")}
    found = {}
    for match in read_jsonl(out / "matches.jsonl"):
        name = Path(match["shard"]).name
        assert match["shard"] == str(b.shards / name)
        where = (name, match["entry_id"], match["member"]) if "member" in match else (name, match["entry_id"])
        found[where] = {"url": match["url"], "key": match["key"], "category": match["category"]}
        if name != "corpus.tar" and fetched:
            found[where]["content_type"] = evidence[(name, match["row"])]["content_type"]
        elif name != "corpus.tar":
            found[where]["content_type"] = expected[where]["content_type"]
    assert found == expected
    members = pq.read_table(out / "outcomes.parquet", columns=["member"]).column("member").to_pylist()
    assert sorted(m for m in members if m) == sorted(c.member for c in b.cases)
    for fmt in ("jsonl", "csv"):
        path, count = write_referrals(out, fmt)
        assert count == len(expected)
        if fmt == "jsonl":
            records = read_jsonl(path)
        else:
            with path.open(encoding="utf-8", newline="") as handle:
                records = list(csv.DictReader(handle))
        exported = {}
        for record in records:
            record = {name: unshown(value) for name, value in record.items()} if fmt == "csv" else record
            name = Path(record["shard"]).name
            where = (
                (name, record["entry_id"], record["member"])
                if record["member"]
                else (name, record["entry_id"])
            )
            exported[where] = (record["url"], record["key"], record["category"])
        assert exported == {where: (e["url"], e["key"], e["category"]) for where, e in expected.items()}
    verification = verify_report(out)
    assert verification.ok, verification


def unshown(value: str) -> str:
    """A CSV cell's value: the CSV export shows hidden characters (controls, separators, bidi) as <U+XXXX>
    tokens (tests/test_bidi.py)."""
    return re.sub(r"<U\+([0-9A-F]{4,6})>", lambda token: chr(int(token.group(1), 16)), value)


def run_everything(b: Built) -> None:
    """Scan (interrupted, resumed, merged), rematch, rescan: every report of each reads back whole."""
    first = b.tmp / "scan"
    scan_interrupted_then_resumed(b, first)
    check_reports(b, first)
    rematched = b.tmp / "rematch"
    rematch([str(first)], build_config({"out": str(rematched), "hashlist": [b.listspec]}, "test"))
    check_reports(b, rematched)
    rescanned = b.tmp / "rescan"
    rescan(
        first,
        str(rescanned),
        (),
        {"run.workers": 1, "source.rows_per_unit": 1, "fetch.allow_private_networks": True},
    )
    check_reports(b, rescanned)


@pytest.fixture(scope="module")
def separators(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every separator in every field, one row each, through every command; the failure, if any, is kept
    for the per-separator tests to report."""
    tmp = tmp_path_factory.mktemp("separators")
    with built(tmp, [f"x{s}y" for s in SEPARATORS]) as b:
        run_everything(b)
    return tmp


@pytest.mark.parametrize("separator", SEPARATORS, ids=[f"U+{ord(s):04X}" for s in SEPARATORS])
def test_a_line_separator_in_every_field_reads_back_from_every_report(
    separators: Path, separator: str
) -> None:
    for name in ("scan", "rematch", "rescan"):
        matches = read_jsonl(separators / name / "matches.jsonl")
        assert any(f"kx{separator}yk" == m["key"] for m in matches)
        assert any(f"x{separator}y" in m["url"] for m in matches)
        assert any(f"x{separator}y" in m["shard"] for m in matches)
        assert any(f"x{separator}y" in m.get("member", "") for m in matches)
        raw = (separators / name / "matches.jsonl").read_bytes()
        assert separator.encode("utf-8") not in raw.replace(b"\n", b""), "a raw separator was written"


# Arbitrary text: any code point UTF-8 can carry (no lone surrogates), separators, controls and bidi
# marks made likely.
TEXT = st.text(
    st.one_of(
        st.characters(blacklist_categories=("Cs",)),
        st.sampled_from(
            [*SEPARATORS, "\x00", "\t", "\n", "\x7f", "\x9b", "\u202e", "\u2066", "\ufeff", "%", "#"]
        ),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXT, min_size=2, max_size=3))
def test_any_unicode_in_any_field_round_trips_through_every_command(
    tmp_path_factory, texts: list[str]
) -> None:
    with built(tmp_path_factory.mktemp("any"), texts) as b:
        run_everything(b)


LOCALES = {
    # An ASCII locale: UTF-8 mode off, so argv, file names and open() would all be ASCII.
    "ascii-locale": {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""},
    # UTF-8 everywhere but the terminal: stdout cannot carry the --out path the summary prints.
    "ascii-terminal": {"LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "ascii"},
}


@pytest.mark.parametrize("name", LOCALES)
def test_the_cli_works_in_an_ascii_locale_and_on_an_ascii_terminal(tmp_path: Path, name: str) -> None:
    """A non-ASCII shard name, --out and matched URL: scan, export, verify and report as in UTF-8."""
    env = LOCALES[name]
    body = images(1, first_seed=800)[0]
    place = tmp_path / "données-数据"
    place.mkdir()
    out = tmp_path / "rapport-é"
    with LoopbackServer() as server:
        server.files = EveryPath((body, on_the_wire("image/jpeg; charset=ü")))
        url = server.url("/ü/猫.jpg?q=é")
        shard = write_shard(place / "chat-猫.parquet", {"url": [url], "key": ["clé"]})
        listfile = place / "liste.txt"
        listfile.write_text(hashlib.md5(body).hexdigest() + "\n", encoding="utf-8")
        command = ["scan", str(shard), "--hashlist", f"md5:{listfile}", "--out", str(out)]
        done = run_scanner(*command, "--allow-private-networks", "--workers", "1", env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    shown = str(out) if name == "ascii-locale" else str(out).encode("ascii", "backslashreplace").decode()
    assert f"reports: {shown}" in done.stdout
    [match] = read_jsonl(out / "matches.jsonl")
    assert (match["url"], match["key"], Path(match["shard"]).name) == (url, "clé", "chat-猫.parquet")
    [evidence] = read_jsonl(out / "evidence.jsonl")
    assert evidence["content_type"] == "image/jpeg; charset=ü"
    for command in (["export", str(out), "--format", "jsonl"], ["verify", str(out)], ["report", str(out)]):
        done = run_scanner(*command, env=env)
        assert done.returncode == 0, (command, done.stderr)
        assert "Traceback" not in done.stderr
    assert read_jsonl(out / "referrals.jsonl")[0]["url"] == url


def test_reports_written_with_raw_separators_still_read(tmp_path: Path) -> None:
    """Reports from before the fix hold U+0085, U+2028 and U+2029 raw (ensure_ascii=False, no escaping):
    rematch and rescan read them split on "\\n" only and write reports that hold every value, escaped."""
    with built(tmp_path, [f"x{s}y" for s in SEPARATORS]) as b:
        old = tmp_path / "old"
        scan(scan_config(b.shards, old, b.listspec), restart=True)
        raw = 0
        for name in ("matches.jsonl", "evidence.jsonl"):
            records = [json.loads(line) for line in (old / name).read_bytes().split(b"\n") if line]
            text = "".join(
                json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"
                for r in records
            )
            (old / name).write_text(text, encoding="utf-8")
            raw += text.splitlines() != text.split("\n")[:-1]  # JSON escapes C0, not U+0085 U+2028 U+2029
        assert raw == 2, "the old-style reports hold no raw separator"
        refresh_digests(old, ["matches.jsonl", "evidence.jsonl"])
        rematched = tmp_path / "rematch"
        rematch([str(old)], build_config({"out": str(rematched), "hashlist": [b.listspec]}, "test"))
        check_reports(b, rematched)
        rescanned = tmp_path / "rescan"
        rescan(
            old,
            str(rescanned),
            (),
            {"run.workers": 1, "source.rows_per_unit": 1, "fetch.allow_private_networks": True},
        )
        check_reports(b, rescanned)


@pytest.mark.parametrize("name", ["a[1].csv", "b[xy]?.csv"])
def test_a_shard_named_like_a_glob_is_that_file(tmp_path: Path, name: str) -> None:
    """A shard whose name holds glob characters is scanned as named, not taken for a pattern (which matched
    nothing, or other files)."""
    (tmp_path / "a1.csv").write_text("url\nhttp://127.0.0.1/other\n", encoding="utf-8")
    shard = tmp_path / name
    shard.write_text("url\nhttp://127.0.0.1/named\n", encoding="utf-8")
    listfile = tmp_path / "list.txt"
    listfile.write_text("0" * 32 + "\n", encoding="utf-8")
    config = build_config(
        {
            "inputs": [str(shard)],
            "out": str(tmp_path / "out"),
            "hashlist": [f"md5:{listfile}"],
            "audit": {"no_fetch": True},
            "run": {"progress": False, "workers": 1},
        },
        "test",
    )
    scan(config, restart=True)
    rows = pq.read_table(tmp_path / "out" / "outcomes.parquet", columns=["shard", "url"]).to_pylist()
    assert rows == [{"shard": str(shard), "url": "http://127.0.0.1/named"}]


LIBRARY_RUN = """
import json, sys
from pathlib import Path
from scanner.config import build_config
from scanner.audits.rematch import rematch
from scanner.reports.export import write_referrals
from scanner.reports.html import write_html_report
from scanner.reports.verify import verify_report
from scanner.reports.writer import refresh_digests
from scanner.audits.rescan import rescan
from scanner.runners.local import scan

assert sys.flags.utf8_mode == 0 and sys.getfilesystemencoding() == "ascii"
tmp, listfile = Path(sys.argv[1]), sys.argv[2]
settings = {"fetch": {"allow_private_networks": True}, "run": {"progress": False, "workers": 1}}
scan(build_config({"inputs": [str(tmp / "shard.parquet")], "out": str(tmp / "a"), "hashlist": [listfile],
                   "audit": {"keep_hashes": True}, **settings}, "test"), restart=True)
rematch([str(tmp / "a")], build_config({"out": str(tmp / "b"), "hashlist": [listfile]}, "test"))
rescan(tmp / "a", str(tmp / "c"), (), {"run.workers": 1, "fetch.allow_private_networks": True})
for name in "abc":
    write_referrals(tmp / name, "jsonl")
    write_referrals(tmp / name, "csv")
    write_html_report(tmp / name, show_urls=True)
    refresh_digests(tmp / name, ["report.html"])
    verification = verify_report(tmp / name)
    assert verification.ok, verification
"""


def test_the_library_reads_and_writes_utf8_in_an_ascii_locale(tmp_path: Path) -> None:
    """Without the CLI's UTF-8 mode (scanner used as a library, LC_ALL=C, PYTHONUTF8=0: open() defaults to
    ASCII), a non-ASCII matched URL, key and Content-Type go through scan, rematch, rescan, export, report."""
    body = images(1, first_seed=810)[0]
    with LoopbackServer() as server:
        server.files = EveryPath((body, on_the_wire("image/jpeg; x=\u2028ü")))
        url = server.url("/ü/猫.jpg?q=\u2028é")
        write_shard(tmp_path / "shard.parquet", {"url": [url], "key": ["cl\u2029é"]})
        listfile = tmp_path / "list.csv"
        listfile.write_text(f"hash_type,hash,id,category\nmd5,{hashlib.md5(body).hexdigest()},é,ü\n", "utf-8")
        env = {**os.environ, "PYTHONPATH": str(REPO), "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
        done = subprocess.run(
            [sys.executable, "-c", LIBRARY_RUN, str(tmp_path), f"l={listfile}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    for name in "abc":
        [match] = read_jsonl(tmp_path / name / "matches.jsonl")
        assert (match["url"], match["key"], match["entry_id"], match["category"]) == (
            url,
            "cl\u2029é",
            "é",
            "ü",
        )
        [referral] = read_jsonl(tmp_path / name / "referrals.jsonl")
        assert (referral["url"], referral["content_type"]) == (url, "image/jpeg; x=\u2028ü")


def test_a_rescan_of_one_unit_counts_in_integers(tmp_path: Path) -> None:
    """Counter.update() into an empty Counter kept the unit's booleans: a one-unit rescan with nothing
    changed wrote "not_modified": true, which the summary schema (verify, report) refuses."""
    with built(tmp_path, ["x"]) as b:
        scan(scan_config(b.shards / b.cases[0].shard_name, tmp_path / "a", b.listspec), restart=True)
        result = rescan(
            tmp_path / "a", str(tmp_path / "b"), (), {"run.workers": 1, "fetch.allow_private_networks": True}
        )
    changes = result.summary["changes"]
    assert all(type(changes[name]) is int for name in ("not_modified", "liveness_only")), changes
    assert verify_report(tmp_path / "b").ok

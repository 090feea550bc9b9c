"""URL normal form, `scanner url`, URL/domain lists and dataset hash columns, screened before any request."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from audit_support import images, matches, outcomes, run_scan, write_list, write_shard
from hypothesis import given
from hypothesis import strategies as st
from loopback import LoopbackServer

from scanner.fetch import FetchConfig, FetchResult, make_fetcher, parse_url
from scanner.hashing import hash_image
from scanner.lists import Matcher, load_hashlist
from scanner.reports.hashes import HASHES_SCHEMA
from scanner.reports.verify import verify_report
from scanner.screen import AuditConfig, Screen
from scanner.sources import Row
from scanner.urls.normal import normalise_host, normalise_url

NORMAL_FORMS = [
    ("HTTP://Example.COM/a", "http://example.com/a"),  # scheme and host lower-cased
    ("http://example.com:80/a", "http://example.com/a"),  # default ports dropped
    ("https://example.com:443/a", "https://example.com/a"),
    ("http://example.com:0080/a", "http://example.com/a"),
    ("http://example.com:8080/a", "http://example.com:8080/a"),
    ("http://example.com/a#frag", "http://example.com/a"),  # fragment dropped
    ("http://example.com", "http://example.com/"),  # empty path
    ("http://user:secret@example.com/a", "http://example.com/a"),  # credentials dropped
    ("http://bücher.example/", "http://xn--bcher-kva.example/"),  # IDNA
    ("http://EXAMPLE.com./a", "http://example.com/a"),  # trailing dot
    ("http://ex%41mple.com/", "http://example.com/"),  # host percent-decoded
    ("http://0x7f.1/a", "http://127.0.0.1/a"),  # IPv4 spellings
    ("http://2130706433/", "http://127.0.0.1/"),
    ("http://[::FFFF:1.2.3.4]/", "http://[::ffff:102:304]/"),
    ("http://example.com/%7Euser/%41", "http://example.com/~user/A"),  # unreserved escapes decoded
    ("http://example.com/a%2fb%c3%a9", "http://example.com/a%2Fb%C3%A9"),  # other escapes upper-cased
    ("http://example.com/é", "http://example.com/%C3%A9"),  # non-ASCII encoded as UTF-8
    ("http://example.com/a b", "http://example.com/a%20b"),
    ("http://example.com/100%", "http://example.com/100%"),  # a lone % stays
    ("http://example.com/a/./b/../c", "http://example.com/a/c"),  # dot segments
    ("http://example.com/a/%2E%2e/c", "http://example.com/c"),
    ("http://example.com/a/b/..", "http://example.com/a/"),
    ("http://example.com/../../a", "http://example.com/a"),
    ("http://example.com/a?", "http://example.com/a"),  # empty query
    ("http://example.com/a?b=%7e&c", "http://example.com/a?b=~&c"),
    ("http://example.com/a?z=1&a=a+b", "http://example.com/a?z=1&a=a+b"),  # query order kept
    ("  http://exa\tmple.com/a\n ", "http://example.com/a"),  # spaces, tabs, newlines
    ("http:\\\\example.com\\a\\b", "http://example.com/a/b"),  # backslashes
]


@pytest.mark.parametrize(("url", "normal"), NORMAL_FORMS)
def test_normal_form_follows_each_documented_rule(url: str, normal: str) -> None:
    assert normalise_url(url) == normal
    assert normalise_url(normal) == normal


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a",
        "example.com/a",
        "",
        "javascript:alert(1)",
        "http://exa mple.com/",
        "http://[::1",
    ],
)
def test_what_the_fetcher_refuses_has_no_normal_form(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        normalise_url(url)


segment = st.text(alphabet="aZ09-._~%2eE/?=&+#é \\", max_size=12)


@given(host=st.sampled_from(["Example.com", "127.0.0.1", "xn--bcher-kva.example", "[::1]"]), tail=segment)
def test_normal_form_is_stable_and_agrees_with_what_the_fetcher_requests(host: str, tail: str) -> None:
    url = f"http://{host}/{tail}"
    normal = normalise_url(url)
    assert normalise_url(normal) == normal
    assert normalise_url(parse_url(url).url) == normal


def test_host_normal_form() -> None:
    assert normalise_host(" *.Bücher.Example. ") == "xn--bcher-kva.example"
    assert normalise_host("::1") == normalise_host("[::1]") == "::1"
    assert normalise_host("0x7f.1") == "127.0.0.1"
    for bad in ("example.com:8080", "example.com/a", "a b", "", "user@example.com"):
        with pytest.raises(ValueError, match="not a host name"):
            normalise_host(bad)


def test_url_command_prints_the_normal_form_and_its_digests(scanner_cli) -> None:
    url = "HTTP://Example.com:80/a/../b%7e?#top"
    done = scanner_cli("url", url, "ftp://example.com/")
    assert done.returncode == 1
    assert "ftp://example.com/" in done.stderr and "blocked_scheme" in done.stderr
    record = json.loads(done.stdout)
    normal = "http://example.com/b~"
    assert record == {
        "url": url,
        "normalised": normal,
        "host": "example.com",
        "url_md5": hashlib.md5(normal.encode()).hexdigest(),
        "url_sha1": hashlib.sha1(normal.encode()).hexdigest(),
        "url_sha256": hashlib.sha256(normal.encode()).hexdigest(),
    }


def screen_of(tmp_path: Path, specs: list[str], audit: AuditConfig | None = None) -> Screen:
    return Screen(Matcher.from_lists([load_hashlist(spec) for spec in specs]), audit)


def test_url_lists_match_every_spelling_of_a_listed_url(tmp_path: Path) -> None:
    listed = "http://example.com/img/cat.jpg"
    digest = hashlib.sha256(listed.encode()).hexdigest()
    urls = write_list(tmp_path / "urls.txt", ["HTTP://EXAMPLE.com:80/img/x/../cat.jpg#top"])
    digests = write_list(tmp_path / "digests.txt", [digest])
    screen = screen_of(tmp_path, [f"urls=url:{urls}", f"digests=url_sha256:{digests}"])
    rows = [
        Row("s", 0, "http://example.com/img/cat.jpg", None),
        Row("s", 1, "http://Example.com/img/%63at.jpg?", None),
        Row("s", 2, "http://example.com/img/dog.jpg", None),
        Row("s", 3, "not a url", None),
    ]
    screened = screen.rows(rows)
    found = [sorted((m.list, m.hash_type, m.entry_id, m.distance) for m in s.matches) for s in screened]
    expected = [("digests", "url_sha256", digest, 0), ("urls", "url", listed, 0)]
    assert found == [expected, expected, [], []]
    assert [s.checked for s in screened] == [True, True, True, False]


def test_domain_lists_cover_the_host_and_every_subdomain(tmp_path: Path) -> None:
    domains = write_list(tmp_path / "domains.txt", ["Example.com.", "*.bücher.example"])
    screen = screen_of(tmp_path, [f"domain:{domains}"])
    urls = {
        "http://example.com/a": True,
        "https://img.cdn.EXAMPLE.com:8443/a": True,
        "http://shop.xn--bcher-kva.example/": True,
        "http://notexample.com/a": False,
        "http://example.com.evil.net/a": False,
        "http://example.org/?u=example.com": False,
    }
    screened = screen.rows([Row("s", i, url, None) for i, url in enumerate(urls)])
    assert [bool(s.matches) for s in screened] == list(urls.values())
    assert {m.hash_type for s in screened for m in s.matches} == {"domain"}


def test_hash_columns_match_as_hex_or_raw_bytes_and_bad_cells_check_nothing(tmp_path: Path) -> None:
    body = images(1)[0]
    sha256 = hashlib.sha256(body).hexdigest()
    hashlist = write_list(tmp_path / "list.txt", [sha256])
    screen = screen_of(tmp_path, [f"sha256:{hashlist}"], AuditConfig(match_columns=("sha256=sha256",)))
    cells = [sha256.upper(), bytes.fromhex(sha256), "0x" + sha256, "f" * 64, "not hex", None, 42]
    screened = screen.rows([Row("s", i, None, None, {"sha256": c}) for i, c in enumerate(cells)])
    assert [bool(s.matches) for s in screened] == [True, True, True, False, False, False, False]
    assert [s.checked for s in screened] == [True, True, True, True, False, False, False]
    assert screened[3].claimed == {"sha256": b"\xff" * 32}


@pytest.fixture
def served() -> dict[str, bytes]:
    bodies = images(4)
    return {"/ok.jpg": bodies[0], "/listed.jpg": bodies[1], "/other.jpg": bodies[2], "/far.jpg": bodies[3]}


def test_a_listed_url_is_never_requested_not_even_again_or_behind_a_redirect(tmp_path: Path, served) -> None:
    with LoopbackServer(served) as server, LoopbackServer(served, host="127.0.0.2") as far:
        listed = server.url("/listed.jpg")
        digests = write_list(tmp_path / "urls.txt", [hashlib.sha256(listed.encode()).hexdigest()])
        domains = write_list(tmp_path / "domains.txt", ["127.0.0.2"])
        urls = [
            server.url("/ok.jpg"),
            listed,
            server.url(f"/redirect-to?url={listed}"),
            f"HTTP://127.0.0.1:{server.port}/x/../listed.jpg#again",
            listed,
            far.url("/far.jpg"),
            server.url(f"/redirect-to?url={far.url('/far.jpg')}"),
            server.url("/other.jpg"),
        ]
        shard = write_shard(tmp_path / "shard.parquet", {"url": urls})
        out = tmp_path / "out"
        run_scan(shard, out, [f"bad=url_sha256:{digests}", f"hosts=domain:{domains}"])
        assert server.hits("/listed.jpg") == 0 and far.total_hits == 0
        assert server.hits("/redirect-to") == 2 and server.hits("/ok.jpg") == server.hits("/other.jpg") == 1
    assert outcomes(out) == ["clean", "match", "match", "match", "match", "match", "match", "clean"]
    found = [(m["row"], m["list"], m["hash_type"], m["distance"]) for m in matches(out)]
    assert found == [
        (1, "bad", "url_sha256", 0),
        (2, "bad", "url_sha256", 0),
        (3, "bad", "url_sha256", 0),
        (4, "bad", "url_sha256", 0),
        (5, "hosts", "domain", 0),
        (6, "hosts", "domain", 0),
    ]
    evidence = {e["row"]: e for e in map(json.loads, (out / "evidence.jsonl").read_text().splitlines())}
    assert evidence[2]["http_status"] == 302 and evidence[2]["final_url"] == listed
    assert evidence[1]["http_status"] is None and evidence[1]["final_url"] is None
    table = pq.read_table(out / "outcomes.parquet").to_pydict()
    assert table["http_status"][1] is None and table["fetched_at"][1] is None
    assert verify_report(out).ok


def hash_column_shard(tmp_path: Path, server: LoopbackServer, served: dict[str, bytes]) -> Path:
    """Rows: a listed sha256; a correct one; a wrong one (content changed); none; a listed raw md5."""
    sha = {path: hashlib.sha256(body).hexdigest() for path, body in served.items()}
    columns = {
        "url": [server.url(p) for p in ("/listed.jpg", "/ok.jpg", "/other.jpg", "/far.jpg", "/ok.jpg")],
        "sha256": [sha["/listed.jpg"], sha["/ok.jpg"], sha["/listed.jpg"][::-1], None, None],
        "image_md5": [None, None, None, None, hashlib.md5(b"listed elsewhere").digest()],
    }
    return write_shard(tmp_path / "hashes.parquet", columns)


def test_dataset_hash_columns_match_without_fetching_and_reveal_changed_content(
    tmp_path: Path, served
) -> None:
    lists = [
        f"sha=sha256:{write_list(tmp_path / 'sha.txt', [hashlib.sha256(served['/listed.jpg']).hexdigest()])}",
        f"md5=md5:{write_list(tmp_path / 'md5.txt', [hashlib.md5(b'listed elsewhere').hexdigest()])}",
    ]
    audit = {"match_columns": ["sha256=sha256", "image_md5=md5"]}
    with LoopbackServer(served) as server:
        shard = hash_column_shard(tmp_path, server, served)
        run_scan(shard, tmp_path / "fetched", lists, audit=audit)
        assert server.hits("/listed.jpg") == 0
        assert server.hits("/ok.jpg") == 1  # row 4 matched its md5 column: never fetched
        server.reset_hits()
        run_scan(shard, tmp_path / "unfetched", [lists[0]], audit={**audit, "no_fetch": True})
        assert server.total_hits == 0
    assert outcomes(tmp_path / "fetched") == ["match", "clean", "changed", "clean", "match"]
    found = [(m["row"], m["list"], m["hash_type"]) for m in matches(tmp_path / "fetched")]
    assert found == [(0, "sha", "sha256"), (4, "md5", "md5")]
    assert outcomes(tmp_path / "unfetched") == ["match", "clean", "clean", "unchecked", "unchecked"]
    summary = json.loads((tmp_path / "fetched" / "summary.json").read_text())
    assert summary["outcomes"]["changed"] == 1 and summary["outcomes"]["unchecked"] == 0
    assert all(verify_report(tmp_path / d).ok for d in ("fetched", "unfetched"))


def test_keep_hashes_writes_one_private_record_per_row_and_no_image_bytes(tmp_path: Path, served) -> None:
    with LoopbackServer(served) as server:
        urls = [server.url("/ok.jpg"), server.url("/status/404"), server.url("/other.jpg")]
        shard = write_shard(tmp_path / "shard.parquet", {"url": urls, "key": ["a", "b", "c"]})
        hashlist = write_list(tmp_path / "list.txt", ["0" * 32])
        out = tmp_path / "out"
        run_scan(shard, out, [f"md5:{hashlist}"], audit={"keep_hashes": True}, source={"rows_per_unit": 2})
        etags = [head(url).etag for url in urls]
    path = out / "hashes.parquet"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    table = pq.read_table(path)
    # As Parquet gives the schema back: pyarrow may rename a fixed-size list's child (item -> element).
    written = io.BytesIO()
    pq.write_table(HASHES_SCHEMA.empty_table(), written)
    assert table.schema.equals(pq.read_schema(io.BytesIO(written.getvalue())))
    records = table.to_pylist()
    assert [(r["row"], r["key"], r["url"]) for r in records] == [
        (i, k, u) for i, (k, u) in enumerate(zip("abc", urls, strict=True))
    ]
    for record, body in ((records[0], served["/ok.jpg"]), (records[2], served["/other.jpg"])):
        expected = hash_image(body, frozenset({"md5", "sha1", "sha256", "pdq", "phash", "dhash"}))
        for name in ("md5", "sha1", "sha256", "pdq", "phash", "dhash"):
            assert record[name] == getattr(expected, name).hex()
        assert (record["pdq_quality"], record["width"], record["height"], record["format"]) == (
            expected.pdq_quality,
            160,
            120,
            "jpeg",
        )
        assert record["last_modified"] and record["fetched_at"]
    assert [r["etag"] for r in records] == [etags[0], None, etags[2]] and etags[0] != etags[2]
    assert all(records[1][name] is None for name in ("md5", "pdq", "width"))
    data = path.read_bytes()
    assert not any(body[200:264] in data for body in served.values())
    assert "hashes.parquet" in json.loads((out / "manifest.json").read_text())["files"]
    assert verify_report(out).ok


def test_a_bad_match_column_is_a_config_error(tmp_path: Path, scanner_cli) -> None:
    shard = write_shard(tmp_path / "shard.parquet", {"url": ["http://127.0.0.1:9/a"]})
    for spec, message in (
        ("sha256", "COLUMN=TYPE"),
        ("x=sha512", "TYPE one of"),
        ("missing=md5", "no column"),
        ("image_phash=phash", "COYO-700M's image_phash is phash.org's pHash"),  # bench_coyo_phash.py
        ("image_phash=dhash", "cannot be matched as one"),
    ):
        command = [
            "scan",
            str(shard),
            "--hashlist",
            "x",
            "--out",
            str(tmp_path / "o"),
            "--match-column",
            spec,
        ]
        done = scanner_cli(*command)
        assert done.returncode == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "o" / "outcomes.parquet").exists()


def head(url: str) -> FetchResult:
    """What the fetcher sees of a URL without its body (its ETag)."""

    async def run() -> FetchResult:
        fetcher = make_fetcher(FetchConfig(allow_private_networks=True))
        try:
            return await fetcher.fetch(url, read_body=False)
        finally:
            await fetcher.aclose()

    return asyncio.run(run())


def test_real_url_lists_normalise_stably(url_lists: Path) -> None:
    """10,000 crawled URLs (parsed only): every one the fetcher accepts has a stable normal form."""
    urls = pq.read_table(url_lists / "test_10000.parquet", columns=["URL"]).column("URL").to_pylist()
    normal, refused = {}, []
    for url in urls:
        try:
            normal[url] = normalise_url(url)
        except ValueError:
            refused.append(url)
    assert refused == ["UNLIKELY"]  # the fixture's one junk value
    assert all(normalise_url(n) == n and normalise_url(parse_url(u).url) == n for u, n in normal.items())
    assert all(n.startswith(("http://", "https://")) and "#" not in n for n in normal.values())


def test_the_fetcher_asks_the_screen_before_every_request() -> None:
    asked: list[str] = []

    def screen(url: str) -> str | None:
        asked.append(url)
        return "listed_here" if url.endswith("/redirect/0") else None

    async def run(server: LoopbackServer) -> list[FetchResult]:
        fetcher = make_fetcher(FetchConfig(allow_private_networks=True))
        try:
            chain = await fetcher.fetch(server.url("/redirect/2"), screen=screen)
            first = await fetcher.fetch(server.url("/redirect/0"), screen=screen)
            head = await fetcher.fetch(server.url("/redirect/1"), read_body=False, screen=screen)
            return [chain, first, head]
        finally:
            await fetcher.aclose()

    with LoopbackServer() as server:
        chain, first, head = asyncio.run(run(server))
        assert server.hits("/redirect/0") == 0
        assert (server.hits("/redirect/2"), server.hits("/redirect/1")) == (1, 2)  # the chain; the HEAD
    for result in (chain, head):
        assert (result.outcome, result.reason, result.status) == ("blocked", "listed_here", 302)
        assert result.final_url == server.url("/redirect/0") and result.body is None
    assert (first.outcome, first.reason, first.status) == ("blocked", "listed_here", None)
    assert asked == [server.url(f"/redirect/{n}") for n in (2, 1, 0, 0, 1, 0)]

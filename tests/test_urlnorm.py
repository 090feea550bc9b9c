"""Column normalisation of url and domain lists: the vectorised fast path gives the scalar normal form."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.errors import HashListError
from scanner.lists import DuplicateHashWarning, load_hashlist
from scanner.lists.hashtypes import text_key
from scanner.urls.normal import (
    BadEntry,
    normalise_host,
    normalise_hosts,
    normalise_url,
    normalise_urls,
    simple_hosts,
    simple_urls,
)

LONGEST_HOST = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
PLAIN_PIECES = [
    *["", ".a", "a.", "...", "a", "Z9", "~user", "a-b_c", "%2F", "%C3%A9", "%", "%4", "%zz", "%%2F"],
    *["!", "$", "&", "(", ")", "*", "+", ";", "=", ",", "@", ":", "|", "^", "[", "]"],
]
NASTY_PIECES = [
    *[".", "..", "%2E", "%2e%2E", "%41", "%7e", "%7E", "%2f", "%c3%a9", "%%41"],
    *["é", " ", "\\", "'", '"', "<", ">", "{", "}", "`", "\t", "\x00", "?", "#"],
]
# Each part of a URL, in order: plain spellings (which the fast path may claim) and nasty ones.
URL_PARTS: dict[str, tuple[list[str], list[str]]] = {
    "space": ([""], [" ", "\t", "\n", "\x01", "\r\n"]),
    "scheme": (["http", "https", "HTTP", "hTtPs"], ["ftp", "http:", "", "h"]),
    "slashes": (["://"], [":/", ":", ":\\\\", ":///", "//", ":/\\"]),
    "userinfo": ([""], ["user@", "u:p@", "@", "a%40b@"]),
    "host": (
        [
            "Example.COM",
            "a.b-c._x.0.9z.xn--bcher-kva.Org.",
            "localhost",
            "a1",
            LONGEST_HOST,
            LONGEST_HOST + ".",
        ],
        [
            *[
                "bücher.de",
                "ex%41mple.com",
                "a..com",
                "a.com..",
                ".a.com",
                "a b.com",
                "ex\tample.com",
                "a" * 64,
            ],
            *["a.1", "a.255", "a.0x7f", "0X1f", "a.012", "1a", "ß.de", "x" * 64 + ".com", LONGEST_HOST + "b"],
            *["[::1]", "[::FFFF:1.2.3.4]", "[2001:db8::1]", "[fe80::1%25eth0]", "[::1", "2130706433"],
            *["0x7f.1", "127.0.0.1", "1.2.3", "256.1.1.1", "", "."],
        ],
    ),
    "port": (["", ":80", ":443", ":8080", ":1", ":9999"], [":", ":0080", ":0", ":65535", ":65536", ":99999"]),
    "path": (
        ["/", "", "/a/b", "/a//b/.../.a/a.", "/%2F%C3%A9/%/%4/%zz/%%2F", "/!$&()*+;=,@:|^[]~"],
        [f"/a{piece}b" for piece in NASTY_PIECES] + ["/.", "/a/..", "/./a", "/%2e", "\\a", "/\\"],
    ),
    "query": (
        ["", "?a=b", "?/./x/../", "?a?b", "??", "?a=%2F&b=%"],
        ["?", *(f"?a{p}" for p in NASTY_PIECES)],
    ),
    "fragment": (["", "#", "#top", "#a?b", "#/../", "#%7e"], ["#a b", "#é", "#\t"]),
    "end": ([""], [" ", "\t", "\n", "\x01"]),
}
HOST_PARTS: dict[str, tuple[list[str], list[str]]] = {
    "space": ([""], [" ", "\t", "\u3000"]),
    "wildcard": (["", "*."], ["*.*.", ".", "*", "*a."]),
    "host": URL_PARTS["host"],
    "port": ([""], [":80", ":", "/a", "/", "@"]),
    "end": ([""], [" ", "\n", "\u3000"]),
}
BARE_IPV6 = ["::1", "FE80::1", "1::", "::ffff:1.2.3.4"]


def each_spelling(parts: dict[str, tuple[list[str], list[str]]]) -> list[str]:
    """Every spelling of every part, plain or nasty, among each row of plain spellings of the others."""
    bases = max(len(plain) for plain, _ in parts.values())
    rows = [[plain[base % len(plain)] for plain, _ in parts.values()] for base in range(bases)]
    return [
        "".join(value if part == name else other for part, other in zip(parts, row, strict=True))
        for name, (plain, nasty) in parts.items()
        for value in [*plain, *nasty]
        for row in rows
    ]


@st.composite
def nearly_plain(draw: st.DrawFn, parts: dict[str, tuple[list[str], list[str]]]) -> str:
    """Every part plain, or one or two of them nasty."""
    nasty = set(draw(st.lists(st.sampled_from(sorted(parts)), max_size=2)))
    return "".join(draw(st.sampled_from(pair[name in nasty])) for name, pair in parts.items())


def composed(pieces: list[str], lead: str) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(pieces), max_size=6).map(lambda chosen: lead + "/".join(chosen))


URLS = st.one_of(
    nearly_plain(URL_PARTS),
    st.builds(
        lambda scheme, host, port, path, query: f"{scheme}://{host}{port}{path}{query}",
        st.sampled_from(URL_PARTS["scheme"][0]),
        st.sampled_from(URL_PARTS["host"][0]),
        st.sampled_from(URL_PARTS["port"][0]),
        composed(PLAIN_PIECES + NASTY_PIECES[:10], "/"),
        st.one_of(st.just(""), composed([*PLAIN_PIECES, *NASTY_PIECES, "?"], "?")),
    ),
)
DOMAINS = st.one_of(nearly_plain(HOST_PARTS), st.sampled_from(BARE_IPV6))


def scalar_or_none(normalise_one, value: str | None) -> str | None:
    try:
        return normalise_one(value or "")
    except ValueError:
        return None


def assert_column_is_scalar(values: list[str | None], normalise_one, normalise_column, simple) -> int:
    """Every entry the fast path claims has the scalar normal form; the column does too, bad rows named.

    Returns how many entries the fast path claimed."""
    expected = [scalar_or_none(normalise_one, value) for value in values]
    fast = simple(pa.array(values, pa.string())).to_pylist()
    claimed = [(value, normal) for value, normal in zip(values, fast, strict=True) if normal is not None]
    assert all(normalise_one(value) == normal for value, normal in claimed)
    good = [value for value, normal in zip(values, expected, strict=True) if normal is not None]
    assert normalise_column(pa.array(good, pa.string())).to_pylist() == [n for n in expected if n is not None]
    bad = [row for row, normal in enumerate(expected) if normal is None]
    if bad:
        with pytest.raises(BadEntry) as caught:
            normalise_column(pa.array(values, pa.string()))
        assert caught.value.row == bad[0]
    for row in bad:
        with pytest.raises(BadEntry) as caught:
            normalise_column(pa.array([*good[:1], values[row]], pa.string()))
        assert caught.value.row == len(good[:1])
    return len(claimed)


@settings(max_examples=400, deadline=None)
@given(urls=st.lists(URLS, min_size=1, max_size=12))
def test_vectorised_urls_equal_scalar(urls: list[str]) -> None:
    assert_column_is_scalar(urls, normalise_url, normalise_urls, simple_urls)


@settings(max_examples=300, deadline=None)
@given(hosts=st.lists(DOMAINS, min_size=1, max_size=12))
def test_vectorised_hosts_equal_scalar(hosts: list[str]) -> None:
    assert_column_is_scalar(hosts, normalise_host, normalise_hosts, simple_hosts)


SIMPLE = [
    "HTTP://Example.COM/a",
    "http://example.com:80/a",
    "https://example.com:443/a",
    "https://example.com:80/a",
    "http://example.com:8080/a?b=%2F&c=d+e",
    "http://example.com/a#frag",
    "http://example.com",
    "http://example.com?q",
    "http://EXAMPLE.com./a",
    "http://ex_ample.com/a//b/.c/..d/%zz/100%",
]
NOT_SIMPLE = [
    "http://user:secret@example.com/a",
    "http://bücher.example/",
    "http://ex%41mple.com/",
    "http://0x7f.1/a",
    "http://[::1]/",
    "http://example.com:0080/a",
    "http://example.com/%7Euser",
    "http://example.com/a%2fb",
    "http://example.com/a/./b",
    "http://example.com/a/%2E%2e/c",
    "http://example.com/a?",
    "http://example.com/é",
    "http://example.com/a b",
    "  http://example.com/a",
    "http:\\\\example.com\\a",
    "ftp://example.com/a",
]


def test_each_spelling_of_each_part_normalises_as_the_scalar_normaliser_does() -> None:
    for parts, normalise_one, normalise_column, simple in (
        (URL_PARTS, normalise_url, normalise_urls, simple_urls),
        (HOST_PARTS, normalise_host, normalise_hosts, simple_hosts),
    ):
        texts = each_spelling(parts)
        assert assert_column_is_scalar(texts, normalise_one, normalise_column, simple) > 0
    assert assert_column_is_scalar(BARE_IPV6, normalise_host, normalise_hosts, simple_hosts) == 0


def test_the_fast_path_claims_plain_urls_and_leaves_the_rest_to_the_scalar_normaliser() -> None:
    assert simple_urls(pa.array(SIMPLE)).null_count == 0
    assert simple_urls(pa.array(NOT_SIMPLE)).null_count == len(NOT_SIMPLE)
    assert assert_column_is_scalar([*SIMPLE, *NOT_SIMPLE], normalise_url, normalise_urls, simple_urls) == len(
        SIMPLE
    )


def test_the_fast_path_claims_plain_hosts() -> None:
    plain = ["Example.COM", "*.cdn.example.com", "example.com.", "localhost", "a_b-c.x"]
    other = ["bücher.de", "0x7f.1", "::1", "[::1]", "a.com:80", " a.com", "*.*.a.com", "a..com", "1.2.3.4"]
    assert simple_hosts(pa.array(plain)).null_count == 0
    assert simple_hosts(pa.array(other)).null_count == len(other)
    assert assert_column_is_scalar([*plain, *other], normalise_host, normalise_hosts, simple_hosts) == len(
        plain
    )


def test_null_and_empty_values_have_no_normal_form() -> None:
    for normalise_column, good in ((normalise_urls, "http://a.example/"), (normalise_hosts, "a.example")):
        for bad in (None, ""):
            with pytest.raises(BadEntry) as caught:
                normalise_column(pa.array([good, bad], pa.string()))
            assert caught.value.row == 1


def real_url_lists(url_lists: Path) -> dict[str, list[str | None]]:
    """Every URL in the shared fixtures, by file."""
    columns = {p.name: pq.read_table(p).column("URL").to_pylist() for p in url_lists.glob("test_*0.parquet")}
    texts = {p.name: p.read_text("utf-8").splitlines() for p in url_lists.glob("*.txt")}
    return {**columns, **texts}


def test_real_url_lists_normalise_as_the_scalar_normaliser_does(url_lists: Path) -> None:
    """The crawled URLs (parsed only, never fetched): column == scalar for every entry, most of them fast."""
    lists = real_url_lists(url_lists)
    assert "test_10000.parquet" in lists
    for name, urls in lists.items():
        claimed = assert_column_is_scalar(urls, normalise_url, normalise_urls, simple_urls)
        assert claimed > len(urls) // 2, name


def test_real_hosts_normalise_as_the_scalar_normaliser_does(url_lists: Path) -> None:
    """Authorities of the crawled URLs as domain entries, ports, userinfo and IP addresses included."""
    urls = [url for urls in real_url_lists(url_lists).values() for url in urls if url and url.count("/") >= 2]
    authorities = sorted({url.split("/")[2] for url in urls})
    claimed = assert_column_is_scalar(authorities, normalise_host, normalise_hosts, simple_hosts)
    assert claimed > len(authorities) // 2


def test_loaded_url_and_domain_lists_key_each_entry_by_its_scalar_normal_form(tmp_path: Path) -> None:
    urls = [*SIMPLE, *(u for u in NOT_SIMPLE if scalar_or_none(normalise_url, u) and u.strip() == u)]
    path = tmp_path / "urls.txt"
    path.write_text("\n".join(urls) + "\n")
    with pytest.warns(DuplicateHashWarning):  # SIMPLE spells some URLs in several ways
        entries = load_hashlist(f"url:{path}").entries["url"]
    normal = list(dict.fromkeys(normalise_url(u) for u in urls))  # repeats merge into the first entry
    assert [entries.entry_id(row) for row in range(len(entries))] == normal
    assert [bytes(key) for key in entries.keys] == [text_key(n) for n in normal]
    domains = tmp_path / "domains.txt"
    domains.write_text("Example.COM.\n*.CDN.example.org\nbücher.de\n0x7f.1\n")
    entries = load_hashlist(f"domain:{domains}").entries["domain"]
    expected = ["example.com", "cdn.example.org", "xn--bcher-kva.de", "127.0.0.1"]
    assert [entries.entry_id(row) for row in range(4)] == expected
    assert [bytes(key) for key in entries.keys] == [text_key(n) for n in expected]


@pytest.mark.parametrize(
    ("spec", "entries", "bad"),
    [
        ("url", [f"http://h{i}.example/{i}" for i in range(2000)], "http://[::1/"),
        ("url", [f"http://h{i}.example/{i}" for i in range(2000)], "ftp://h.example/"),
        ("domain", [f"h{i}.example" for i in range(2000)], "h.example:8080"),
    ],
)
def test_a_bad_entry_among_simple_ones_names_its_file_and_line(
    tmp_path: Path, spec: str, entries: list[str], bad: str
) -> None:
    path = tmp_path / "list.txt"
    lines = [*entries[:1500], bad, *entries[1500:], bad]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HashListError) as caught:
        load_hashlist(f"{spec}:{path}")
    assert (caught.value.path, caught.value.line) == (str(path), 1501)
    assert str(caught.value).startswith(f"{path}:1501: not a valid {spec}")


def test_a_column_in_chunks_normalises_as_one_array_does() -> None:
    urls = ["HTTP://x.com:80/a", "http://a.example/../b?#f", "https://Ä.example/ü"]
    hosts = ["Example.COM.", "*.b.example", "Ä.example"]
    for values, normalise_column in ((urls, normalise_urls), (hosts, normalise_hosts)):
        whole = normalise_column(pa.array(values))
        chunked = pa.chunked_array([values[:1], values[1:]], pa.string())
        assert normalise_column(chunked).to_pylist() == whole.to_pylist()
        assert normalise_column(pa.chunked_array([], pa.string())).to_pylist() == []

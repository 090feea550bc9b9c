"""The URL and address policy: hostile spellings, every forbidden range, one checked lookup, and fuzzing."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

import httpx
import pytest
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.errors import ConfigError
from scanner.fetch import FetchConfig, FetchFailure
from scanner.fetch.guard import (
    AddressPolicy,
    Target,
    is_forbidden_address,
    parse_url,
    redirect_target,
    resolve_checked,
)

LOOPBACK_SPELLINGS = [
    "http://127.0.0.1/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0x7F.0.0.1/",
    "http://017700000001/",
    "http://0x7f000001/",
    "http://127.1/",
    "http://127.0.1/",
    "http://0177.0.0.1/",
    "http://0177.0.0.01/",
    "http://127.0.0.1./",
    "http://%31%32%37.0.0.1/",
    "http://%31%32%37%2e0.0.1/",
    "http://１２７.０.０.１/",
    "http://127。0。0。1/",
    "http://good.com@127.0.0.1/",
    "http://user:pass@127.0.0.1:80/",
    "http://127.0.0.1#@good.com/",
    "HTTP://127.0.0.1/",
    " \t http://127.0.0.1/ \n",
    "http:127.0.0.1/",
    "http:\\\\127.0.0.1\\x",
]

FORBIDDEN = [
    "127.0.0.1",
    "127.255.255.254",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.255",
    "0.0.0.0",
    "0.1.2.3",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:8.8.8.8",
    "::127.0.0.1",
    "::ffff:0:7f00:1",
    "2002:7f00:1::",
    "2002:c0a8:101::1",
    "2002:a9fe:a9fe::",
    "64:ff9b::10.0.0.1",
    "64:ff9b::127.0.0.1",
    "64:ff9b:1::1",
    "2001::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "2001:db8::1",
    "100::1",
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700::1111",
    "2a00:1450:4001::1",
    "2002:808:808::",
    "64:ff9b::8.8.8.8",
]


def failure(url: object, max_length: int = 4096) -> tuple[str, str]:
    with pytest.raises(FetchFailure) as caught:
        parse_url(url, max_length)
    return caught.value.outcome, caught.value.reason


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_every_loopback_spelling_reads_as_127_0_0_1(url: str) -> None:
    target = parse_url(url)
    assert target.ip == ipaddress.ip_address("127.0.0.1")
    assert target.host == "127.0.0.1"
    assert not AddressPolicy().permits(target.ip)


def test_userinfo_is_dropped_and_the_real_host_kept() -> None:
    assert parse_url("http://127.0.0.1:80@good.example/").host == "good.example"
    assert parse_url("http://a@b@good.example/x").url == "http://good.example/x"


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("HTTP://Example.COM/a b?q=1 2#frag", "http://example.com/a%20b?q=1%202"),
        ("http://example.com:80/", "http://example.com/"),
        ("https://example.com:443", "https://example.com/"),
        ("https://example.com:0443/x", "https://example.com/x"),
        ("http://example.com:8080", "http://example.com:8080/"),
        ("http://example.com./img.jpg", "http://example.com/img.jpg"),
        ("http://bücher.de/bild.jpg", "http://xn--bcher-kva.de/bild.jpg"),
        ("http://%65xample.com/", "http://example.com/"),
        ("http://example.com/é?ü=1", "http://example.com/%C3%A9?%C3%BC=1"),
        ("http://example.com/already%20encoded", "http://example.com/already%20encoded"),
        ("http://exa\tmple.com/\n", "http://example.com/"),
        ("http:\\\\example.com\\a\\b", "http://example.com/a/b"),
        ("http://[0:0:0:0:0:0:0:1]:8080/", "http://[::1]:8080/"),
        ("http://[::FFFF:127.0.0.1]/", "http://[::ffff:7f00:1]/"),
        ("http://my_host.example.com/", "http://my_host.example.com/"),
        ("http://example.com?x", "http://example.com/?x"),
        ("http:///example.com/x", "http://example.com/x"),
    ],
)
def test_urls_are_canonicalised(url: str, canonical: str) -> None:
    assert parse_url(url).url == canonical


@pytest.mark.parametrize(
    "url",
    [
        "http://",
        "http://exa mple.com/",
        "http://example.com:99999/",
        "http://example.com:0/",
        "http://example.com:-1/",
        "http://example.com:8o/",
        "http://example.com:١٢/",
        "http://256.0.0.1/",
        "http://1.2.3.4.5/",
        "http://0x100000000/",
        "http://example.09/",
        "http://1.2.3.09/",
        "http://a..b/",
        "http://example.com../",
        "http://[::1/",
        "http://[::1]x/",
        "http://[fe80::1%25eth0]/",
        "http://[not-ipv6]/",
        "http://exa%zzmple.com/",
        "http://%ff.com/",
        "http://ex<ample.com/",
        "http://" + "a" * 64 + ".com/",
        "http://\x00example.com/",
        "not a url",
        "//example.com/img.jpg",
        "example.com/img.jpg",
        "http://\ud800.com/",
    ],
)
def test_unparseable_urls_are_invalid(url: str) -> None:
    assert failure(url) == ("invalid", "invalid_url")


@pytest.mark.parametrize("url", [None, "", "   ", "\t\n", "\x00\x01 "])
def test_empty_urls(url: str | None) -> None:
    assert failure(url) == ("invalid", "empty_url")


def test_non_string_url_is_invalid() -> None:
    assert failure(b"http://example.com/") == ("invalid", "invalid_url")


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "FILE://localhost/etc/passwd",
        "ftp://example.com/a.jpg",
        "data:image/png;base64,iVBORw0KGgo=",
        "gopher://127.0.0.1:6379/_INFO",
        "javascript:alert(1)",
        "dict://127.0.0.1:11211/stat",
        "ws://example.com/",
        "https+unix://x/",
        "jar:http://example.com/a.jar!/",
        "localhost:8080/img.jpg",
    ],
)
def test_only_http_and_https_are_allowed(url: str) -> None:
    assert failure(url) == ("blocked", "blocked_scheme")


def test_url_length_is_capped_on_input_and_after_encoding() -> None:
    assert failure("http://example.com/" + "a" * 5000) == ("invalid", "url_too_long")
    # 2,100 characters in, but 12,600 once percent-encoded.
    assert failure("http://example.com/" + "é" * 2100) == ("invalid", "url_too_long")
    assert parse_url("http://example.com/" + "a" * 100, max_length=200).url.endswith("a" * 100)


@pytest.mark.parametrize("address", FORBIDDEN)
def test_forbidden_addresses(address: str) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden_address(ipaddress.ip_address(address))


def test_policy_allow_list_is_exact() -> None:
    policy = AddressPolicy.from_config(FetchConfig(allowed_networks=("127.0.0.1/32",)))
    assert policy.permits(ipaddress.ip_address("127.0.0.1"))
    assert not policy.permits(ipaddress.ip_address("127.0.0.2"))
    assert not policy.permits(ipaddress.ip_address("::1"))
    assert AddressPolicy(allow_private=True).permits(ipaddress.ip_address("10.0.0.1"))


@pytest.mark.parametrize(
    "settings_",
    [{"client": "curl"}, {"allowed_networks": ("not-a-network",)}, {"total_timeout": 0}, {"max_bytes": -1}],
)
def test_bad_fetch_settings_are_config_errors(settings_: dict) -> None:
    with pytest.raises(ConfigError):
        FetchConfig(**settings_)


def test_user_agent_names_scanner_version_and_contact() -> None:
    assert FetchConfig().user_agent_header == "scanner/0.1.0 (dataset hygiene)"
    contact = FetchConfig(contact="https://example.org/contact").user_agent_header
    assert contact == "scanner/0.1.0 (+https://example.org/contact; dataset hygiene)"
    assert FetchConfig(user_agent="custom/1").user_agent_header == "custom/1"


# -- redirects -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/b?x=1", "http://example.com/b?x=1"),
        ("c.jpg", "http://example.com/a/c.jpg"),
        ("//other.example/x", "http://other.example/x"),
        ("\\\\other.example\\x", "http://other.example/x"),
        ("https://other.example:8443/", "https://other.example:8443/"),
        ("http://2130706433/", "http://127.0.0.1/"),
    ],
)
def test_redirect_locations_resolve_like_a_browser(location: str, expected: str) -> None:
    current = parse_url("http://example.com/a/b.jpg")
    assert redirect_target(current, location).url == expected


def test_bad_redirects() -> None:
    current = parse_url("http://example.com/")
    with pytest.raises(FetchFailure) as caught:
        redirect_target(current, "gopher://127.0.0.1/")
    assert (caught.value.outcome, caught.value.reason) == ("blocked", "blocked_scheme")
    with pytest.raises(FetchFailure) as caught:
        redirect_target(current, "http://[::1/")
    assert (caught.value.outcome, caught.value.reason) == ("dead", "invalid_redirect")


# -- resolution ------------------------------------------------------------------------------------------


def lookup_returning(*answers: str, calls: list[str] | None = None):
    async def lookup(host: str, port: int) -> Sequence[str]:
        if calls is not None:
            calls.append(host)
        return list(answers)

    return lookup


def resolve(host: str, lookup, policy: AddressPolicy | None = None, timeout: float = 1.0) -> list:
    return asyncio.run(resolve_checked(host, 80, policy or AddressPolicy(), timeout=timeout, lookup=lookup))


def resolve_failure(host: str, lookup, timeout: float = 1.0) -> tuple[str, str]:
    with pytest.raises(FetchFailure) as caught:
        resolve(host, lookup, timeout=timeout)
    return caught.value.outcome, caught.value.reason


def test_public_name_resolves_to_checked_addresses() -> None:
    addresses = resolve("img.example", lookup_returning("93.184.216.34", "93.184.216.34", "2606:4700::1111"))
    assert addresses == [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("2606:4700::1111")]


@pytest.mark.parametrize("private", ["10.0.0.1", "127.0.0.1", "::1", "fe80::1%2", "169.254.169.254"])
def test_one_private_answer_blocks_the_whole_name(private: str) -> None:
    lookup = lookup_returning("93.184.216.34", private)
    assert resolve_failure("mixed.example", lookup) == ("blocked", "blocked_private_address")


def test_lookup_failures_are_dead() -> None:
    async def gaierror(host: str, port: int) -> Sequence[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def slow(host: str, port: int) -> Sequence[str]:
        await asyncio.sleep(30)
        return ["93.184.216.34"]

    assert resolve_failure("nx.example", gaierror) == ("dead", "dns_failure")
    assert resolve_failure("empty.example", lookup_returning()) == ("dead", "dns_failure")
    assert resolve_failure("junk.example", lookup_returning("not-an-address")) == ("dead", "dns_failure")
    assert resolve_failure("slow.example", slow, timeout=0.05) == ("dead", "dns_timeout")


def test_ip_literals_are_checked_without_a_lookup() -> None:
    calls: list[str] = []
    lookup = lookup_returning("93.184.216.34", calls=calls)
    assert resolve_failure("127.0.0.1", lookup) == ("blocked", "blocked_private_address")
    assert resolve("8.8.8.8", lookup) == [ipaddress.ip_address("8.8.8.8")]
    assert calls == []


# -- real dataset URLs and fuzzing -------------------------------------------------------------------------


def assert_clients_agree(target: Target) -> None:
    """aiohttp (yarl) and httpx must read the canonical URL's host and port exactly as the guard did."""
    assert yarl.URL(target.url, encoded=True).raw_host == target.host
    assert yarl.URL(target.url, encoded=True).port == target.port
    assert httpx.URL(target.url).raw_host.decode("ascii") == target.host
    assert (httpx.URL(target.url).port or target.port) == target.port
    assert parse_url(target.url) == target
    if target.ip is None:
        with pytest.raises(OSError):
            socket.inet_aton(target.host)  # no legacy IPv4 spelling slips through as a "name"


def test_real_dataset_urls_parse_and_clients_agree(url_lists) -> None:
    urls = (url_lists / "test_10000.txt").read_text(encoding="utf-8").splitlines()
    refused = []
    for url in urls:
        try:
            assert_clients_agree(parse_url(url))
        except FetchFailure as failure_:
            refused.append((url, failure_.reason))
    assert refused == [("UNLIKELY", "invalid_url")]


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_target_or_a_reason(text: str) -> None:
    check_parse(text)


NUMBERS = st.sampled_from(
    ["127", "0", "1", "0x7f", "0X7F", "017", "0177", "00", "255", "256", "4294967295", "0x"]
)
WORDS = st.sampled_from(
    ["example", "com", "xn--bcher-kva", "bücher", "a_b", "-", "ß", "ı", "１", "%31", "%65"]
)
HOSTILE = st.sampled_from(
    ["%2e", "%", "[", "]", "::1", "::ffff:127.0.0.1", "@", ":", "\\", "/", "#", "?", " "]
)
LABEL_PIECES = st.one_of(
    NUMBERS, NUMBERS, WORDS, WORDS, HOSTILE, st.sampled_from(["\u200b", "%00", "%ff", "\x00"])
)
LABEL = st.lists(LABEL_PIECES, min_size=1, max_size=3).map("".join)


@st.composite
def url_like(draw) -> str:
    good_scheme = st.sampled_from(["http", "https", "HTTP", "hTtPs"])
    bad_scheme = st.sampled_from(["ftp", "file", "data", "gopher", "javascript", "", "http+unix"])
    scheme = draw(st.one_of(good_scheme, good_scheme, good_scheme, bad_scheme))
    slashes = draw(st.sampled_from(["://", ":", ":/", ":\\\\", ":///", "//"]))
    userinfo = draw(st.sampled_from(["", "", "user@", "a:b@", "good.com@", "@"]))
    separator = draw(st.sampled_from([".", ".", "。", "%2e", ".."]))
    host = separator.join(draw(st.lists(LABEL, min_size=1, max_size=5)))
    if draw(st.integers(0, 4)) == 0:
        host = f"[{host}]"
    if draw(st.booleans()):
        host += "."
    port = draw(st.sampled_from(["", "", ":80", ":0", ":65535", ":65536", ":", ":8o", ":08080"]))
    path = draw(st.text(max_size=20))
    return f"{scheme}{slashes}{userinfo}{host}{port}/{path}"


@settings(max_examples=1500, deadline=None)
@given(url_like())
def test_url_shaped_fuzz_gives_a_target_or_a_reason(url: str) -> None:
    check_parse(url)


def check_parse(url: str) -> None:
    try:
        target = parse_url(url)
    except FetchFailure as refusal:
        assert refusal.outcome in ("invalid", "blocked")
        assert refusal.reason in ("invalid_url", "empty_url", "url_too_long", "blocked_scheme")
        return
    assert target.scheme in ("http", "https")
    assert_clients_agree(target)

"""Both fetchers over real HTTP on loopback: every outcome and reason, limits, retries, SSRF, TLS, no disk."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from loopback import GZIP_PAYLOAD, LoopbackServer, self_signed, tiny_jpeg

from scanner.fetch import FetchConfig, FetchResult, make_fetcher
from scanner.fetch.guard import Lookup

REPO = Path(__file__).resolve().parents[1]
CLIENTS = ["aiohttp", "httpx"]
JPEG = tiny_jpeg()
FILES = {"/img.jpg": JPEG, "/blob": (b"\x00" * 5000, "application/octet-stream")}


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(FILES) as running:
        yield running


@pytest.fixture
def config(client: str) -> FetchConfig:
    """Loopback 127.0.0.1 allowed (and nothing else private), short deadlines, a 1 MB cap."""
    return FetchConfig(
        client=client,
        allowed_networks=("127.0.0.1/32",),
        connect_timeout=2.0,
        read_timeout=2.0,
        total_timeout=5.0,
        max_bytes=1_000_000,
        retry_backoff=0.01,
        max_retry_after=1.0,
    )


async def fetch_all(
    config: FetchConfig,
    urls: Sequence[str],
    lookup: Lookup | None = None,
    body_budget: int | None = None,
    **kwargs: object,
) -> list[FetchResult]:
    fetcher = make_fetcher(config, lookup=lookup, body_budget=body_budget)
    try:
        return list(await asyncio.gather(*(fetcher.fetch(url, **kwargs) for url in urls)))
    finally:
        await fetcher.aclose()


def fetch(config: FetchConfig, url: str, lookup: Lookup | None = None, **kwargs: object) -> FetchResult:
    return asyncio.run(fetch_all(config, [url], lookup, **kwargs))[0]


def names(table: Mapping[str, Sequence[str]], calls: list[str] | None = None) -> Lookup:
    """A resolver answering from a table (never the network)."""

    async def lookup(host: str, port: int) -> Sequence[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return lookup


def reason(result: FetchResult) -> tuple[str, str | None]:
    return result.outcome, result.reason


# -- successful fetches ----------------------------------------------------------------------------------


def test_fetches_image_into_memory_with_metadata(config: FetchConfig, server: LoopbackServer) -> None:
    before = time.time()
    result = fetch(config, server.url("/img.jpg"))
    assert reason(result) == ("ok", None)
    assert result.body == JPEG
    assert (result.status, result.content_type, result.content_length) == (200, "image/jpeg", len(JPEG))
    assert result.server_ip == "127.0.0.1"
    assert result.url == result.final_url == server.url("/img.jpg")
    assert result.etag and result.last_modified == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert before <= result.fetched_at <= time.time()


def test_request_headers_name_the_scanner(config: FetchConfig, server: LoopbackServer) -> None:
    config = replace(config, contact="https://example.org/contact")
    sent = json.loads(fetch(config, server.url("/echo-headers")).body or b"{}")["headers"]
    sent = {k.lower(): v for k, v in sent.items()}
    assert sent["user-agent"] == "scanner/0.1.0 (+https://example.org/contact; dataset hygiene)"
    assert sent["accept-encoding"] == "identity"
    assert sent["accept"] == "*/*"
    assert "cookie" not in sent


def test_transport_does_not_judge_content(config: FetchConfig, server: LoopbackServer) -> None:
    html, jpeg = asyncio.run(
        fetch_all(config, [server.url("/html-as-jpeg"), server.url("/jpeg-as-octet-stream")])
    )
    assert reason(html) == ("ok", None) and html.body is not None and html.body.startswith(b"<!doctype html>")
    assert reason(jpeg) == ("ok", None) and jpeg.body == JPEG
    assert jpeg.content_type == "application/octet-stream"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "rawdeflate"])
def test_content_encoded_bodies_are_decoded(
    config: FetchConfig, server: LoopbackServer, encoding: str
) -> None:
    result = fetch(config, server.url(f"/encoded/{encoding}"))
    assert reason(result) == ("ok", None)
    assert result.body == GZIP_PAYLOAD


def test_body_exactly_at_the_cap_is_accepted(config: FetchConfig, server: LoopbackServer) -> None:
    result = fetch(config, server.url(f"/huge?length={config.max_bytes}"))
    assert reason(result) == ("ok", None)
    assert result.body is not None and len(result.body) == config.max_bytes


def test_redirect_chain_is_followed(config: FetchConfig, server: LoopbackServer) -> None:
    result = fetch(config, server.url("/redirect/3"))
    assert reason(result) == ("ok", None)
    assert result.body == b"end of chain"
    assert result.final_url == server.url("/redirect/0")
    assert [path for _, path, _ in server.requests()] == [f"/redirect/{n}" for n in (3, 2, 1, 0)]


def test_head_liveness_check(config: FetchConfig, server: LoopbackServer) -> None:
    result = fetch(config, server.url("/img.jpg"), read_body=False)
    assert reason(result) == ("ok", None)
    assert (result.status, result.body, result.content_length) == (200, None, len(JPEG))
    assert [method for method, _, _ in server.requests()] == ["HEAD"]


def test_head_refused_falls_back_to_get_without_body(config: FetchConfig, server: LoopbackServer) -> None:
    result = fetch(config, server.url("/no-head"), read_body=False)
    assert reason(result) == ("ok", None)
    assert (result.status, result.body) == (200, None)
    assert [method for method, _, _ in server.requests()] == ["HEAD", "GET"]


@pytest.mark.parametrize("validator", ["If-None-Match", "If-Modified-Since"])
def test_conditional_request_gives_304_without_body(
    config: FetchConfig, server: LoopbackServer, validator: str
) -> None:
    first = fetch(config, server.url("/img.jpg"))
    value = first.etag if validator == "If-None-Match" else first.last_modified
    assert value is not None
    again = fetch(config, server.url("/img.jpg"), headers={validator: value})
    assert reason(again) == ("ok", None)
    assert (again.status, again.body, again.etag) == (304, None, first.etag)


# -- dead ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404, 410, 451, 500, 502, 300])
def test_error_statuses_are_dead(config: FetchConfig, server: LoopbackServer, status: int) -> None:
    result = fetch(config, server.url(f"/status/{status}"))
    assert reason(result) == ("dead", f"http_{status}")
    assert (result.status, result.body) == (status, None)
    assert server.total_hits == 1  # not retried


def test_too_many_redirects(config: FetchConfig, server: LoopbackServer) -> None:
    result = fetch(replace(config, max_redirects=5), server.url("/redirect/20"))
    assert reason(result) == ("dead", "too_many_redirects")
    assert server.hits("/redirect/20") == 1 and server.total_hits == 6  # the URL and 5 redirects


def test_redirect_loop(config: FetchConfig, server: LoopbackServer) -> None:
    result = fetch(config, server.url("/loop"))
    assert reason(result) == ("dead", "redirect_loop")
    assert server.total_hits == 2


def test_invalid_redirect(config: FetchConfig, server: LoopbackServer) -> None:
    result = fetch(config, server.url("/redirect-to?url=http://%5B::1/"))
    assert reason(result) == ("dead", "invalid_redirect")


def test_slow_server_hits_the_read_timeout(config: FetchConfig, server: LoopbackServer) -> None:
    result = fetch(replace(config, read_timeout=0.2), server.url("/slow?seconds=30"))
    assert reason(result) == ("dead", "read_timeout")


def test_trickling_server_is_cut_off_by_the_total_deadline(
    config: FetchConfig, server: LoopbackServer
) -> None:
    # Every byte arrives within the 2 s read timeout; only the total deadline can stop it.
    result = fetch(replace(config, total_timeout=0.5), server.url("/trickle"))
    assert reason(result) == ("dead", "timeout")
    assert (result.status, result.body) == (200, None)


def test_truncated_body(config: FetchConfig, server: LoopbackServer) -> None:
    result = fetch(config, server.url("/truncated"))
    assert reason(result) == ("invalid", "truncated_body")
    assert result.body is None


def test_connection_refused_is_not_retried(config: FetchConfig) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: nothing listens there
    result = fetch(config, f"http://127.0.0.1:{port}/img.jpg")
    assert reason(result) == ("dead", "connection_refused")


def test_unanswered_connect_hits_the_connect_timeout(config: FetchConfig) -> None:
    # A listener that never accepts, its backlog already full: the kernel drops our SYN, connect() hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
        try:
            result = fetch(
                replace(config, connect_timeout=0.2), f"http://127.0.0.1:{listener.getsockname()[1]}/"
            )
        finally:
            for filler in fillers:
                filler.close()
    assert reason(result) == ("dead", "connect_timeout")


def test_dns_failures(config: FetchConfig) -> None:
    async def never(host: str, port: int) -> Sequence[str]:
        await asyncio.sleep(30)
        return []

    assert reason(fetch(config, "http://nx.test/a.jpg", names({}))) == ("dead", "dns_failure")
    assert reason(fetch(replace(config, dns_timeout=0.05), "http://slow.test/", never)) == (
        "dead",
        "dns_timeout",
    )


# -- retries ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_then_succeeds(
    config: FetchConfig, server: LoopbackServer, status: int
) -> None:
    result = fetch(config, server.url(f"/retry-after?key=k&status={status}&seconds=0"))
    assert reason(result) == ("ok", None)
    assert result.body == b"served after retry"
    assert server.hits("/retry-after") == 2


def test_retry_after_beyond_the_cap_is_not_waited_for(config: FetchConfig, server: LoopbackServer) -> None:
    result = fetch(config, server.url("/retry-after?key=k&seconds=3600"))
    assert reason(result) == ("dead", "http_503")
    assert server.hits("/retry-after") == 1


def test_retries_are_bounded(config: FetchConfig, server: LoopbackServer) -> None:
    result = fetch(replace(config, max_retries=2), server.url("/retry-after?key=k&times=100"))
    assert reason(result) == ("dead", "http_503")
    assert server.hits("/retry-after") == 3


def test_connection_reset_is_retried(config: FetchConfig, server: LoopbackServer) -> None:
    result = fetch(config, server.url("/reset?key=k&times=1"))
    assert reason(result) == ("ok", None)
    assert result.body == b"served after reset"


def test_persistent_reset_gives_up(config: FetchConfig, server: LoopbackServer) -> None:
    result = fetch(replace(config, max_retries=2), server.url("/reset"))
    assert reason(result) == ("dead", "connection_reset")
    # aiohttp itself resends an idempotent request once on a dropped connection (RFC 9112 9.3.1).
    per_attempt = 2 if config.client == "aiohttp" else 1
    assert server.hits("/reset") == 3 * per_attempt


# -- invalid ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/huge", "/huge?length=5000000"])
def test_body_over_the_cap(config: FetchConfig, server: LoopbackServer, path: str) -> None:
    result = fetch(config, server.url(path))
    assert reason(result) == ("invalid", "body_too_large")
    assert result.body is None


def test_gzip_bomb(config: FetchConfig, server: LoopbackServer) -> None:
    # 1 GiB of zeros is ~1 MB gzipped: under a 2 MB cap on the wire, 500 times over it inflated.
    result = fetch(replace(config, max_bytes=2_000_000), server.url("/gzipbomb"))
    assert reason(result) == ("invalid", "decompression_bomb")
    assert result.body is None


@pytest.mark.parametrize(
    ("path", "why"),
    [("/encoded/bad", "bad_content_encoding"), ("/encoded/br", "unsupported_content_encoding")],
)
def test_unusable_content_encoding(config: FetchConfig, server: LoopbackServer, path: str, why: str) -> None:
    assert reason(fetch(config, server.url(path))) == ("invalid", why)


def test_a_reply_that_is_not_http(config: FetchConfig, server: LoopbackServer) -> None:
    assert reason(fetch(config, server.url("/not-http"))) == ("invalid", "bad_response")


@pytest.mark.parametrize("path", ["/headers-huge?size=20000", "/many-headers?count=500"])
def test_oversized_headers(config: FetchConfig, server: LoopbackServer, path: str) -> None:
    assert reason(fetch(config, server.url(path))) == ("invalid", "headers_too_large")


@pytest.mark.parametrize(
    ("url", "why"),
    [("", "empty_url"), ("not a url", "invalid_url"), ("http://127.0.0.1/" + "a" * 5000, "url_too_long")],
)
def test_bad_urls_never_reach_the_network(
    config: FetchConfig, server: LoopbackServer, url: str, why: str
) -> None:
    assert reason(fetch(config, url)) == ("invalid", why)
    assert server.total_hits == 0


# -- limits ----------------------------------------------------------------------------------------------


def test_per_host_limit_holds(config: FetchConfig, server: LoopbackServer) -> None:
    config = replace(config, max_per_host=2, max_in_flight=8)
    results = asyncio.run(fetch_all(config, [server.url(f"/slow?seconds=0.2&n={i}") for i in range(6)]))
    assert all(r.outcome == "ok" for r in results)
    assert server.peak_in_flight == 2


def test_global_limit_holds_across_hosts(config: FetchConfig, server: LoopbackServer) -> None:
    # Three names for the same server: the per-host limit alone would allow 6 at once.
    config = replace(config, max_per_host=2, max_in_flight=3)
    lookup = names({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"], "c.test": ["127.0.0.1"]})
    urls = [f"http://{h}.test:{server.port}/slow?seconds=0.2&n={i}" for h in "abc" for i in range(2)]
    results = asyncio.run(fetch_all(config, urls, lookup))
    assert all(r.outcome == "ok" for r in results)
    assert server.peak_in_flight == 3


# -- SSRF ------------------------------------------------------------------------------------------------

SPELLINGS = [
    "http://127.0.0.1:{port}/img.jpg",
    "http://2130706433:{port}/img.jpg",
    "http://0x7f.1:{port}/img.jpg",
    "http://017700000001:{port}/img.jpg",
    "http://127.1:{port}/img.jpg",
    "http://0177.0.0.1:{port}/img.jpg",
    "http://0x7f000001:{port}/img.jpg",
    "http://127.0.0.1.:{port}/img.jpg",
    "http://%31%32%37.0.0.1:{port}/img.jpg",
    "http://１２７.０.０.１:{port}/img.jpg",
    "http://127。0。0。1:{port}/img.jpg",
    "http://good.com@127.0.0.1:{port}/img.jpg",
    "http://[::ffff:127.0.0.1]:{port}/img.jpg",
    "http://[::ffff:7f00:1]:{port}/img.jpg",
    "http://[::1]:{port}/img.jpg",
    "http://[::]:{port}/img.jpg",
    "http://0.0.0.0:{port}/img.jpg",
    "http://0:{port}/img.jpg",
    "http://localhost:{port}/img.jpg",
    "http://LOCALHOST.:{port}/img.jpg",
    "http://loopback.test:{port}/img.jpg",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_default_policy_blocks_loopback_in_every_spelling(
    client: str, server: LoopbackServer, spelling: str
) -> None:
    url = spelling.format(port=server.port)
    lookup = names({"loopback.test": ["127.0.0.1"], "localhost": ["127.0.0.1", "::1"]})
    result = fetch(FetchConfig(client=client), url, lookup)
    assert reason(result) == ("blocked", "blocked_private_address")
    assert server.total_hits == 0


def test_system_resolver_names_are_checked_too(client: str, server: LoopbackServer) -> None:
    result = fetch(FetchConfig(client=client), f"http://localhost:{server.port}/img.jpg")
    assert reason(result) == ("blocked", "blocked_private_address")
    assert server.total_hits == 0


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://127.0.0.1/_x", "data:,x", "ftp://127.0.0.1/"]
)
def test_other_schemes_blocked_even_with_private_networks_allowed(client: str, url: str) -> None:
    result = fetch(FetchConfig(client=client, allow_private_networks=True), url)
    assert reason(result) == ("blocked", "blocked_scheme")


def test_allow_private_networks_lifts_only_the_address_check(client: str, server: LoopbackServer) -> None:
    config = FetchConfig(client=client, allow_private_networks=True)
    assert reason(fetch(config, f"http://127.1:{server.port}/img.jpg")) == ("ok", None)
    redirect = server.url("/redirect-to?url=file:///etc/passwd")
    assert reason(fetch(config, redirect)) == ("blocked", "blocked_scheme")


@pytest.fixture
def private_server(server: LoopbackServer) -> Iterator[LoopbackServer]:
    """A second server on 127.0.0.2, same port: loopback too, but outside the allow-list of `config`."""
    try:
        second = LoopbackServer(FILES, host="127.0.0.2", port=server.port)
    except OSError as exc:
        pytest.skip(f"cannot bind 127.0.0.2:{server.port} ({exc})")
    with second:
        yield second


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.2:{port}/img.jpg",
        "http://2130706434:{port}/img.jpg",
        "http://private.test:{port}/img.jpg",
    ],
)
def test_redirect_to_a_private_address_is_blocked(
    config: FetchConfig, server: LoopbackServer, private_server: LoopbackServer, location: str
) -> None:
    lookup = names({"private.test": ["127.0.0.2"]})
    url = server.url("/redirect-to?url=" + location.format(port=server.port))
    result = fetch(config, url, lookup)
    assert reason(result) == ("blocked", "blocked_private_address")
    assert server.hits("/redirect-to") == 1
    assert private_server.total_hits == 0
    # The control: allow 127.0.0.2 as well and the same redirect reaches it.
    allowed = replace(config, allowed_networks=("127.0.0.1/32", "127.0.0.2/32"))
    assert reason(fetch(allowed, url, lookup)) == ("ok", None)
    assert private_server.total_hits == 1


def test_a_name_with_any_private_answer_is_refused(
    config: FetchConfig, server: LoopbackServer, private_server: LoopbackServer
) -> None:
    lookup = names({"mixed.test": ["127.0.0.1", "127.0.0.2"]})
    result = fetch(config, f"http://mixed.test:{server.port}/img.jpg", lookup)
    assert reason(result) == ("blocked", "blocked_private_address")
    assert server.total_hits == private_server.total_hits == 0


def test_rebinding_dns_cannot_move_a_checked_connection(
    config: FetchConfig, server: LoopbackServer, private_server: LoopbackServer
) -> None:
    """A name answers an allowed address, then a private one: each answer is checked, and used as checked."""
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["127.0.0.2"]

    url = f"http://rebind.test:{server.port}/img.jpg"
    first = fetch(config, url, rebinding)
    second = fetch(config, url, rebinding)
    assert reason(first) == ("ok", None) and first.server_ip == "127.0.0.1"
    assert reason(second) == ("blocked", "blocked_private_address")
    assert calls == ["rebind.test", "rebind.test"]  # one lookup per fetch, never a second one to connect
    assert server.total_hits == 1 and private_server.total_hits == 0


# -- TLS -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for img.test, made with the openssl command."""
    return self_signed(tmp_path_factory.mktemp("tls"), "img.test", "DNS:img.test")


@pytest.fixture
def tls_server(certificate: tuple[str, str]) -> Iterator[LoopbackServer]:
    with LoopbackServer(FILES, tls=certificate) as running:
        yield running


def test_https_keeps_sni_and_host_while_connecting_to_the_checked_ip(
    config: FetchConfig, tls_server: LoopbackServer
) -> None:
    url = f"https://img.test:{tls_server.port}/img.jpg"
    result = fetch(replace(config, verify_tls=False), url, names({"img.test": ["127.0.0.1"]}))
    assert reason(result) == ("ok", None)
    assert result.body == JPEG and result.server_ip == "127.0.0.1"
    assert tls_server.sni_names == ["img.test"]
    assert tls_server.requests()[0][2]["Host"] == f"img.test:{tls_server.port}"


def test_untrusted_certificate_is_a_tls_error(config: FetchConfig, tls_server: LoopbackServer) -> None:
    url = f"https://img.test:{tls_server.port}/img.jpg"
    result = fetch(config, url, names({"img.test": ["127.0.0.1"]}))
    assert reason(result) == ("dead", "tls_error")
    assert tls_server.total_hits == 0


# -- nothing on disk -------------------------------------------------------------------------------------

NO_WRITES = textwrap.dedent(
    """
    import asyncio, os, sys
    writes = []

    def hook(event, args):
        if event == "open" and len(args) >= 3 and not isinstance(args[0], int):
            mode, flags = args[1], args[2]
            writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & writing
            ):
                writes.append(str(args[0]))

    from loopback import LoopbackServer, tiny_jpeg
    from scanner.fetch import FetchConfig, make_fetcher

    PATHS = ["/img.jpg", "/huge", "/gzipbomb", "/encoded/gzip", "/truncated", "/redirect/2", "/status/404"]

    async def main(server):
        for client in ("aiohttp", "httpx"):
            config = FetchConfig(client=client, allowed_networks=("127.0.0.1/32",), max_bytes=2_000_000)
            fetcher = make_fetcher(config)
            results = await asyncio.gather(*(fetcher.fetch(server.url(p)) for p in PATHS))
            await fetcher.aclose()
            assert results[0].body == tiny_jpeg(), results[0]

    with LoopbackServer({"/img.jpg": tiny_jpeg()}) as server:
        sys.addaudithook(hook)
        asyncio.run(main(server))
        open(os.devnull, "w").close()  # the control: proves the hook sees writes
    print("WRITES", writes)
    """
)


def test_fetching_writes_no_files() -> None:
    env = {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", NO_WRITES], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"WRITES {[os.devnull]}"

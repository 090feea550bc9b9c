"""Dead links are cheap: c-ares lookups behind a per-scan host cache, the connect-failure window and the body
budget, over real UDP DNS and real HTTP on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from loopback import LoopbackServer, tiny_jpeg
from test_fetch import fetch_all

from scanner.config import build_config
from scanner.fetch import FetchConfig, FetchResult, make_fetcher
from scanner.fetch.dns import AresLookup
from scanner.fetch.guard import Lookup
from scanner.runners.local import scan

JPEG = tiny_jpeg()


class LoopbackDNS:
    """A UDP nameserver on 127.0.0.1 that counts queries by name and never answers, or answers NXDOMAIN."""

    def __init__(self, nxdomain: bool = False) -> None:
        self.queries: Counter[str] = Counter()
        self._nxdomain = nxdomain
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except OSError:
                continue
            name, end = _question(data)
            self.queries[name] += 1
            if self._nxdomain:
                header = data[:2] + b"\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00"
                self._sock.sendto(header + data[12:end], peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def _question(query: bytes) -> tuple[str, int]:
    labels, at = [], 12
    while query[at]:
        labels.append(query[at + 1 : at + 1 + query[at]].decode())
        at += 1 + query[at]
    return ".".join(labels), at + 5


@pytest.fixture
def silent_dns() -> Iterator[LoopbackDNS]:
    dns = LoopbackDNS()
    yield dns
    dns.close()


@pytest.fixture
def nxdomain_dns() -> Iterator[LoopbackDNS]:
    dns = LoopbackDNS(nxdomain=True)
    yield dns
    dns.close()


@pytest.fixture
def config() -> FetchConfig:
    return FetchConfig(
        allowed_networks=("127.0.0.1/32",),
        connect_timeout=2.0,
        read_timeout=2.0,
        total_timeout=5.0,
        dns_timeout=0.5,
        max_bytes=1_000_000,
    )


def reasons(results: Sequence[FetchResult]) -> Counter[tuple[str, str | None]]:
    return Counter((str(r.outcome), r.reason) for r in results)


def ares(dns: LoopbackDNS) -> AresLookup:
    # tries=1 and a timeout past dns_timeout: c-ares sends each query once, so the server's count is lookups
    return AresLookup([dns.address], timeout=5.0, tries=1)


def test_a_silent_nameserver_is_asked_once_per_host_and_every_row_fails_in_one_timeout(
    config: FetchConfig, silent_dns: LoopbackDNS
) -> None:
    hosts = [f"h{i}.test" for i in range(30)]
    urls = [f"http://{host}/img{row}.jpg" for host in hosts for row in range(20)]  # 600 rows
    started = time.perf_counter()
    results = asyncio.run(fetch_all(config, urls, ares(silent_dns)))
    elapsed = time.perf_counter() - started
    assert reasons(results) == Counter({("dead", "dns_timeout"): 600})
    # c-ares asks A and AAAA: at most two queries per host, whatever its number of rows
    assert set(silent_dns.queries) == set(hosts)
    assert max(silent_dns.queries.values()) <= 2
    # every row waits on its host's one lookup at once: about one dns_timeout, not 600 / 64 of them
    assert elapsed < 3 * config.dns_timeout


def test_a_failed_lookup_is_remembered_for_the_hosts_later_rows(
    config: FetchConfig, nxdomain_dns: LoopbackDNS
) -> None:
    async def twice() -> tuple[list[FetchResult], list[FetchResult]]:
        fetcher = make_fetcher(config, lookup=ares(nxdomain_dns))
        try:
            first = [await fetcher.fetch("http://gone.test/a.jpg")]
            asked = sum(nxdomain_dns.queries.values())
            later = [await fetcher.fetch(f"http://gone.test/{i}.jpg") for i in range(5)]
            assert sum(nxdomain_dns.queries.values()) == asked  # the negative cache answered
            return first, later
        finally:
            await fetcher.aclose()

    first, later = asyncio.run(twice())
    assert reasons(first + later) == Counter({("dead", "dns_failure"): 6})
    assert nxdomain_dns.queries["gone.test"] >= 1


def test_a_negative_ttl_of_zero_asks_again(config: FetchConfig, nxdomain_dns: LoopbackDNS) -> None:
    config = replace(config, dns_negative_ttl=0)

    async def twice() -> None:
        fetcher = make_fetcher(config, lookup=ares(nxdomain_dns))
        try:
            for _ in range(3):
                await fetcher.fetch("http://gone.test/a.jpg")
        finally:
            await fetcher.aclose()

    asyncio.run(twice())
    assert nxdomain_dns.queries["gone.test"] >= 3


def counting(table: dict[str, Sequence[str]], calls: list[str], delay: float = 0.0) -> Lookup:
    async def lookup(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        await asyncio.sleep(delay)
        return table[host]

    return lookup


def test_concurrent_rows_of_one_host_share_one_lookup_and_later_rows_use_the_cache(
    config: FetchConfig,
) -> None:
    calls: list[str] = []
    with LoopbackServer({"/img.jpg": JPEG}) as server:
        lookup = counting({"img.test": ["127.0.0.1"]}, calls, delay=0.2)
        url = f"http://img.test:{server.port}/img.jpg"

        async def rounds() -> list[FetchResult]:
            fetcher = make_fetcher(config, lookup=lookup)
            try:
                first = await asyncio.gather(*(fetcher.fetch(url) for _ in range(20)))
                return [*first, await fetcher.fetch(url)]
            finally:
                await fetcher.aclose()

        results = asyncio.run(rounds())
        assert reasons(results) == Counter({("ok", None): 21})
        assert calls == ["img.test"]
        assert server.hits("/img.jpg") == 21


def test_a_private_answer_is_blocked_through_the_cache(config: FetchConfig) -> None:
    calls: list[str] = []
    with LoopbackServer({"/img.jpg": JPEG}, host="127.0.0.2") as private:
        lookup = counting({"inside.test": ["127.0.0.2"]}, calls)
        url = f"http://inside.test:{private.port}/img.jpg"
        results = asyncio.run(fetch_all(config, [url] * 5, lookup))
        assert reasons(results) == Counter({("blocked", "blocked_private_address"): 5})
        assert calls == ["inside.test"] and private.total_hits == 0


def test_a_rebind_after_the_ttl_is_checked_again(config: FetchConfig) -> None:
    """First answer allowed, later answers private: once the cached answer expires the new one is blocked."""
    ttl = 0.3
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["127.0.0.2"]

    with (
        LoopbackServer({"/img.jpg": JPEG}) as server,
        LoopbackServer({"/img.jpg": JPEG}, host="127.0.0.2") as private,
    ):
        url = f"http://rebind.test:{server.port}/img.jpg"

        async def run() -> list[FetchResult]:
            fetcher = make_fetcher(replace(config, dns_cache_ttl=ttl), lookup=rebinding)
            try:
                first = await fetcher.fetch(url)
                await asyncio.sleep(ttl + 0.05)
                return [first, await fetcher.fetch(url)]
            finally:
                await fetcher.aclose()

        first, second = asyncio.run(run())
        assert (first.outcome, first.server_ip) == ("ok", "127.0.0.1")
        assert (second.outcome, second.reason) == ("blocked", "blocked_private_address")
        assert len(calls) == 2 and private.total_hits == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_refused_host_is_not_connected_again_within_the_window(config: FetchConfig) -> None:
    """A row after a refusal fails the same way without a connect, until the window has passed."""
    port = free_port()
    url = f"http://down.test:{port}/img.jpg"
    config = replace(config, connect_failure_ttl=0.5)
    servers: list[LoopbackServer] = []

    async def run() -> list[FetchResult]:
        fetcher = make_fetcher(config, lookup=counting({"down.test": ["127.0.0.1"]}, []))
        try:
            first = await fetcher.fetch(url)  # nothing listens: refused
            servers.append(LoopbackServer({"/img.jpg": JPEG}, port=port).start())
            within = [await fetcher.fetch(url) for _ in range(3)]  # a server listens now, and is not asked
            await asyncio.sleep(0.6)
            return [first, *within, await fetcher.fetch(url)]
        finally:
            await fetcher.aclose()

    try:
        results = asyncio.run(run())
        assert [(r.outcome, r.reason) for r in results] == [("dead", "connection_refused")] * 4 + [
            ("ok", None)
        ]
        assert servers[0].hits("/img.jpg") == 1
    finally:
        for server in servers:
            server.stop()


def test_bodies_held_never_exceed_the_byte_budget_and_all_finish(config: FetchConfig) -> None:
    """Slow rows and big bodies together: bodies wait for room before their first byte, none deadlocks."""
    budget = 1_000_000
    with LoopbackServer() as server:
        big = [server.url(f"/huge?length=400000&i={i}") for i in range(8)]
        unknown = [server.url(f"/huge?length=0&i={i}") for i in range(2)]  # tiny, but Content-Length 0
        slow = [server.url(f"/slow?seconds=0.3&i={i}") for i in range(40)]

        async def run() -> tuple[list[FetchResult], int, int]:
            fetcher = make_fetcher(replace(config, max_per_host=64), body_budget=budget)
            held: list[FetchResult] = []

            async def fetch_and_hold(url: str) -> FetchResult:
                result = await fetcher.fetch(url)
                held.append(result)
                assert fetcher.body_budget is not None and fetcher.body_budget.held <= budget
                await asyncio.sleep(0.05)  # "hashing"
                result.release()
                return result

            try:
                results = await asyncio.gather(*(fetch_and_hold(u) for u in big + unknown + slow))
                assert fetcher.body_budget is not None
                return list(results), fetcher.body_budget.peak, fetcher.body_budget.held
            finally:
                await fetcher.aclose()

        results, peak, left = asyncio.run(run())
    assert reasons(results) == Counter({("ok", None): 50})
    assert 800_000 <= peak <= budget  # two big bodies at once, never three
    assert left == 0


def test_a_body_larger_than_the_budget_still_proceeds_alone(config: FetchConfig) -> None:
    async def run(url: str) -> list[int]:
        fetcher = make_fetcher(config, body_budget=100_000)

        async def one() -> int:
            result = await fetcher.fetch(url)
            size = len(result.body or b"")
            result.release()
            return size

        try:
            return list(await asyncio.gather(one(), one()))
        finally:
            await fetcher.aclose()

    with LoopbackServer() as server:
        assert asyncio.run(run(server.url("/huge?length=300000"))) == [300_000, 300_000]


def test_a_body_waiting_for_room_past_the_total_timeout_is_still_read(config: FetchConfig) -> None:
    """The server answered at once: the wait for the hashing to make room is not the server's slowness, so
    the row is fetched, not dead for a timeout (total_timeout 0.5 s, the room comes after 1.5 s)."""

    async def run(url: str) -> FetchResult:
        fetcher = make_fetcher(replace(config, total_timeout=0.5), body_budget=1_000_000, ready_bodies=1)
        try:
            first = await fetcher.fetch(url)  # read and waiting to be hashed: no room for another
            second = asyncio.ensure_future(fetcher.fetch(url))
            await asyncio.sleep(1.5)
            assert not second.done()
            first.release()  # hashed at last
            return await asyncio.wait_for(second, 5)
        finally:
            await fetcher.aclose()

    with LoopbackServer() as server:
        result = asyncio.run(run(server.url("/huge?length=1000")))
    assert (result.outcome, result.reason, len(result.body or b"")) == ("ok", None, 1000)


def test_a_failed_body_gives_its_room_back(config: FetchConfig) -> None:
    """A body cut short or over the cap releases its grant: later bodies are not starved."""

    async def run(server: LoopbackServer) -> tuple[list[FetchResult], int]:
        fetcher = make_fetcher(replace(config, max_bytes=50_000), body_budget=60_000)
        try:
            failed = [await fetcher.fetch(server.url(p)) for p in ("/truncated", "/huge?length=1")]
            failed.append(await fetcher.fetch(server.url("/huge")))  # endless: body_too_large
            assert fetcher.body_budget is not None
            return failed, fetcher.body_budget.held
        finally:
            await fetcher.aclose()

    with LoopbackServer() as server:
        results, held = asyncio.run(run(server))
    assert [r.reason for r in results] == ["truncated_body", None, "body_too_large"]
    assert held == 1  # only the one-byte body that succeeded and was never released


def test_a_scan_gives_each_body_back_once_hashed(tmp_path: Path) -> None:
    """A budget of one small body: every later body waits for the one before it to be hashed and released;
    a body never given back would leave the rest to time out."""
    paths = [f"/img{i}.jpg" for i in range(12)]
    with LoopbackServer(dict.fromkeys(paths, JPEG)) as server:
        shard = tmp_path / "s.csv"
        shard.write_text("url\n" + "".join(server.url(p) + "\n" for p in paths))
        (tmp_path / "l.txt").write_text("0" * 31 + "1\n")
        config = build_config(
            {
                "inputs": [str(shard)],
                "out": str(tmp_path / "out"),
                "hashlist": [f"md5:{tmp_path / 'l.txt'}"],
                "fetch": {"allowed_networks": ["127.0.0.1/32"], "total_timeout": 5.0},
                "run": {"workers": 1, "body_bytes_in_flight": max(1024, len(JPEG))},
            },
            "test",
        )
        result = scan(config)
    assert result.summary["outcomes"]["clean"] == 12


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
def test_a_body_cut_by_a_reset_and_retried_gives_back_the_first_attempts_room(
    config: FetchConfig, client: str
) -> None:
    """Each attempt's grant goes back before the next attempt reads: a leak would starve later bodies."""

    async def run(url: str) -> tuple[FetchResult, int]:
        retrying = replace(config, client=client, max_retries=2, retry_backoff=0.01)
        fetcher = make_fetcher(retrying, body_budget=1_000_000)
        try:
            result = await fetcher.fetch(url)
            result.release()
            assert fetcher.body_budget is not None
            return result, fetcher.body_budget.held
        finally:
            await fetcher.aclose()

    with LoopbackServer() as server:
        result, held = asyncio.run(run(server.url(f"/reset-body?key={client}&length=100000")))
        attempts = server.hits("/reset-body")
    # httpx reports the reset as connection_reset, which is retried; aiohttp as a truncated body, which is not
    assert (attempts, result.reason) == ((2, None) if client == "httpx" else (1, "truncated_body"))
    assert held == 0

"""Requests per second and client CPU per request: the aiohttp fetcher against the httpx fetcher.

    python benchmarks/bench_http_clients.py [--requests 3000] [--concurrency 64] [--body-kb 200] [--repeat 1]
    (after pip install -e ., or with PYTHONPATH=.)

The loopback server of loopback_server.py, in its own process, answers every GET with the same body over
keep-alive connections (a bare asyncio protocol, so the server costs as little as possible). The client
process fetches distinct URLs (one path, distinct query strings) with `concurrency` requests in flight and
we report its wall-clock rate and its CPU time (user + system, all threads) per request. Rows: both scanner
fetchers (guard, deadlines, caps included), and for scale the bare aiohttp session and bare httpx client
they are built on.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import aiohttp
import httpx
import loopback_server

from scanner.fetch import FetchConfig, make_fetcher

FetchOne = Callable[[str], Awaitable[bool]]


def body(size: int) -> bytes:
    """The one body every GET receives (its bytes do not matter to the clients, only its size)."""
    return bytes(range(256)) * (size // 256) + bytes(size % 256)


@dataclass
class Row:
    name: str
    requests: int
    ok: int
    seconds: float
    cpu_seconds: float

    def line(self) -> str:
        rate = self.requests / self.seconds
        cpu_ms = 1000 * self.cpu_seconds / self.requests
        return f"| {self.name:<26} | {self.requests:>8} | {self.ok:>6} | {rate:>8.0f} | {cpu_ms:>10.3f} |"


async def run(fetch_one: FetchOne, urls: list[str], concurrency: int) -> int:
    """Fetch every URL with `concurrency` workers; return how many came back complete."""
    queue = iter(urls)
    ok = 0

    async def worker() -> None:
        nonlocal ok
        for url in queue:
            complete = await fetch_one(url)
            ok += complete

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


async def measure(name: str, fetch_one: FetchOne, urls: list[str], concurrency: int) -> Row:
    await run(fetch_one, urls[: concurrency * 2], concurrency)  # warm up: open the connections
    cpu, wall = time.process_time(), time.perf_counter()
    ok = await run(fetch_one, urls, concurrency)
    return Row(name, len(urls), ok, time.perf_counter() - wall, time.process_time() - cpu)


async def scanner_fetcher(client: str, urls: list[str], concurrency: int, body_size: int) -> Row:
    config = FetchConfig(
        client=client, allowed_networks=("127.0.0.1/32",), max_in_flight=concurrency, max_per_host=concurrency
    )
    fetcher = make_fetcher(config)

    async def fetch_one(url: str) -> bool:
        result = await fetcher.fetch(url)
        return len(result.body or b"") == body_size

    try:
        return await measure(f"{client} fetcher", fetch_one, urls, concurrency)
    finally:
        await fetcher.aclose()


async def bare_aiohttp(urls: list[str], concurrency: int, body_size: int) -> Row:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch_one(url: str) -> bool:
            async with session.get(url) as response:
                return len(await response.read()) == body_size

        return await measure("aiohttp bare session", fetch_one, urls, concurrency)


async def bare_httpx(urls: list[str], concurrency: int, body_size: int) -> Row:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:

        async def fetch_one(url: str) -> bool:
            response = await client.get(url)
            return len(response.content) == body_size

        return await measure("httpx bare AsyncClient", fetch_one, urls, concurrency)


async def benchmark(port: int, args: argparse.Namespace) -> list[Row]:
    """Each row measured `repeat` times, rows interleaved; the run with least CPU is kept (as timeit does)."""
    urls = [f"http://127.0.0.1:{port}/img/0.jpg?i={i}" for i in range(args.requests)]
    size, n = args.body_kb * 1024, args.concurrency
    cases = [partial(scanner_fetcher, client) for client in ("aiohttp", "httpx")]
    if not args.no_baselines:
        cases += [bare_aiohttp, bare_httpx]
    runs = [[await case(urls, n, size) for case in cases] for _ in range(args.repeat)]
    return [min(measured, key=lambda row: row.cpu_seconds) for measured in zip(*runs, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--body-kb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="runs per row; the one with least CPU is shown")
    parser.add_argument("--no-baselines", action="store_true", help="only the two scanner fetchers")
    args = parser.parse_args()

    server, port = loopback_server.start([("jpg", body(args.body_kb * 1024))])
    try:
        rows = asyncio.run(benchmark(port, args))
    finally:
        server.terminate()
        server.join()

    print(f"{args.requests} GETs of {args.body_kb} KB, {args.concurrency} in flight, best of {args.repeat}")
    print(f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, httpx {httpx.__version__}")
    print("| client                     | requests |     ok |    req/s | CPU ms/req |")
    print("|----------------------------|---------:|-------:|---------:|-----------:|")
    for row in rows:
        print(row.line())


if __name__ == "__main__":
    main()

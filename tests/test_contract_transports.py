"""Every HTTP client behind make_fetcher passes TransportContract: one subclass per FetchConfig.client."""

from __future__ import annotations

from contracts import TransportContract

from scanner.fetch.base import CLIENTS


class TestAiohttp(TransportContract):
    client = "aiohttp"


class TestHttpx(TransportContract):
    client = "httpx"


def test_every_client_has_a_contract_subclass() -> None:
    covered = {cls.client for cls in TransportContract.__subclasses__()}
    assert covered == set(CLIENTS)

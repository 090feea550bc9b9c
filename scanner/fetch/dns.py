"""Name lookups for the guard: c-ares through aiodns (no getaddrinfo thread pool), behind a per-scan cache.

`AresLookup` asks the nameservers /etc/resolv.conf names, with its timeout and attempts, as c-ares reads
them. `HostCache` wraps any lookup: a host is looked up at most once per TTL, a failure is remembered too
(negative TTL), concurrent lookups of one host share one query, and `timeout` bounds that query's total
time. It caches answers, not decisions: the guard checks every address each time it is handed one.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiodns
import pycares

from scanner.fetch.base import FetchFailure
from scanner.fetch.guard import Lookup
from scanner.outcomes import FetchOutcome, FetchReason

Clock = Callable[[], float]


class AresLookup:
    """A Lookup through c-ares; the channel is made inside the running loop on first use. nameservers
    ("ip" or "ip:port") and options (c-ares channel options: timeout, tries) replace resolv.conf's."""

    def __init__(self, nameservers: Sequence[str] | None = None, **options: float) -> None:
        self._nameservers = list(nameservers) if nameservers else None
        self._options = options
        self._resolver: aiodns.DNSResolver | None = None

    async def __call__(self, host: str, port: int) -> list[str]:
        try:
            if self._resolver is None:  # a channel c-ares cannot make (no nameserver) fails its rows alike
                self._resolver = aiodns.DNSResolver(self._nameservers, **self._options)
            result = await self._resolver.getaddrinfo(host, port=port, type=socket.SOCK_STREAM)
        except aiodns.error.DNSError as exc:
            code = exc.args[0] if exc.args else None
            timed_out = code == pycares.errno.ARES_ETIMEOUT
            raise FetchFailure(
                FetchOutcome.DEAD, FetchReason.DNS_TIMEOUT if timed_out else FetchReason.DNS_FAILURE
            ) from None
        return [_text(node.addr[0]) for node in result.nodes]

    async def aclose(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None


def _text(address: bytes | str) -> str:
    return address.decode("ascii", "replace") if isinstance(address, bytes) else address


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float
    answers: tuple[str, ...] = ()
    failure: str | None = None  # the DNS reason of a remembered failure


class HostCache:
    """A bounded positive and negative cache with single flight over a Lookup, for one scan."""

    def __init__(
        self,
        lookup: Lookup,
        *,
        timeout: float,
        ttl: float,
        negative_ttl: float,
        max_hosts: int,
        clock: Clock = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._timeout = timeout
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_hosts = max_hosts
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._flights: dict[str, asyncio.Task[_Entry]] = {}
        self.queries = 0  # lookups actually sent, for tests and benchmarks

    async def __call__(self, host: str, port: int) -> list[str]:
        entry = self._cached(host)
        if entry is None:
            flight = self._flights.get(host)
            if flight is None:
                flight = self._flights[host] = asyncio.ensure_future(self._resolve(host, port))
            entry = await asyncio.shield(flight)  # a waiter's deadline must not cancel the shared query
        if entry.failure is not None:
            raise FetchFailure(FetchOutcome.DEAD, entry.failure)
        return list(entry.answers)

    async def aclose(self) -> None:
        for flight in list(self._flights.values()):
            flight.cancel()
        closer = getattr(self._lookup, "aclose", None)
        if closer is not None:
            await closer()

    def _cached(self, host: str) -> _Entry | None:
        entry = self._entries.get(host)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._entries[host]
            return None
        self._entries.move_to_end(host)
        return entry

    async def _resolve(self, host: str, port: int) -> _Entry:
        self.queries += 1
        try:
            answers = await asyncio.wait_for(self._lookup(host, port), self._timeout)
            entry = _Entry(self._clock() + self._ttl, tuple(answers))
        except asyncio.TimeoutError:
            entry = self._failed(FetchReason.DNS_TIMEOUT)
        except FetchFailure as failure:
            entry = self._failed(failure.reason)
        except (OSError, UnicodeError, ValueError):
            entry = self._failed(FetchReason.DNS_FAILURE)
        finally:
            self._flights.pop(host, None)
        self._remember(host, entry)
        return entry

    def _failed(self, reason: str) -> _Entry:
        return _Entry(self._clock() + self._negative_ttl, failure=reason)

    def _remember(self, host: str, entry: _Entry) -> None:
        if entry.expires <= self._clock():
            return  # a TTL of 0: no caching, single flight only
        self._entries[host] = entry
        self._entries.move_to_end(host)
        while len(self._entries) > self._max_hosts:
            self._entries.popitem(last=False)

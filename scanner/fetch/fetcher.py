"""The client-independent fetcher: guard, limits, total deadline, redirects, retries and the body cap.

A Transport (aiohttp or httpx) only opens one HTTP exchange to a canonical Target and turns its client's
errors into FetchFailure; everything that decides what a response means lives here, once, for both clients.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import importlib
import logging
import random
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from scanner.fetch.base import FetchConfig, FetchFailure, FetchResult, UrlScreen
from scanner.fetch.body import read_body
from scanner.fetch.budget import BodyBudget
from scanner.fetch.dns import AresLookup, HostCache
from scanner.fetch.guard import (
    AddressPolicy,
    Lookup,
    Target,
    check_address,
    parse_url,
    redirect_target,
    resolve_checked,
)
from scanner.outcomes import FetchOutcome, FetchReason, http_reason

logger = logging.getLogger(__name__)

if sys.version_info >= (3, 11):
    from asyncio import Timeout
    from asyncio import timeout as total_timeout

    def _deadline_of(timeout: Timeout) -> float | None:
        return timeout.when()
else:  # pragma: no cover - aiohttp depends on async-timeout before 3.11
    from async_timeout import Timeout
    from async_timeout import timeout as total_timeout

    def _deadline_of(timeout: Timeout) -> float | None:
        return timeout.deadline


# The running fetch's total timeout: a body waiting for room in the budget is not the server's slowness, so
# that wait moves the deadline on (a row's own task, so each fetch sees its own).
_TOTAL: contextvars.ContextVar[Timeout | None] = contextvars.ContextVar("total_timeout", default=None)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({429, 503})
HEAD_REFUSED_STATUSES = frozenset({405, 501})
# A connect that failed this way fails the host's next rows too, for connect_failure_ttl.
UNREACHABLE_REASONS = frozenset(
    {FetchReason.CONNECTION_REFUSED, FetchReason.CONNECT_TIMEOUT, FetchReason.CONNECTION_FAILED}
)


class Exchange(Protocol):
    """One open HTTP response: status and headers read, body not yet."""

    status: int
    headers: Mapping[str, str]
    server_ip: str | None

    def chunks(self) -> AsyncIterator[bytes]:
        """The raw (still content-encoded) body, chunk by chunk."""
        ...


class Transport(Protocol):
    """An HTTP client adapter that connects only to addresses the guard checked."""

    def exchange(
        self, target: Target, method: str, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[Exchange]:
        """Send one request (no redirect following); client errors surface as FetchFailure."""
        ...

    async def aclose(self) -> None: ...


class GuardedFetcher:
    """The Fetcher: every URL guarded, limited, deadlined and capped the same way whatever the transport."""

    def __init__(
        self,
        config: FetchConfig,
        transport: Transport,
        lookup: Lookup | None = None,
        body_budget: BodyBudget | None = None,
    ) -> None:
        self.config = config
        self.policy = AddressPolicy.from_config(config)
        self._transport = transport
        self._lookup = lookup  # the transport's (cached) lookup: a name is resolved before a slot is taken
        self.body_budget = body_budget
        self._unreachable = Unreachable(config.connect_failure_ttl, config.dns_cache_size)
        self._in_flight = asyncio.Semaphore(config.max_in_flight)
        self._hosts = _HostSlots(config.max_per_host)
        self._headers = {
            "User-Agent": config.user_agent_header,
            # */* rather than image/webp etc.: content negotiation must not swap the bytes we hash.
            "Accept": "*/*",
            "Accept-Encoding": "identity",
        }

    async def fetch(
        self,
        url: str | None,
        *,
        read_body: bool = True,
        headers: Mapping[str, str] | None = None,
        screen: UrlScreen | None = None,
    ) -> FetchResult:
        """Fetch one URL into memory; a per-URL failure is an outcome with a reason, never an exception."""
        result = FetchResult(url=url, fetched_at=time.time())
        try:
            target = parse_url(url, self.config.max_url_length)
            result.final_url = target.url
            if target.ip is not None:
                check_address(target.ip, self.policy)
            _screen(screen, target.url)
            await self._before_slot(target)
        except FetchFailure as failure:
            return _failed(result, failure)
        try:
            await self._fetch_in_slot(target, result, read_body, headers, screen)
        except BaseException:
            result.release()
            raise
        if result.body is None:
            result.release()  # only a body holds room in the budget: the caller releases it once hashed
        return result

    async def _before_slot(self, target: Target) -> None:
        """What fails a URL without a connection: a host known unreachable, a name that does not resolve or
        resolves to a refused address. Thousands of rows may wait here at once: no slot is held."""
        self._unreachable.check(target)
        if target.ip is None and self._lookup is not None:
            config = self.config
            await resolve_checked(
                target.host, target.port, self.policy, timeout=config.dns_timeout, lookup=self._lookup
            )

    async def _fetch_in_slot(
        self,
        target: Target,
        result: FetchResult,
        read_body: bool,
        headers: Mapping[str, str] | None,
        screen: UrlScreen | None,
    ) -> None:
        async with self._hosts.slot(target.host), self._in_flight:
            result.fetched_at = time.time()
            try:
                async with total_timeout(self.config.total_timeout) as timeout:
                    token = _TOTAL.set(timeout)
                    try:
                        await self._follow(target, result, read_body, headers, screen)
                    finally:
                        _TOTAL.reset(token)
            except asyncio.TimeoutError:
                _failed(result, FetchFailure(FetchOutcome.DEAD, FetchReason.TIMEOUT))
            except FetchFailure as failure:
                _failed(result, failure)
            except Exception:
                logger.exception("unexpected error fetching %s", target.url)
                _failed(result, FetchFailure(FetchOutcome.DEAD, FetchReason.CLIENT_ERROR))

    async def aclose(self) -> None:
        """Close the transport's connections and the resolver."""
        await self._transport.aclose()
        closer = getattr(self._lookup, "aclose", None)
        if closer is not None:
            await closer()

    async def _follow(
        self,
        target: Target,
        result: FetchResult,
        read_body: bool,
        extra: Mapping[str, str] | None,
        screen: UrlScreen | None,
    ) -> None:
        """Request target and follow redirects ourselves, re-guarding (and re-screening) every hop."""
        headers = {**self._headers, **(extra or {})}
        method = "GET" if read_body else "HEAD"
        seen = {target.url}
        while True:
            location = await self._with_retries(target, method, headers, read_body, result)
            if method == "HEAD" and result.status in HEAD_REFUSED_STATUSES:
                method = "GET"  # some servers refuse HEAD; a GET whose body is left unread answers the same
                continue
            if location is None:
                return
            target = redirect_target(target, location, self.config.max_url_length)
            result.final_url = target.url
            _screen(screen, target.url)
            if target.url in seen:
                raise FetchFailure(FetchOutcome.DEAD, FetchReason.REDIRECT_LOOP)
            if len(seen) > self.config.max_redirects:
                raise FetchFailure(FetchOutcome.DEAD, FetchReason.TOO_MANY_REDIRECTS)
            seen.add(target.url)
            if target.ip is not None:
                check_address(target.ip, self.policy)

    async def _with_retries(
        self, target: Target, method: str, headers: dict[str, str], read_body: bool, result: FetchResult
    ) -> str | None:
        """One hop, retried with backoff only for transient failures (reset, 429, 503)."""
        attempt = 0
        while True:
            try:
                return await self._hop(target, method, headers, read_body, result)
            except FetchFailure as failure:
                if not failure.retryable or attempt >= self.config.max_retries:
                    raise
                delay = failure.retry_after
                if delay is None:
                    delay = self.config.retry_backoff * 2**attempt * random.uniform(0.5, 1.5)
                await asyncio.sleep(min(delay, self.config.max_retry_after))
                attempt += 1

    async def _hop(
        self, target: Target, method: str, headers: dict[str, str], read_body: bool, result: FetchResult
    ) -> str | None:
        """Send one request and record its response; return the Location to follow, if any."""
        _clear_response(result)
        self._unreachable.check(target)
        try:
            return await self._exchange(target, method, headers, read_body, result)
        except FetchFailure as failure:
            self._unreachable.note(target, failure)
            raise

    async def _exchange(
        self, target: Target, method: str, headers: dict[str, str], read_body: bool, result: FetchResult
    ) -> str | None:
        async with self._transport.exchange(target, method, headers) as response:
            _record(result, response)
            status = response.status
            location = response.headers.get("Location")
            if status in REDIRECT_STATUSES and location:
                return location
            if status == 304 or (method == "HEAD" and (status in HEAD_REFUSED_STATUSES or status < 300)):
                return None
            if 200 <= status < 300 and not read_body:
                return None
            if 200 <= status < 300:
                await self._read_body(response, result)
                return None
            raise self._status_failure(status, response.headers)

    async def _read_body(self, response: Exchange, result: FetchResult) -> None:
        """The body under the cap, read only once the budget has room for it: the total timeout stops
        while it waits (the hashing is slow, not the server)."""
        cap = self.config.max_bytes
        if self.body_budget is not None:
            declared = _int_or_none(response.headers.get("Content-Length"))
            encoded = (response.headers.get("Content-Encoding") or "identity").strip().lower() != "identity"
            need = cap if declared is None or encoded else min(declared, cap)
            with _total_timeout_paused():
                result.grant = await self.body_budget.acquire(need)
        result.body = await read_body_of(response, cap)
        result.content_length = len(result.body)
        if result.grant is not None:
            result.grant.shrink(len(result.body))

    def _status_failure(self, status: int, headers: Mapping[str, str]) -> FetchFailure:
        if status not in RETRY_STATUSES:
            return FetchFailure(FetchOutcome.DEAD, http_reason(status))
        wait = retry_after_seconds(headers.get("Retry-After"))
        retryable = wait is None or wait <= self.config.max_retry_after
        return FetchFailure(FetchOutcome.DEAD, http_reason(status), retryable=retryable, retry_after=wait)


async def read_body_of(response: Exchange, cap: int) -> bytes:
    """The response body under the cap, decoded if the server content-encoded it anyway."""
    return await read_body(
        response.chunks(),
        cap=cap,
        declared_length=_int_or_none(response.headers.get("Content-Length")),
        encoding=response.headers.get("Content-Encoding"),
    )


@contextmanager
def _total_timeout_paused() -> Iterator[None]:
    """Stop the running fetch's total timeout for the block, and move its deadline on by the time spent."""
    timeout = _TOTAL.get()
    deadline = None if timeout is None else _deadline_of(timeout)
    if timeout is None or deadline is None:
        yield
        return
    loop = asyncio.get_running_loop()
    started = loop.time()
    timeout.reschedule(None)
    try:
        yield
    finally:
        timeout.reschedule(deadline + loop.time() - started)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or HTTP-date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _record(result: FetchResult, response: Exchange) -> None:
    headers = response.headers
    result.status = response.status
    result.server_ip = response.server_ip
    result.content_type = _text(headers.get("Content-Type"))
    result.content_length = _int_or_none(headers.get("Content-Length"))
    result.etag = _text(headers.get("ETag"))
    result.last_modified = _text(headers.get("Last-Modified"))


def _text(value: str | None) -> str | None:
    """A header value as text the reports can hold: bytes that are not UTF-8 (which aiohttp keeps as lone
    surrogates) become replacement characters instead of failing the report write."""
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _clear_response(result: FetchResult) -> None:
    result.release()  # an earlier attempt's room in the body budget (a retried reset mid-body)
    result.status = result.server_ip = result.content_type = result.content_length = None
    result.etag = result.last_modified = result.body = None


def _screen(screen: UrlScreen | None, url: str) -> None:
    """Refuse a URL the caller's screen names: it is never requested, not even as a redirect target."""
    reason = screen(url) if screen is not None else None
    if reason:
        raise FetchFailure(FetchOutcome.BLOCKED, reason)


def _failed(result: FetchResult, failure: FetchFailure) -> FetchResult:
    result.outcome, result.reason, result.body = failure.outcome, failure.reason, None
    result.release()
    return result


def _int_or_none(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) < 20 else None


@dataclass(slots=True)
class _HostSlot:
    semaphore: asyncio.Semaphore
    users: int = 0


class _HostSlots:
    """Per-host in-flight limit; a host's semaphore lives only while it has requests waiting or running."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, _HostSlot] = {}

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        entry = self._slots.get(host)
        if entry is None:
            entry = self._slots[host] = _HostSlot(asyncio.Semaphore(self._limit))
        entry.users += 1
        try:
            async with entry.semaphore:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._slots[host]


class Unreachable:
    """Host:ports whose connect was refused or timed out lately: their next rows fail with the same reason
    without a connect, for ttl seconds. Bounded: the least recently failed are forgotten first."""

    def __init__(self, ttl: float, max_hosts: int) -> None:
        self._ttl = ttl
        self._max_hosts = max_hosts
        self._failed: OrderedDict[tuple[str, int], tuple[float, str]] = OrderedDict()

    def check(self, target: Target) -> None:
        key = (target.host, target.port)
        entry = self._failed.get(key)
        if entry is None:
            return
        if entry[0] <= time.monotonic():
            del self._failed[key]
            return
        raise FetchFailure(FetchOutcome.DEAD, entry[1])

    def note(self, target: Target, failure: FetchFailure) -> None:
        if self._ttl <= 0 or failure.reason not in UNREACHABLE_REASONS:
            return
        key = (target.host, target.port)
        self._failed[key] = (time.monotonic() + self._ttl, failure.reason)
        self._failed.move_to_end(key)
        while len(self._failed) > self._max_hosts:
            self._failed.popitem(last=False)


def make_fetcher(
    config: FetchConfig | None = None,
    *,
    lookup: Lookup | None = None,
    body_budget: int | None = None,
    ready_bodies: int | None = None,
) -> GuardedFetcher:
    """The fetcher config.client names; lookup replaces the c-ares resolver (tests, custom DNS); either is
    cached per fetcher. body_budget bounds the bytes of bodies read and not yet released
    (FetchResult.release); ready_bodies, the bodies read and waiting (budget.py)."""
    config = config or FetchConfig()
    policy = AddressPolicy.from_config(config)
    cached = HostCache(
        lookup or AresLookup(),
        timeout=config.dns_timeout,
        ttl=config.dns_cache_ttl,
        negative_ttl=config.dns_negative_ttl,
        max_hosts=config.dns_cache_size,
    )
    budget = BodyBudget(body_budget, ready_bodies) if body_budget else None
    transport = transport_class(config.client)(config, policy, cached)
    return GuardedFetcher(config, transport, cached, budget)


# Each fetch.client's transport, imported when first asked for: only the client a scan uses is loaded
# (aiohttp or httpx), and a unit worker asks first thing, before its lists arrive.
TRANSPORTS = {
    "aiohttp": ("scanner.fetch.client", "AiohttpTransport"),
    "httpx": ("scanner.fetch.httpx_client", "HttpxTransport"),
}


def transport_class(client: str) -> Any:
    """The transport class of fetch.client `client`, its module imported now."""
    module, name = TRANSPORTS[client]
    return getattr(importlib.import_module(module), name)

"""The client-independent fetcher: guard, limits, total deadline, redirects, retries and the body cap.

A Transport (aiohttp or httpx) only opens one HTTP exchange to a canonical Target and turns its client's
errors into FetchFailure; everything that decides what a response means lives here, once, for both clients.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from scanner.fetch.base import FetchConfig, FetchFailure, FetchResult, UrlScreen
from scanner.fetch.body import read_body
from scanner.fetch.guard import AddressPolicy, Lookup, Target, check_address, parse_url, redirect_target
from scanner.outcomes import FetchOutcome, FetchReason, http_reason

logger = logging.getLogger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({429, 503})
HEAD_REFUSED_STATUSES = frozenset({405, 501})


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

    def __init__(self, config: FetchConfig, transport: Transport) -> None:
        self.config = config
        self.policy = AddressPolicy.from_config(config)
        self._transport = transport
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
        except FetchFailure as failure:
            return _failed(result, failure)
        async with self._hosts.slot(target.host), self._in_flight:
            result.fetched_at = time.time()
            try:
                await asyncio.wait_for(
                    self._follow(target, result, read_body, headers, screen), self.config.total_timeout
                )
            except asyncio.TimeoutError:
                _failed(result, FetchFailure(FetchOutcome.DEAD, FetchReason.TIMEOUT))
            except FetchFailure as failure:
                _failed(result, failure)
            except Exception:
                logger.exception("unexpected error fetching %s", target.url)
                _failed(result, FetchFailure(FetchOutcome.DEAD, FetchReason.CLIENT_ERROR))
        return result

    async def aclose(self) -> None:
        """Close the transport's connections."""
        await self._transport.aclose()

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
                result.body = await read_body_of(response, self.config.max_bytes)
                result.content_length = len(result.body)
                return None
            raise self._status_failure(status, response.headers)

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
    result.status = result.server_ip = result.content_type = result.content_length = None
    result.etag = result.last_modified = result.body = None


def _screen(screen: UrlScreen | None, url: str) -> None:
    """Refuse a URL the caller's screen names: it is never requested, not even as a redirect target."""
    reason = screen(url) if screen is not None else None
    if reason:
        raise FetchFailure(FetchOutcome.BLOCKED, reason)


def _failed(result: FetchResult, failure: FetchFailure) -> FetchResult:
    result.outcome, result.reason, result.body = failure.outcome, failure.reason, None
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


def make_fetcher(config: FetchConfig | None = None, *, lookup: Lookup | None = None) -> GuardedFetcher:
    """The fetcher config.client names; lookup replaces the system resolver (tests, custom DNS)."""
    config = config or FetchConfig()
    policy = AddressPolicy.from_config(config)
    # Imported here for start-up cost: only the client a scan uses is loaded (aiohttp or httpx).
    if config.client == "httpx":
        from scanner.fetch.httpx_client import HttpxTransport

        return GuardedFetcher(config, HttpxTransport(config, policy, lookup))
    from scanner.fetch.client import AiohttpTransport

    return GuardedFetcher(config, AiohttpTransport(config, policy, lookup))

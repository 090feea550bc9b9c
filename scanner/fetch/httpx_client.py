"""The same transport on httpx, selected with FetchConfig.client = "httpx".

httpx has no resolver hook, so the guard sits one layer down: httpcore's connection pool is given a network
backend whose connect_tcp resolves and checks the host (`resolve_checked`) and opens the socket to a checked
IP. httpcore still takes the Host header and the TLS SNI/certificate name from the URL, so https works
unchanged. Differences from the aiohttp transport: no per-host connection cap below the fetcher's own per-host
limit, and while reading, headers are bounded only by h11's fixed 100 KB buffer (httpcore does not expose
it); max_header_size and max_headers are applied once the headers are in.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpcore
import httpx

from scanner.fetch.base import FetchConfig, FetchFailure
from scanner.fetch.errors import RESET_ERRNOS, ByCause, ByErrno, ByMessage, ExceptionTable, translate
from scanner.fetch.guard import AddressPolicy, Lookup, Target, resolve_checked, system_lookup
from scanner.outcomes import FetchOutcome, FetchReason

_CLIENT_ERRORS = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    OSError,
)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore backend that connects only to addresses `resolve_checked` returned for the host."""

    def __init__(self, policy: AddressPolicy, dns_timeout: float, lookup: Lookup | None = None) -> None:
        self._policy = policy
        self._dns_timeout = dns_timeout
        self._lookup = lookup or system_lookup
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_checked(
            host, port, self._policy, timeout=self._dns_timeout, lookup=self._lookup
        )
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PoolTransport(httpx.AsyncBaseTransport):
    """httpx transport over an httpcore pool we built (httpx's own does not take a network backend)."""

    def __init__(self, pool: httpcore.AsyncConnectionPool) -> None:
        self._pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        response = await self._pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_CoreStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class _CoreStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


class _HttpxExchange:
    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers
        self.server_ip = _server_ip(response)
        self._response = response

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.aiter_raw()


class HttpxTransport:
    """Transport on one httpx.AsyncClient whose connections go through GuardedNetworkBackend."""

    def __init__(self, config: FetchConfig, policy: AddressPolicy, lookup: Lookup | None = None) -> None:
        self._config = config
        pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(config.verify_tls),
            max_connections=config.max_in_flight,
            max_keepalive_connections=config.max_in_flight,
            keepalive_expiry=15.0,
            network_backend=GuardedNetworkBackend(policy, config.dns_timeout, lookup),
        )
        self._client = httpx.AsyncClient(
            transport=_PoolTransport(pool),
            timeout=httpx.Timeout(
                connect=config.connect_timeout or None,
                read=config.read_timeout or None,
                write=config.read_timeout or None,
                pool=None,
            ),
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),  # store no cookies
            follow_redirects=False,
            trust_env=False,  # no proxies or .netrc from the environment
        )

    @asynccontextmanager
    async def exchange(
        self, target: Target, method: str, headers: Mapping[str, str]
    ) -> AsyncIterator[_HttpxExchange]:
        try:
            request = self._client.build_request(method, target.url, headers=headers)
            response = await self._client.send(request, stream=True)
            try:
                self._check_headers(response.headers.raw)
                yield _HttpxExchange(response)
            finally:
                await response.aclose()
        except FetchFailure:
            raise
        except _CLIENT_ERRORS as exc:
            raise httpx_failure(exc) from exc

    async def aclose(self) -> None:
        await self._client.aclose()

    def _check_headers(self, raw: list[tuple[bytes, bytes]]) -> None:
        """The same header limits aiohttp applies while parsing."""
        longest = max((len(name) + len(value) for name, value in raw), default=0)
        if len(raw) > self._config.max_headers or longest > self._config.max_header_size:
            raise FetchFailure(FetchOutcome.INVALID, FetchReason.HEADERS_TOO_LARGE)


HTTPX_ERRORS: ExceptionTable = (
    # the exception httpx or httpcore raised (our pool transport hands httpcore's through unmapped), most
    # specific first; fetch/errors.py walks it
    (BaseException, ByCause(((ssl.SSLError, (), FetchReason.TLS_ERROR),))),  # under ConnectError or ReadError
    ((httpcore.ConnectTimeout, httpx.ConnectTimeout), FetchReason.CONNECT_TIMEOUT),
    ((httpcore.TimeoutException, httpx.TimeoutException), FetchReason.READ_TIMEOUT),
    (
        (httpcore.ConnectError, httpx.ConnectError),
        ByCause(
            ((ConnectionRefusedError, (), FetchReason.CONNECTION_REFUSED),),
            default=FetchReason.CONNECTION_FAILED,
        ),
    ),
    (BaseException, ByErrno(RESET_ERRNOS)),  # a dropped connection, under whatever httpcore raised for it
    (
        (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
        ByMessage(
            (
                (("location header",), FetchReason.INVALID_REDIRECT),  # httpx reads it, never follows
                (("without sending", "response"), FetchReason.CONNECTION_RESET),
                (("incomplete",), FetchReason.TRUNCATED_BODY),
                (("complete message body",), FetchReason.TRUNCATED_BODY),
                (("too long",), FetchReason.HEADERS_TOO_LARGE),
                (("too large",), FetchReason.HEADERS_TOO_LARGE),
            ),
            default=FetchReason.BAD_RESPONSE,
        ),
    ),
    (httpx.InvalidURL, FetchReason.INVALID_URL),
)
"""httpx's and httpcore's exceptions -> reasons, walked by fetch.errors.translate (as HTTPCORE_EXC_MAP)."""


def httpx_failure(exc: BaseException) -> FetchFailure:
    """The outcome and reason for an httpx or httpcore error."""
    return translate(exc, HTTPX_ERRORS)


def _ssl_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _server_ip(response: httpx.Response) -> str | None:
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    return str(peer[0]) if peer else None

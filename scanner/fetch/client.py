"""The production transport on aiohttp: one session, a resolver that returns only checked addresses.

aiohttp costs about a tenth of httpx's CPU per request here (benchmarks/bench_http_clients.py). The connector
asks `GuardedResolver` for addresses and connects to exactly those, so a name is checked and connected to
from one lookup; IP literals never reach a resolver, and the fetcher checks them before calling us.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import Connection
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from yarl import URL

from scanner.fetch.base import FetchConfig, FetchFailure
from scanner.fetch.errors import REFUSED_ERRNOS, RESET_ERRNOS, ByCause, ByErrno, ExceptionTable, translate
from scanner.fetch.guard import AddressPolicy, Lookup, Target, resolve_checked, system_lookup
from scanner.outcomes import FetchReason


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that looks a name up once and returns only addresses the policy permits."""

    def __init__(self, policy: AddressPolicy, timeout: float, lookup: Lookup | None = None) -> None:
        self._policy = policy
        self._timeout = timeout
        self._lookup = lookup or system_lookup

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await resolve_checked(
            host, port, self._policy, timeout=self._timeout, lookup=self._lookup
        )
        return [
            ResolveResult(
                hostname=host,
                host=str(ip),
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in addresses
        ]

    async def close(self) -> None:
        """Nothing to release: lookups run on the event loop's executor."""


class _AiohttpExchange:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self.server_ip = getattr(response, "peer_ip", None)
        self._response = response

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk


class AiohttpTransport:
    """Transport on one shared aiohttp ClientSession, created lazily inside the running loop."""

    def __init__(self, config: FetchConfig, policy: AddressPolicy, lookup: Lookup | None = None) -> None:
        self._config = config
        self._resolver = GuardedResolver(policy, config.dns_timeout, lookup)
        self._session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def exchange(
        self, target: Target, method: str, headers: Mapping[str, str]
    ) -> AsyncIterator[_AiohttpExchange]:
        session = self._session or self._open_session()
        try:
            async with session.request(
                method, URL(target.url, encoded=True), headers=headers, allow_redirects=False
            ) as response:
                yield _AiohttpExchange(response)
        except FetchFailure:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise aiohttp_failure(exc) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _open_session(self) -> aiohttp.ClientSession:
        config = self._config
        connector = aiohttp.TCPConnector(
            limit=config.max_in_flight,
            limit_per_host=config.max_per_host,
            resolver=self._resolver,
            ssl=None if config.verify_tls else False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=config.connect_timeout or None, sock_read=config.read_timeout or None
            ),
            auto_decompress=False,  # body.py inflates under the byte cap instead
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # no proxies or .netrc from the environment
            max_line_size=config.max_header_size,
            max_field_size=config.max_header_size,
            max_headers=config.max_headers,
            response_class=_PeerRecordingResponse,
        )
        return self._session


AIOHTTP_ERRORS: ExceptionTable = (
    # the exception aiohttp raised, most specific first (ClientSSLError is a ClientConnectorError,
    # ConnectionTimeoutError a TimeoutError); fetch/errors.py walks it
    ((aiohttp.ClientSSLError, ssl.SSLError), FetchReason.TLS_ERROR),
    (aiohttp.ConnectionTimeoutError, FetchReason.CONNECT_TIMEOUT),  # sock_connect
    (asyncio.TimeoutError, FetchReason.READ_TIMEOUT),  # sock_read (SocketTimeoutError)
    (aiohttp.ServerDisconnectedError, FetchReason.CONNECTION_RESET),
    (aiohttp.ClientPayloadError, FetchReason.TRUNCATED_BODY),
    (
        aiohttp.ClientResponseError,  # the response could not be parsed: the parser's error says why
        ByCause(
            (
                (LineTooLong, (), FetchReason.HEADERS_TOO_LARGE),  # max_line_size, max_field_size
                (BadHttpMessage, ("too many headers",), FetchReason.HEADERS_TOO_LARGE),  # max_headers
            ),
            default=FetchReason.BAD_RESPONSE,
        ),
    ),
    # aiohttp copies the OS error's number onto its own exception: that one decides
    (
        aiohttp.ClientConnectorError,
        ByErrno(REFUSED_ERRNOS, default=FetchReason.CONNECTION_FAILED, chain=False),
    ),
    (OSError, ByErrno(RESET_ERRNOS, chain=False)),  # a dropped connection; other OS errors: client_error
    (aiohttp.InvalidURL, FetchReason.INVALID_URL),
)
"""aiohttp's exceptions -> reasons, walked by fetch.errors.translate like httpx's HTTPCORE_EXC_MAP."""


def aiohttp_failure(exc: BaseException) -> FetchFailure:
    """The outcome and reason for an aiohttp error."""
    return translate(exc, AIOHTTP_ERRORS)


class _PeerRecordingResponse(aiohttp.ClientResponse):
    """Notes the peer address when the response starts: a fully read response has already let go of it."""

    peer_ip: str | None = None

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        transport = connection.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        self.peer_ip = str(peer[0]) if peer else None
        return await super().start(connection)

"""Contract of the client exception tables (fetch/errors.py): every entry means a FetchReason, and each
client's table translates the exception families its transport raises, as that client raises them."""

from __future__ import annotations

import errno
import itertools
import ssl

import aiohttp
import anyio
import httpcore
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, ContentLengthError, LineTooLong

from scanner.fetch.base import FetchFailure
from scanner.fetch.client import AIOHTTP_ERRORS, aiohttp_failure
from scanner.fetch.errors import (
    ERRNO_REASONS,
    ByCause,
    ByErrno,
    ByMessage,
    outcome_of,
    table_reasons,
    translate,
)
from scanner.fetch.httpx_client import HTTPX_ERRORS, httpx_failure
from scanner.outcomes import FetchOutcome, FetchReason

TABLES = {"aiohttp": AIOHTTP_ERRORS, "httpx": HTTPX_ERRORS}
KEY = ConnectionKey("example.org", 443, True, True, None, None, None)

# the families every transport must tell apart (DNS answers come from the guard, as a FetchFailure)
FAMILIES = {
    FetchReason.CONNECTION_REFUSED,
    FetchReason.CONNECTION_RESET,
    FetchReason.CONNECT_TIMEOUT,
    FetchReason.READ_TIMEOUT,
    FetchReason.TLS_ERROR,
    FetchReason.HEADERS_TOO_LARGE,
    FetchReason.TRUNCATED_BODY,
    FetchReason.BAD_RESPONSE,
    FetchReason.INVALID_URL,
}


def raised_from(*excs: BaseException) -> BaseException:
    """excs[0] raised from excs[1] raised from ..., as a client's wrapping leaves them."""
    for outer, inner in itertools.pairwise(excs):
        outer.__cause__ = inner
    return excs[0]


def dns_failure() -> FetchFailure:
    return FetchFailure(FetchOutcome.DEAD, FetchReason.DNS_FAILURE)


AIOHTTP_RAISES = {
    "refused": (
        lambda: raised_from(
            aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
            ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        ),
        FetchReason.CONNECTION_REFUSED,
    ),
    "unreachable": (
        lambda: aiohttp.ClientConnectorError(KEY, OSError(errno.EHOSTUNREACH, "no route")),
        FetchReason.CONNECTION_FAILED,
    ),
    "reset": (
        lambda: raised_from(
            aiohttp.ClientOSError(errno.ECONNRESET, "reset"), ConnectionResetError(errno.ECONNRESET, "reset")
        ),
        FetchReason.CONNECTION_RESET,
    ),
    "disconnected": (lambda: aiohttp.ServerDisconnectedError(), FetchReason.CONNECTION_RESET),
    "connect timeout": (
        lambda: raised_from(aiohttp.ConnectionTimeoutError("connect"), TimeoutError()),
        FetchReason.CONNECT_TIMEOUT,
    ),
    "read timeout": (lambda: aiohttp.SocketTimeoutError("read"), FetchReason.READ_TIMEOUT),
    "tls": (
        lambda: aiohttp.ClientConnectorCertificateError(
            KEY, ssl.SSLCertVerificationError(1, "certificate verify failed")
        ),
        FetchReason.TLS_ERROR,
    ),
    "dns": (
        lambda: raised_from(
            aiohttp.ClientConnectorDNSError(KEY, OSError(errno.ENOENT, "no name")), dns_failure()
        ),
        FetchReason.DNS_FAILURE,
    ),
    "line too long": (
        lambda: raised_from(aiohttp.ClientResponseError(None, ()), LineTooLong("header", "8190")),
        FetchReason.HEADERS_TOO_LARGE,
    ),
    "too many headers": (
        lambda: raised_from(
            aiohttp.ClientResponseError(None, ()), BadHttpMessage("Too many headers received")
        ),
        FetchReason.HEADERS_TOO_LARGE,
    ),
    "bad status line": (
        lambda: raised_from(aiohttp.ClientResponseError(None, ()), BadStatusLine("HTTP/9")),
        FetchReason.BAD_RESPONSE,
    ),
    "truncated": (
        lambda: raised_from(aiohttp.ClientPayloadError("not completed"), ContentLengthError("short")),
        FetchReason.TRUNCATED_BODY,
    ),
    "invalid url": (lambda: aiohttp.InvalidURL("http://["), FetchReason.INVALID_URL),
    "other": (lambda: aiohttp.ClientError("something new"), FetchReason.CLIENT_ERROR),
}

HTTPX_RAISES = {
    "refused": (
        lambda: raised_from(
            httpcore.ConnectError("All connection attempts failed"),
            OSError("All connection attempts failed"),
            ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        ),
        FetchReason.CONNECTION_REFUSED,
    ),
    "unreachable": (
        lambda: raised_from(httpcore.ConnectError("no route"), OSError(errno.EHOSTUNREACH, "no route")),
        FetchReason.CONNECTION_FAILED,
    ),
    "reset": (
        lambda: raised_from(
            httpcore.ReadError(""),
            anyio.BrokenResourceError(),
            ConnectionResetError(errno.ECONNRESET, "reset"),
        ),
        FetchReason.CONNECTION_RESET,
    ),
    "disconnected": (
        lambda: httpcore.RemoteProtocolError("Server disconnected without sending a response."),
        FetchReason.CONNECTION_RESET,
    ),
    "connect timeout": (
        lambda: raised_from(httpcore.ConnectTimeout(""), TimeoutError()),
        FetchReason.CONNECT_TIMEOUT,
    ),
    "read timeout": (lambda: raised_from(httpcore.ReadTimeout(""), TimeoutError()), FetchReason.READ_TIMEOUT),
    "tls": (
        lambda: raised_from(
            httpcore.ConnectError("certificate verify failed"),
            ssl.SSLCertVerificationError(1, "certificate verify failed"),
        ),
        FetchReason.TLS_ERROR,
    ),
    "dns": (lambda: raised_from(httpcore.ConnectError("dns"), dns_failure()), FetchReason.DNS_FAILURE),
    "too large": (
        lambda: httpcore.RemoteProtocolError("Receive buffer too long"),
        FetchReason.HEADERS_TOO_LARGE,
    ),
    "bad status line": (
        lambda: httpcore.RemoteProtocolError("illegal status line: bytearray(b'HTTP/9')"),
        FetchReason.BAD_RESPONSE,
    ),
    "truncated": (
        lambda: httpcore.RemoteProtocolError(
            "peer closed connection without sending complete message body: incomplete chunked read"
        ),
        FetchReason.TRUNCATED_BODY,
    ),
    "bad location": (
        lambda: raised_from(
            httpx.RemoteProtocolError("Invalid URL in location header: empty host."), httpx.InvalidURL("x")
        ),
        FetchReason.INVALID_REDIRECT,
    ),
    "invalid url": (lambda: httpx.InvalidURL("http://["), FetchReason.INVALID_URL),
    "other": (lambda: httpcore.LocalProtocolError("something new"), FetchReason.CLIENT_ERROR),
}


@pytest.mark.parametrize("client", sorted(TABLES))
def test_every_entry_means_fetch_reasons(client: str) -> None:
    for types, meaning in TABLES[client]:
        for kind in types if isinstance(types, tuple) else (types,):
            assert isinstance(kind, type) and issubclass(kind, BaseException), kind
        assert isinstance(meaning, (FetchReason, ByErrno, ByCause, ByMessage)), meaning
        reasons = {meaning} if isinstance(meaning, FetchReason) else meaning.reasons()
        assert reasons and all(isinstance(reason, FetchReason) for reason in reasons), meaning
    for reason in table_reasons(TABLES[client]):
        assert reason in FetchReason
        assert outcome_of(reason) in (FetchOutcome.DEAD, FetchOutcome.INVALID)  # never blocked nor ok


def test_errno_table_means_fetch_reasons() -> None:
    assert ERRNO_REASONS and all(isinstance(reason, FetchReason) for reason in ERRNO_REASONS.values())
    assert set(ERRNO_REASONS.values()) == {FetchReason.CONNECTION_REFUSED, FetchReason.CONNECTION_RESET}


@pytest.mark.parametrize("client", sorted(TABLES))
def test_each_table_covers_the_families(client: str) -> None:
    assert table_reasons(TABLES[client]) >= FAMILIES


@pytest.mark.parametrize(
    ("translate_one", "make", "reason"),
    [
        pytest.param(aiohttp_failure, make, reason, id=f"aiohttp-{name}")
        for name, (make, reason) in AIOHTTP_RAISES.items()
    ]
    + [
        pytest.param(httpx_failure, make, reason, id=f"httpx-{name}")
        for name, (make, reason) in HTTPX_RAISES.items()
    ],
)
def test_client_exceptions_translate(translate_one, make, reason: FetchReason) -> None:
    failure = translate_one(make())
    assert failure.reason == reason
    expected = FetchOutcome.DEAD if reason == FetchReason.DNS_FAILURE else outcome_of(reason)
    assert failure.outcome == expected
    assert failure.retryable == (reason == FetchReason.CONNECTION_RESET)


def test_each_family_is_raised_for_both_clients() -> None:
    for raises in (AIOHTTP_RAISES, HTTPX_RAISES):
        assert {reason for _, reason in raises.values()} >= FAMILIES | {FetchReason.DNS_FAILURE}


def test_the_guards_failure_wins_over_any_entry() -> None:
    refused = FetchFailure(FetchOutcome.BLOCKED, FetchReason.BLOCKED_PRIVATE_ADDRESS)
    for table in TABLES.values():
        assert translate(raised_from(aiohttp.ServerDisconnectedError(), refused), table) is refused
        assert translate(raised_from(httpcore.ConnectError("x"), refused), table) is refused


def test_an_unknown_exception_is_a_client_error() -> None:
    for table in TABLES.values():
        failure = translate(ValueError("new"), table)
        assert (failure.outcome, failure.reason, failure.retryable) == (
            FetchOutcome.DEAD,
            FetchReason.CLIENT_ERROR,
            False,
        )

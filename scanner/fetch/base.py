"""The fetch stage's contract: configuration, result, the Fetcher protocol and the failure a hop ends in."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Protocol

from scanner import __version__
from scanner.errors import ConfigError, ScannerError
from scanner.outcomes import FetchOutcome

if TYPE_CHECKING:
    from scanner.fetch.budget import Grant

CLIENTS = ("aiohttp", "httpx")


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """How URLs are fetched: limits, deadlines, caps, retries and the address policy."""

    client: str = "aiohttp"
    max_in_flight: int = 64
    max_per_host: int = 8
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0
    dns_timeout: float = 5.0  # the total time of one host's lookup, whatever resolv.conf's attempts
    dns_cache_ttl: float = 300.0  # a host is looked up at most once in this time (> 0: a fetch's two
    # resolutions, before its slot and at connect, must see one answer)
    dns_negative_ttl: float = 300.0  # a host whose lookup failed fails again at once for this long
    dns_cache_size: int = 100_000  # hosts remembered, least recently used dropped first
    connect_failure_ttl: float = 30.0  # a host:port that refused or timed out is not connected to again
    max_bytes: int = 16 * 1024 * 1024
    max_url_length: int = 4096
    max_redirects: int = 10
    max_retries: int = 2
    retry_backoff: float = 0.5
    max_retry_after: float = 10.0
    max_header_size: int = 8190
    max_headers: int = 128
    contact: str = ""
    user_agent: str = ""
    allow_private_networks: bool = False
    allowed_networks: tuple[str, ...] = ()
    verify_tls: bool = True

    def __post_init__(self) -> None:
        if self.client not in CLIENTS:
            raise ConfigError(f"fetch.client must be one of {', '.join(CLIENTS)}, not {self.client!r}")
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"fetch.{spec.name} must not be negative, not {value!r}")
        positive = (
            "max_in_flight",
            "max_per_host",
            "max_bytes",
            "max_url_length",
            "total_timeout",
            "dns_cache_size",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"fetch.{name} must be positive")
        for name in ("contact", "user_agent"):  # sent as a header: a CR, LF or non-ASCII would fail every row
            text = getattr(self, name)
            if not all(" " <= char <= "~" for char in text):
                raise ConfigError(
                    f"fetch.{name} must be printable ASCII (it is sent as the User-Agent), not {text!r}"
                )
        for network in self.allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ConfigError(f"fetch.allowed_networks: {exc}") from exc

    @property
    def user_agent_header(self) -> str:
        """The User-Agent sent: names the scanner and version, and the operator's contact URL if given."""
        if self.user_agent:
            return self.user_agent
        contact = f"+{self.contact}; " if self.contact else ""
        return f"scanner/{__version__} ({contact}dataset hygiene)"


@dataclass(slots=True)
class FetchResult:
    """What fetching one URL gave: an outcome with a stable reason, response metadata, the body in memory."""

    url: str | None
    final_url: str | None = None
    status: int | None = None
    body: bytes | None = None
    outcome: FetchOutcome = FetchOutcome.OK
    reason: str | None = None  # a FetchReason, http_<status>, or the reason the caller's screen gave
    content_type: str | None = None
    content_length: int | None = None
    server_ip: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    fetched_at: float = 0.0
    grant: Grant | None = field(default=None, repr=False, compare=False)  # the body's room in the budget

    def release(self) -> None:
        """Give the body's bytes back to the fetcher's budget: call once the body has been hashed."""
        if self.grant is not None:
            self.grant.release()
            self.grant = None


UrlScreen = Callable[[str], "str | None"]
"""Asked about every URL before it is requested (redirect targets too): a reason refuses it (blocked)."""


class Fetcher(Protocol):
    """Fetches URLs into memory; never raises for a per-URL failure."""

    async def fetch(
        self,
        url: str | None,
        *,
        read_body: bool = True,
        headers: Mapping[str, str] | None = None,
        screen: UrlScreen | None = None,
    ) -> FetchResult:
        """Fetch one URL; read_body=False asks for headers only (HEAD); headers adds e.g. If-None-Match;
        screen may refuse any URL on the way (outcome blocked, its reason) before a request is sent."""
        ...

    async def aclose(self) -> None:
        """Close connections; the fetcher is unusable afterwards."""
        ...


class FetchFailure(ScannerError):
    """Why a URL (or one hop of it) gave no usable response; caught inside the fetcher, never escapes it."""

    def __init__(
        self, outcome: FetchOutcome, reason: str, *, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{outcome}: {reason}")
        self.outcome = outcome
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """exc and the exceptions it was raised from, through a client's wrapping."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


def failure_in_chain(exc: BaseException) -> FetchFailure | None:
    """A FetchFailure the guard raised inside a client, found through the client's exception wrapping."""
    return next((e for e in exception_chain(exc) if isinstance(e, FetchFailure)), None)

"""URL and address policy against SSRF: only http(s), one canonical reading of a URL, no private addresses.

`parse_url` reads a URL the way a browser does (urls/parse.py: WHATWG rules for the host, percent-decoding,
IDNA, every legacy IPv4 spelling) and returns a canonical `Target`, or raises a FetchFailure; clients are
handed only that canonical URL, so they cannot read the host differently. `resolve_checked` is the real
defence: it looks a name up once and refuses it unless every address it resolves to is public, and the
clients connect only to the addresses it returned.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from scanner.fetch.base import FetchConfig, FetchFailure
from scanner.outcomes import FetchOutcome, FetchReason
from scanner.urls import parse
from scanner.urls.parse import IPAddress, Target, UnusableURL

Lookup = Callable[[str, int], Awaitable[Sequence[str]]]

_FORBIDDEN_NETWORKS: tuple[IPv4Network | IPv6Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/96",  # unspecified, loopback, IPv4-compatible
        "::ffff:0:0/96",  # IPv4-mapped
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, Teredo
        "2001:db8::/32",
        "3fff::/20",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local
        "ff00::/8",  # multicast
    )
)
_NAT64 = IPv6Network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses may be connected to: public ones, plus allowed_networks, or all if allow_private."""

    allow_private: bool = False
    allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def from_config(cls, config: FetchConfig) -> AddressPolicy:
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in config.allowed_networks)
        return cls(config.allow_private_networks, networks)

    def permits(self, ip: IPAddress) -> bool:
        """True if a connection to ip is allowed."""
        if self.allow_private or any(ip in network for network in self.allowed_networks):
            return True
        return not is_forbidden_address(ip)


def is_forbidden_address(ip: IPAddress) -> bool:
    """True for any address that is not plainly public, including private IPv4 inside IPv6 (6to4, NAT64)."""
    if isinstance(ip, IPv6Address):
        if ip in _NAT64:  # DNS64 answers on IPv6-only networks: as public as the IPv4 address they carry
            return is_forbidden_address(IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None and is_forbidden_address(ip.sixtofour):
            return True
        if ip.is_site_local:
            return True
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or any(ip in network for network in _FORBIDDEN_NETWORKS)
    )


def check_address(ip: IPAddress, policy: AddressPolicy) -> None:
    """Raise a blocked FetchFailure unless the policy permits ip."""
    if not policy.permits(ip):
        raise FetchFailure(FetchOutcome.BLOCKED, FetchReason.BLOCKED_PRIVATE_ADDRESS)


def parse_url(url: object, max_length: int = 4096) -> Target:
    """Read a URL into a canonical Target (scanner.urls.parse); raise FetchFailure (invalid or blocked) for
    anything unusable."""
    try:
        return parse.parse_url(url, max_length)
    except UnusableURL as exc:
        raise FetchFailure(exc.outcome, exc.reason) from None


def redirect_target(current: Target, location: str, max_length: int = 4096) -> Target:
    """The Target a Location header points to, read relative to the current one (scanner.urls.parse); raise
    FetchFailure: dead (invalid_redirect) or blocked."""
    try:
        return parse.redirect_target(current, location, max_length)
    except UnusableURL as exc:
        raise FetchFailure(exc.outcome, exc.reason) from None


async def system_lookup(host: str, port: int) -> list[str]:
    """Addresses for host from the system resolver, via the event loop's getaddrinfo."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_checked(
    host: str, port: int, policy: AddressPolicy, *, timeout: float, lookup: Lookup = system_lookup
) -> list[IPAddress]:
    """Look host up once and return its addresses, refusing it if ANY of them is not permitted."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        check_address(literal, policy)
        return [literal]
    try:
        answers = await asyncio.wait_for(lookup(host, port), timeout)
    except asyncio.TimeoutError:
        raise FetchFailure(FetchOutcome.DEAD, FetchReason.DNS_TIMEOUT) from None
    except (OSError, UnicodeError, ValueError):
        raise FetchFailure(FetchOutcome.DEAD, FetchReason.DNS_FAILURE) from None
    addresses = _unique_addresses(answers)
    for address in addresses:
        check_address(address, policy)
    return addresses


def _unique_addresses(answers: Sequence[str]) -> list[IPAddress]:
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(answer)
        except ValueError:
            continue
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchFailure(FetchOutcome.DEAD, FetchReason.DNS_FAILURE)
    return addresses

"""URL and address policy against SSRF: only http(s), one canonical reading of a URL, no private addresses.

`parse_url` reads a URL the way a browser does (WHATWG rules for the host: percent-decoding, IDNA, every
legacy IPv4 spelling) and returns a canonical `Target`; clients are handed only that canonical URL, so they
cannot read the host differently. `resolve_checked` is the real defence: it looks a name up once and refuses
it unless every address it resolves to is public, and the clients connect only to the addresses it returned.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import quote, unquote_to_bytes, urljoin

import idna

from scanner.fetch.base import FetchConfig, FetchFailure
from scanner.outcomes import FetchOutcome, FetchReason

IPAddress = IPv4Address | IPv6Address
Lookup = Callable[[str, int], Awaitable[Sequence[str]]]

DEFAULT_PORTS = {"http": 80, "https": 443}

_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_AUTHORITY_END = re.compile(r"[/\\?#]")
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_RADIX_DIGITS = {8: re.compile(r"[0-7]+"), 10: re.compile(r"[0-9]+"), 16: re.compile(r"[0-9a-fA-F]+")}
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))
_PATH_SAFE = "".join(c for c in _PRINTABLE if c not in '"#<>?`{}')
_QUERY_SAFE = "".join(c for c in _PRINTABLE if c not in "\"#<>'")
_MAX_HOST = 253

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
class Target:
    """One URL as the fetcher will request it: canonical, without userinfo or fragment."""

    url: str
    scheme: str
    host: str
    port: int
    ip: IPAddress | None = None


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
    """Read a URL into a canonical Target; raise FetchFailure (invalid or blocked) for anything unusable."""
    if url is None or (isinstance(url, str) and not url.strip(_C0_AND_SPACE)):
        raise FetchFailure(FetchOutcome.INVALID, FetchReason.EMPTY_URL)
    if not isinstance(url, str):
        raise FetchFailure(FetchOutcome.INVALID, FetchReason.INVALID_URL)
    if len(url) > max_length:
        raise FetchFailure(FetchOutcome.INVALID, FetchReason.URL_TOO_LONG)
    text = url.strip(_C0_AND_SPACE).translate(_TAB_NEWLINE)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise FetchFailure(FetchOutcome.INVALID, FetchReason.INVALID_URL) from None
    scheme_match = _SCHEME.match(text)
    if scheme_match is None:
        raise FetchFailure(FetchOutcome.INVALID, FetchReason.INVALID_URL)
    scheme = scheme_match.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise FetchFailure(FetchOutcome.BLOCKED, FetchReason.BLOCKED_SCHEME)
    rest = text[scheme_match.end() :].lstrip("/\\")
    end = _AUTHORITY_END.search(rest)
    authority, tail = (rest[: end.start()], rest[end.start() :]) if end else (rest, "")
    host_text, port = _split_port(authority.rpartition("@")[2], DEFAULT_PORTS[scheme])
    host, ip = _parse_host(host_text)
    netloc = f"[{host}]" if isinstance(ip, IPv6Address) else host
    if port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    canonical = f"{scheme}://{netloc}{_path_and_query(tail)}"
    if len(canonical) > max_length:
        raise FetchFailure(FetchOutcome.INVALID, FetchReason.URL_TOO_LONG)
    return Target(canonical, scheme, host, port, ip)


def redirect_target(current: Target, location: str, max_length: int = 4096) -> Target:
    """The Target a Location header points to, read relative to the current one."""
    location = location.strip(_C0_AND_SPACE).translate(_TAB_NEWLINE)
    if not _SCHEME.match(location):
        # Browsers read backslashes as slashes in http(s) URLs, so "\\evil.example" is another host.
        head, sep, query = location.partition("?")
        location = head.replace("\\", "/") + sep + query
    try:
        joined = urljoin(current.url, location)
    except ValueError:
        raise FetchFailure(FetchOutcome.DEAD, FetchReason.INVALID_REDIRECT) from None
    try:
        return parse_url(joined, max_length)
    except FetchFailure as failure:
        if failure.outcome == FetchOutcome.INVALID:
            raise FetchFailure(FetchOutcome.DEAD, FetchReason.INVALID_REDIRECT) from None
        raise


def _split_port(hostport: str, default: int) -> tuple[str, int]:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise FetchFailure(FetchOutcome.INVALID, FetchReason.INVALID_URL)
        host_text, after = hostport[: close + 1], hostport[close + 1 :]
        if after and not after.startswith(":"):
            raise FetchFailure(FetchOutcome.INVALID, FetchReason.INVALID_URL)
        port_text = after[1:]
    else:
        host_text, _, port_text = hostport.partition(":")
    if not port_text:
        return host_text, default
    digits = port_text.lstrip("0") or "0"
    if not (port_text.isascii() and port_text.isdigit() and len(digits) <= 5 and 0 < int(digits) <= 65535):
        raise FetchFailure(FetchOutcome.INVALID, FetchReason.INVALID_URL)
    return host_text, int(digits)


def _parse_host(host_text: str) -> tuple[str, IPAddress | None]:
    """Canonical host and its address when it is an IP literal (in any spelling a browser accepts)."""
    if host_text.startswith("["):
        try:
            ip6 = IPv6Address(host_text[1:-1])
        except ValueError:
            raise FetchFailure(FetchOutcome.INVALID, FetchReason.INVALID_URL) from None
        if ip6.scope_id:
            raise FetchFailure(FetchOutcome.INVALID, FetchReason.INVALID_URL)
        return ip6.compressed, ip6
    try:
        decoded = unquote_to_bytes(host_text).decode("utf-8")
    except UnicodeDecodeError:
        raise FetchFailure(FetchOutcome.INVALID, FetchReason.INVALID_URL) from None
    host = _ascii_host(decoded)
    if host.endswith("."):
        host = host[:-1]
    ip4 = _parse_ipv4(host)
    if ip4 is not None:
        return str(ip4), ip4
    if not host or len(host) > _MAX_HOST or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise FetchFailure(FetchOutcome.INVALID, FetchReason.INVALID_URL)
    return host, None


def _ascii_host(host: str) -> str:
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (UnicodeError, ValueError):
        raise FetchFailure(FetchOutcome.INVALID, FetchReason.INVALID_URL) from None


def _parse_ipv4(host: str) -> IPv4Address | None:
    """WHATWG IPv4 parsing: None if the host does not end in a number, else the address or invalid_url."""
    parts = host.split(".")
    last = parts[-1]
    if not last or not ((last.isascii() and last.isdigit()) or _ipv4_number(last) is not None):
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise FetchFailure(FetchOutcome.INVALID, FetchReason.INVALID_URL)
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise FetchFailure(FetchOutcome.INVALID, FetchReason.INVALID_URL)
    return IPv4Address(values[-1] + sum(n << (8 * (3 - i)) for i, n in enumerate(values[:-1])))


def _ipv4_number(part: str) -> int | None:
    """One dotted part as a browser reads it: 0x.. is hex, a leading 0 octal; None if it is not a number."""
    radix = 10
    if part[:2] in ("0x", "0X"):
        part, radix = part[2:], 16
    elif len(part) > 1 and part.startswith("0"):
        part, radix = part[1:], 8
    if not part:
        return 0 if radix != 10 else None
    if not _RADIX_DIGITS[radix].fullmatch(part):
        return None
    try:
        return int(part, radix)
    except ValueError:  # decimal strings past int()'s digit limit
        return None


def _path_and_query(tail: str) -> str:
    tail = tail.partition("#")[0]
    path, sep, query = tail.partition("?")
    path = path.replace("\\", "/")
    if not path.startswith("/"):
        path = "/" + path
    encoded = quote(path, safe=_PATH_SAFE)
    return encoded + sep + quote(query, safe=_QUERY_SAFE) if sep else encoded


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

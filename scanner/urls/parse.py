"""Reading a URL the way the fetcher requests it and the URL lists name it: one canonical Target.

`parse_url` reads a URL the way a browser does (WHATWG rules for the host: percent-decoding, IDNA, every
legacy IPv4 spelling) and returns a canonical `Target`; `redirect_target` reads a Location header relative to
one. Both stages that read URLs use this module: the fetch stage (scanner.fetch.guard, which turns
`UnusableURL` into a FetchFailure and adds the address policy) and the URL lists' normal form
(scanner.urls.normal). It imports no stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from urllib.parse import quote, unquote_to_bytes, urljoin

import idna

from scanner.outcomes import FetchOutcome, FetchReason

IPAddress = IPv4Address | IPv6Address

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


class UnusableURL(ValueError):
    """A URL the scanner will not request: `outcome` invalid or blocked (dead: a redirect), `reason` why."""

    def __init__(self, outcome: FetchOutcome, reason: str) -> None:
        super().__init__(f"{outcome}: {reason}")
        self.outcome = outcome
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    """One URL as the fetcher will request it: canonical, without userinfo or fragment."""

    url: str
    scheme: str
    host: str
    port: int
    ip: IPAddress | None = None


def parse_url(url: object, max_length: int = 4096) -> Target:
    """Read a URL into a canonical Target; raise UnusableURL (invalid or blocked) for anything unusable."""
    if url is None or (isinstance(url, str) and not url.strip(_C0_AND_SPACE)):
        raise UnusableURL(FetchOutcome.INVALID, FetchReason.EMPTY_URL)
    if not isinstance(url, str):
        raise UnusableURL(FetchOutcome.INVALID, FetchReason.INVALID_URL)
    if len(url) > max_length:
        raise UnusableURL(FetchOutcome.INVALID, FetchReason.URL_TOO_LONG)
    text = url.strip(_C0_AND_SPACE).translate(_TAB_NEWLINE)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UnusableURL(FetchOutcome.INVALID, FetchReason.INVALID_URL) from None
    scheme_match = _SCHEME.match(text)
    if scheme_match is None:
        raise UnusableURL(FetchOutcome.INVALID, FetchReason.INVALID_URL)
    scheme = scheme_match.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise UnusableURL(FetchOutcome.BLOCKED, FetchReason.BLOCKED_SCHEME)
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
        raise UnusableURL(FetchOutcome.INVALID, FetchReason.URL_TOO_LONG)
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
        raise UnusableURL(FetchOutcome.DEAD, FetchReason.INVALID_REDIRECT) from None
    try:
        return parse_url(joined, max_length)
    except UnusableURL as failure:
        if failure.outcome == FetchOutcome.INVALID:
            raise UnusableURL(FetchOutcome.DEAD, FetchReason.INVALID_REDIRECT) from None
        raise


def _split_port(hostport: str, default: int) -> tuple[str, int]:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise UnusableURL(FetchOutcome.INVALID, FetchReason.INVALID_URL)
        host_text, after = hostport[: close + 1], hostport[close + 1 :]
        if after and not after.startswith(":"):
            raise UnusableURL(FetchOutcome.INVALID, FetchReason.INVALID_URL)
        port_text = after[1:]
    else:
        host_text, _, port_text = hostport.partition(":")
    if not port_text:
        return host_text, default
    digits = port_text.lstrip("0") or "0"
    if not (port_text.isascii() and port_text.isdigit() and len(digits) <= 5 and 0 < int(digits) <= 65535):
        raise UnusableURL(FetchOutcome.INVALID, FetchReason.INVALID_URL)
    return host_text, int(digits)


def _parse_host(host_text: str) -> tuple[str, IPAddress | None]:
    """Canonical host and its address when it is an IP literal (in any spelling a browser accepts)."""
    if host_text.startswith("["):
        try:
            ip6 = IPv6Address(host_text[1:-1])
        except ValueError:
            raise UnusableURL(FetchOutcome.INVALID, FetchReason.INVALID_URL) from None
        if ip6.scope_id:
            raise UnusableURL(FetchOutcome.INVALID, FetchReason.INVALID_URL)
        return ip6.compressed, ip6
    try:
        decoded = unquote_to_bytes(host_text).decode("utf-8")
    except UnicodeDecodeError:
        raise UnusableURL(FetchOutcome.INVALID, FetchReason.INVALID_URL) from None
    host = _ascii_host(decoded)
    if host.endswith("."):
        host = host[:-1]
    ip4 = _parse_ipv4(host)
    if ip4 is not None:
        return str(ip4), ip4
    if not host or len(host) > _MAX_HOST or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise UnusableURL(FetchOutcome.INVALID, FetchReason.INVALID_URL)
    return host, None


def _ascii_host(host: str) -> str:
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (UnicodeError, ValueError):
        raise UnusableURL(FetchOutcome.INVALID, FetchReason.INVALID_URL) from None


def _parse_ipv4(host: str) -> IPv4Address | None:
    """WHATWG IPv4 parsing: None if the host does not end in a number, else the address or invalid_url."""
    parts = host.split(".")
    last = parts[-1]
    if not last or not ((last.isascii() and last.isdigit()) or _ipv4_number(last) is not None):
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise UnusableURL(FetchOutcome.INVALID, FetchReason.INVALID_URL)
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise UnusableURL(FetchOutcome.INVALID, FetchReason.INVALID_URL)
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

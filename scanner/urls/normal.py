"""The normal form of a URL and of a host name, shared by URL lists and pre-fetch screening.

A URL list entry and a dataset URL match when their normal forms are equal, so every spelling the fetcher
would send to the same place must normalise alike. The URL is first read exactly as the fetcher reads it
(`scanner.urls.parse.parse_url`, WHATWG host rules), then made canonical:

1. Surrounding spaces and control characters are stripped; tabs and newlines inside are removed.
2. Only http and https are URLs here; the scheme is lower-cased.
3. User name and password are dropped (they do not change the resource, and are never sent).
4. The host is percent-decoded, converted with IDNA (UTS 46) to ASCII, lower-cased, and a trailing dot is
   dropped; an IPv4 address in any spelling (0x7f.1, 2130706433) becomes dotted decimal, an IPv6 address
   its compressed form in brackets.
5. The default port (80 for http, 443 for https) is dropped; any other port is kept, without leading zeros.
6. The fragment (#...) is dropped; backslashes in the path are slashes; an empty path is "/".
7. Characters outside printable ASCII, spaces and quotes are percent-encoded as UTF-8.
8. Percent-encoding is normalised: an escape of an unreserved character (A-Z a-z 0-9 - . _ ~) is decoded,
   every other escape has its hex digits upper-cased; a "%" not followed by two hex digits is left alone.
9. Dot segments ("." and "..", also written %2E) are removed from the path as RFC 3986 section 5.2.4 says.
10. An empty query (a lone "?") is dropped; any other query is kept as it is (order, "+" and all).

The digests of a URL (url_md5, url_sha1, url_sha256) are of the UTF-8 bytes of its normal form (which is
ASCII). A host name (domain lists) is normalised as in rule 4; a leading "*." is dropped, since a domain
entry already covers every subdomain. `scanner url URL...` prints the normal form and digests.

Lists normalise whole columns (`normalise_urls`, `normalise_hosts`): plainly simple entries (printable
ASCII, a host of plain labels, no userinfo, IP address, backslash, odd port, dot segment or escape to
rewrite, no empty query) are normalised by vectorised string kernels, which need only rules 2, 4 (lower
case, trailing dot), 5 and 6 for them; every other entry goes through the functions above: same form.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from scanner import arrowvalues
from scanner.urls.parse import Target, UnusableURL, parse_url

DIGEST_TYPES = ("url_md5", "url_sha1", "url_sha256")

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_NOT_A_HOST = re.compile(r"[/\\?#@\s]")


class BadEntry(ValueError):
    """A column value without a normal form; row is its position in the column."""

    def __init__(self, row: int, error: ValueError) -> None:
        super().__init__(str(error))
        self.row = row


@dataclass(frozen=True, slots=True)
class NormalURL:
    """A URL in normal form and its host (an IPv6 host without brackets)."""

    text: str
    host: str

    def digests(self) -> dict[str, bytes]:
        """url_md5, url_sha1 and url_sha256 of the normal form."""
        data = self.text.encode("utf-8")
        return {
            "url_md5": hashlib.md5(data).digest(),
            "url_sha1": hashlib.sha1(data).digest(),
            "url_sha256": hashlib.sha256(data).digest(),
        }


def normalise(url: str) -> NormalURL:
    """The normal form of an http(s) URL and its host; raises ValueError for anything the fetcher refuses."""
    target = _target(url)
    netloc, _, rest = target.url.partition("://")[2].partition("/")
    path, question, query = ("/" + rest).partition("?")
    path = remove_dot_segments(normalise_escapes(path))
    tail = f"?{normalise_escapes(query)}" if question and query else ""
    return NormalURL(f"{target.scheme}://{netloc}{path}{tail}", target.host)


def normalise_url(url: str) -> str:
    """The normal form of an http(s) URL (see the module docstring); raises ValueError if it has none."""
    return normalise(url).text


def normalise_host(value: str) -> str:
    """The normal form of a host name or IP address (domain lists); raises ValueError if it is none."""
    host = value.strip()
    host = host[2:] if host.startswith("*.") else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address
    try:
        target = None if not host or _NOT_A_HOST.search(host) else _target(f"http://{host}/")
    except ValueError:
        target = None
    if target is None or target.url != f"http://{_netloc(target.host)}/":
        raise ValueError(f"{value!r} is not a host name")
    return target.host


def normalise_escapes(text: str) -> str:
    """Decode escapes of unreserved characters and upper-case the hex digits of every other escape."""

    def fix(escape: re.Match[str]) -> str:
        char = chr(int(escape.group(1), 16))
        return char if char in _UNRESERVED else "%" + escape.group(1).upper()

    return _ESCAPE.sub(fix, text)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on an absolute path: "/a/./b/../c" becomes "/a/c"."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


def normalise_urls(values: pa.Array) -> pa.Array:
    """normalise_url of every value in a string column (null as empty), vectorised where it can be."""
    values = _whole(values)
    return _fill_in(values, simple_urls(values), normalise_url)


def normalise_hosts(values: pa.Array) -> pa.Array:
    """normalise_host of every value in a string column (null as empty), vectorised where it can be."""
    values = _whole(values)
    return _fill_in(values, simple_hosts(values), normalise_host)


def _whole(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


# Characters every step leaves alone in a path or query (quotes, <>, `, {} and backslash are rewritten).
_PLAIN = r"!$%&()*+,\-./0-9:;=@A-Z\[\]^_a-z|~"
_SIMPLE_HOST = r"(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z][A-Za-z0-9_-]{0,62}\.?"  # its last label is no IPv4 number
_SIMPLE_URL = (
    rf"^[Hh][Tt][Tt][Pp][Ss]?://{_SIMPLE_HOST}(?::[1-9][0-9]{{0,3}})?"
    rf"(?:/[{_PLAIN}]*)?(?:\?[{_PLAIN}?]*)?(?:#[\x21-\x7e]*)?$"
)
_SIMPLE_DOMAIN = rf"^(?:\*\.)?{_SIMPLE_HOST}$"
_MAX_HOST = 253
_AUTHORITY = r"^(?P<scheme>[A-Za-z]+)://(?P<authority>[^/?#]*)"  # to split a URL known to be simple
_REWRITTEN = r"/\.\.?(?:[/?#]|$)|^[^?]*\?(?:#|$)"  # a dot segment or an empty query (and a few lookalikes)
_DEFAULT_PORTS = ("http:", "https:", "http:80", "https:443")
_HEX = "0123456789abcdefABCDEF"
_ESCAPES_TO_REWRITE = "|".join(
    escape for escape in (f"%{a}{b}" for a in _HEX for b in _HEX) if normalise_escapes(escape) != escape
)


def simple_urls(values: pa.Array) -> pa.Array:
    """The normal form of each plainly simple URL in a string column, null for every other value."""
    values = values.cast(pa.large_string())
    parts = pc.extract_regex(values, _AUTHORITY)
    scheme = pc.ascii_lower(pc.struct_field(parts, "scheme"))
    authority = pc.ascii_lower(pc.struct_field(parts, "authority"))
    host = pc.utf8_rtrim(pc.replace_substring_regex(authority, ":.*", ""), ".")
    port = pc.replace_substring_regex(authority, "^[^:]*:?", "")
    default_port = pc.is_in(
        pc.binary_join_element_wise(scheme, port, _text(":")),
        arrowvalues.strings(_DEFAULT_PORTS, pa.large_string()),
    )
    tail = pc.replace_substring_regex(pc.replace_substring_regex(values, _AUTHORITY, ""), "#.*", "")
    text = pc.binary_join_element_wise(
        scheme,
        _text("://"),
        host,
        pc.if_else(default_port, _text(""), pc.binary_join_element_wise(_text(":"), port, _text(""))),
        pc.if_else(pc.starts_with(tail, "/"), _text(""), _text("/")),
        tail,
        _text(""),
    )
    simple = pc.match_substring_regex(values, _SIMPLE_URL)
    simple = pc.and_(simple, pc.less_equal(pc.binary_length(host), arrowvalues.integer(_MAX_HOST)))
    rewritten = pc.or_(
        pc.match_substring_regex(values, _REWRITTEN), pc.match_substring_regex(values, _ESCAPES_TO_REWRITE)
    )
    return _keep(text, pc.and_not(simple, rewritten))


def simple_hosts(values: pa.Array) -> pa.Array:
    """The normal form of each plainly simple host name in a string column, null for every other value."""
    values = values.cast(pa.large_string())
    host = pc.utf8_rtrim(pc.ascii_lower(pc.replace_substring(values, "*.", "", max_replacements=1)), ".")
    simple = pc.and_(
        pc.match_substring_regex(values, _SIMPLE_DOMAIN),
        pc.less_equal(pc.binary_length(host), arrowvalues.integer(_MAX_HOST)),
    )
    return _keep(host, simple)


def _text(value: str) -> pa.Scalar:
    return arrowvalues.text(value, pa.large_string())


def _keep(text: pa.Array, claimed: pa.Array) -> pa.Array:
    return pc.if_else(pc.fill_null(claimed, arrowvalues.boolean(False)), text, arrowvalues.null(text.type))


def _fill_in(values: pa.Array, simple: pa.Array, normalise_one: Callable[[str], str]) -> pa.Array:
    """The simple normal forms, and normalise_one of each value they leave null; BadEntry names a bad row."""
    left = simple.is_null()
    normal = []
    for row, value in zip(pc.indices_nonzero(left).to_pylist(), values.filter(left).to_pylist(), strict=True):
        try:
            normal.append(normalise_one(value or ""))
        except ValueError as error:
            raise BadEntry(row, error) from None
    return pc.replace_with_mask(simple, left, arrowvalues.strings(normal, simple.type)).cast(pa.string())


def _target(url: str) -> Target:
    try:
        return parse_url(url, sys.maxsize)
    except UnusableURL as failure:
        raise ValueError(f"{url!r} is not an http(s) URL the scanner can fetch ({failure.reason})") from None


def _netloc(host: str) -> str:
    return f"[{host}]" if ":" in host else host

"""The normal form of a URL and of a host name, shared by URL lists and pre-fetch screening.

A URL list entry and a dataset URL match when their normal forms are equal, so every spelling the fetcher
would send to the same place must normalise alike. The URL is first read exactly as the fetcher reads it
(`scanner.fetch.parse_url`, WHATWG host rules), then made canonical:

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
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass

from scanner.fetch.base import FetchFailure
from scanner.fetch.guard import Target, parse_url

DIGEST_TYPES = ("url_md5", "url_sha1", "url_sha256")

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_NOT_A_HOST = re.compile(r"[/\\?#@\s]")


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


def _target(url: str) -> Target:
    try:
        return parse_url(url, sys.maxsize)
    except FetchFailure as failure:
        raise ValueError(f"{url!r} is not an http(s) URL the scanner can fetch ({failure.reason})") from None


def _netloc(host: str) -> str:
    return f"[{host}]" if ":" in host else host

"""Pre-fetch screening: what a row's URL and the dataset's own hash columns tell before any request.

Every row is screened before it is fetched: its URL in normal form (scanner/urls/normal.py) against the url,
url_md5, url_sha1, url_sha256 and domain entries of the lists, and the content hashes a dataset carries
(`--match-column COLUMN=TYPE`) against the image hash entries. A hit is a match and the row is never
fetched. The fetcher asks the same screen about every URL before requesting it, redirect targets included
(`HopScreen`), so a listed URL is not reached through a redirect either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from scanner.errors import ConfigError
from scanner.hashtypes import EXACT, IMAGE, REGISTRY, URL, ImageHashes, names_computed_from, recorded_types
from scanner.lists import Match, Matcher, Query
from scanner.outcomes import FetchReason
from scanner.sources import Row
from scanner.urls.normal import NormalURL, normalise

URL_TYPES = names_computed_from(URL)  # url, url_md5, url_sha1, url_sha256, domain
# Dataset columns known to hold another algorithm's perceptual hash than any of the scanner's
# (docs/datasets.md): matching them as one would compare unrelated bits.
FOREIGN_COLUMNS = {
    "image_phash": (
        "COYO-700M's image_phash is phash.org's pHash by its README, made by unpublished code; "
        "phash.org's DCT hash and imagehash's (the scanner's phash) are 32 bits apart on average for the "
        "same picture, as far as two different pictures (docs/datasets.md), so it cannot be matched as one"
    ),
}


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Audits without fetching: dataset hash columns to match, fetching off, hash records kept."""

    match_columns: tuple[str, ...] = ()  # "COLUMN=TYPE", TYPE a recorded image type (md5, ..., dhash)
    no_fetch: bool = False
    keep_hashes: bool = False

    def __post_init__(self) -> None:
        parse_match_columns(self.match_columns)  # refuse a bad spec when the config is built

    @property
    def columns(self) -> dict[str, str]:
        """Column name -> hash type."""
        return parse_match_columns(self.match_columns)


def parse_match_columns(specs: Sequence[str]) -> dict[str, str]:
    """COLUMN=TYPE specs as column -> type; each column and each type at most once."""
    parsed: dict[str, str] = {}
    for spec in specs:
        column, sep, type_name = spec.rpartition("=")
        if not sep or not column or not _recorded(type_name):
            known = ", ".join(t.name for t in recorded_types())
            raise ConfigError(f"--match-column {spec!r}: expected COLUMN=TYPE, TYPE one of {known}")
        foreign = FOREIGN_COLUMNS.get(column)
        if foreign and REGISTRY[type_name].hamming:
            raise ConfigError(f"--match-column {spec!r}: {foreign}")
        if column in parsed or type_name in parsed.values():
            raise ConfigError(f"--match-column {spec!r}: each column and each type may be named once")
        parsed[column] = type_name
    return parsed


@dataclass(slots=True)
class Screened:
    """What a row's metadata alone told: its matches, whether anything was checked, the digests it claims."""

    matches: list[Match] = field(default_factory=list)
    checked: bool = False
    claimed: dict[str, bytes] = field(default_factory=dict)  # content digests the dataset gives for the row
    url: NormalURL | None = None
    looks: dict[str, bytes] | None = None  # perceptual hashes the dataset gives for the row (rarely any)


class Screen:
    """Matches rows' URLs and hash columns against the lists, batch by batch, before any fetch."""

    def __init__(self, matcher: Matcher, audit: AuditConfig | None = None) -> None:
        self._matcher = matcher
        self._listed = matcher.needed_hash_types
        self.url_types = self._listed & URL_TYPES
        self._columns = (audit or AuditConfig()).columns

    def rows(self, rows: Sequence[Row]) -> list[Screened]:
        """One Screened per row, with the matches of all the rows found in one batched lookup."""
        screened: list[Screened] = []
        queries: list[Query] = []
        owners: list[Screened] = []
        for row in rows:
            item, query = self._prepare(row)
            screened.append(item)
            if query is not None:
                queries.append(query)
                owners.append(item)
        for item, matches in zip(owners, self._matcher.match_batch(queries) if queries else [], strict=True):
            item.matches = matches
        return screened

    def url_matches(self, url: NormalURL) -> list[Match]:
        """The list entries one URL hits (a redirect target, a URL seen again)."""
        hashes = url_hashes(url, self.url_types)
        return self._matcher.match_batch([Query(hashes)])[0] if hashes else []

    def hop(self, screened: Screened) -> HopScreen | None:
        """The fetcher's hook for one row, or None when no list holds URLs or domains."""
        if not self.url_types:
            return None
        return HopScreen(self, screened.url.text if screened.url else None)

    def _prepare(self, row: Row) -> tuple[Screened, Query | None]:
        item = Screened()
        hashes: dict[str, bytes] = {}
        if self.url_types and row.url:
            try:
                item.url = normalise(row.url)
            except ValueError:
                pass  # the fetcher refuses it too: invalid or blocked, never requested
            else:
                hashes.update(url_hashes(item.url, self.url_types))
        for column, type_name in self._columns.items():
            value = column_hash(row.columns.get(column), type_name)
            if value is None:
                continue
            if _content_digest(type_name):
                item.claimed[type_name] = value
            elif REGISTRY[type_name].hamming:
                item.looks = {**(item.looks or {}), type_name: value}
            if type_name in self._listed:
                hashes[type_name] = value
        item.checked = bool(hashes)
        return item, Query(hashes) if hashes else None


class HopScreen:
    """The fetcher's screen hook for one row: refuses any listed URL but the row's own (already screened)."""

    def __init__(self, screen: Screen, cleared: str | None) -> None:
        self._screen = screen
        self._cleared = cleared
        self.matches: list[Match] = []

    def __call__(self, url: str) -> str | None:
        """FetchReason.SCREENED_URL if url is on a list (its matches are kept), else None: the fetcher may
        request it."""
        try:
            normal = normalise(url)
        except ValueError:
            return None  # nothing to screen; the fetcher's own guard refuses it
        if normal.text == self._cleared:
            return None
        matches = self._screen.url_matches(normal)
        if not matches:
            return None
        self.matches = matches
        return FetchReason.SCREENED_URL


def url_hashes(url: NormalURL, types: frozenset[str]) -> dict[str, bytes]:
    """The query values of a normalised URL for the URL types the lists hold."""
    values = {"url": url.text.encode("utf-8"), "domain": url.host.encode("utf-8")}
    if types & {"url_md5", "url_sha1", "url_sha256"}:
        values.update(url.digests())
    return {name: value for name, value in values.items() if name in types}


def column_hash(value: object, type_name: str) -> bytes | None:
    """A dataset cell as a hash of type_name: raw bytes of the right size, or hex text; None if neither."""
    size = REGISTRY[type_name].nbytes
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) == size:
            return raw
        value = raw.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    text = value.strip().lower().removeprefix("0x")
    if len(text) != 2 * size:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def content_changed(claimed: dict[str, bytes], hashes: ImageHashes) -> bool:
    """Whether the bytes hashed differ from a digest the dataset gives for them."""
    return any(hashes.get(name) not in (None, value) for name, value in claimed.items())


def changed_distance(looks: dict[str, bytes] | None, hashes: ImageHashes) -> tuple[str, int] | None:
    """The first perceptual type both the dataset and the fetched image have, and the bits between them."""
    for name, value in (looks or {}).items():
        fetched = hashes.get(name)
        if isinstance(fetched, bytes):
            return name, REGISTRY[name].distance(fetched, value)
    return None


def hash_types(matcher: Matcher, audit: AuditConfig) -> frozenset[str]:
    """What the hashing stage computes: the image types the lists hold, the digests the dataset claims
    (to find changed content), and every type when hash records are kept for later re-matching."""
    want = set(matcher.needed_hash_types & names_computed_from(IMAGE))
    digests = {t for t in audit.columns.values() if _content_digest(t)}
    want.update(digests)
    if digests:  # a changed row is compared with the dataset's perceptual hash of it
        want.update(t for t in audit.columns.values() if REGISTRY[t].hamming)
    if audit.keep_hashes:
        want.update(t.name for t in recorded_types())  # whatever the lists hold
    return frozenset(want)


def _recorded(type_name: str) -> bool:
    known = REGISTRY.get(type_name)  # a plug-in's signal strings are not dataset columns the screen reads
    return known is not None and known.recorded and known.signal is None


def content_digests() -> tuple[str, ...]:
    """The exact image types (md5, sha1, sha256): digests of the exact bytes, so a difference from the
    dataset's (or a stored record's) means `changed`."""
    return tuple(t.name for t in recorded_types() if t.index == EXACT)


def _content_digest(type_name: str) -> bool:
    return type_name in content_digests()

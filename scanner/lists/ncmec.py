"""NCMEC Hash Sharing v2 query results (`GET /v2/entries`), read offline from a saved response or from a
folder of saved pages, in order (hashlists/README.md names the fields read and where they are documented).

Entries are `image`/`video` elements under `images`/`videos`; `deletedImage`/`deletedVideo` remove the
entry of that id that an earlier page (or earlier in the page) gave, and an entry given again replaces it
(its newest state). Each inline fingerprint of an entry becomes one list row: its type is the element name,
its id the entry's `id`, its category the `classification`; the submitting `member` and the media kind are
kept as entry metadata. A fingerprint given only by reference (`href`: large ones such as TMK+PDQF) has no
value in the file and is counted as skipped.

The parser is defusedxml's expat reader with DTDs refused (so no entity expansion and no external entity,
the billion laughs and XXE); the document streams through SAX in 64 KiB pieces: no tree is built, and an
element's text is capped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax import SAXParseException
from xml.sax.handler import ContentHandler
from xml.sax.xmlreader import AttributesImpl, Locator

import numpy as np
import pyarrow as pa
from defusedxml import DefusedXmlException
from defusedxml.expatreader import DefusedExpatParser

from scanner import arrowvalues
from scanner.lists.formats import FormatError, RawList, hash_types
from scanner.lists.skipped import SkippedType, SkipReason, merged

NAME = "ncmec-xml"
NAMESPACE = "https://hashsharing.ncmec.org/hashsharing/v2"
ENTRY_ELEMENTS = {"image": ("image", False), "video": ("video", False)}
ENTRY_ELEMENTS |= {"deletedImage": ("image", True), "deletedVideo": ("video", True)}
FINGERPRINT_TYPES = {"md5": "md5", "sha1": "sha1", "pdq": "pdq"}  # NCMEC element -> hash type
MAX_TEXT = 65_536  # characters of one element's text (a PhotoDNA hash is 144 bytes, ~200 base64 characters)
READ_SIZE = 1 << 16
PAGE_SUFFIX = ".xml"


def is_xml(data: bytes) -> bool:
    """Whether a list file is XML: its first character, after a byte order mark and blanks, is '<'."""
    return data.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"<"


def pages(folder: Path) -> list[Path]:
    """A folder's saved pages, in order: its `.xml` files by name, numbers compared as numbers."""

    def order(path: Path) -> list[object]:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]

    found = [p for p in folder.iterdir() if p.suffix.lower() == PAGE_SUFFIX and not p.name.startswith(".")]
    return sorted(
        found, key=lambda path: (order(path), path.name)
    )  # page-1 and page-01: not by listing order


def folder_digest(named_digests: list[tuple[str, str]]) -> str:
    """One SHA-256 for a folder of pages: of each page's name and SHA-256, in order."""
    return hashlib.sha256(
        "".join(f"{name}\0{digest}\n" for name, digest in named_digests).encode()
    ).hexdigest()


@dataclass(slots=True)
class _Entry:
    kind: str
    line: int
    deleted: bool = False
    entry_id: str | None = None
    member: str | None = None
    member_id: str | None = None
    classification: str | None = None
    fingerprints: list[tuple[str, str | None, int]] = field(default_factory=list)  # (type, value, line)


class _Handler(ContentHandler):
    """Collects the entries of one page, applying deletions and updates to `entries`."""

    def __init__(self, entries: dict[tuple[str, str], _Entry], locator: Locator, offset: int) -> None:
        super().__init__()
        self.entries = entries
        self.locator = locator
        self.offset = offset  # the page's first line in the whole's numbering (the rows' lines)
        self.stack: list[str] = []
        self.entry: _Entry | None = None
        self.text: list[str] = []
        self.text_size = 0

    def line(self) -> int:
        return self.locator.getLineNumber()

    def startElement(self, name: str, attrs: AttributesImpl) -> None:
        prefix, _, local = name.rpartition(":")
        stack = self.stack
        stack.append(local)
        depth = len(stack)
        if self.text:
            self.text, self.text_size = [], 0
        if depth == 1:
            namespace = attrs.get(f"xmlns:{prefix}" if prefix else "xmlns")
            if local != "queryResult" or namespace not in (None, NAMESPACE):
                raise FormatError(f"not an NCMEC hash sharing v2 query result: <{name}>", self.line())
        elif depth == 3 and local in ENTRY_ELEMENTS and stack[1] in ("images", "videos"):
            kind, deleted = ENTRY_ELEMENTS[local]
            self.entry = _Entry(kind, self.line(), deleted)
        elif self.entry is None or depth > 5:
            return
        elif depth == 5 and stack[3] == "fingerprints":
            value = None if attrs.get("href") is not None else ""
            self.entry.fingerprints.append((local, value, self.offset + self.line()))
        elif depth == 4 and local == "member":
            self.entry.member_id = attrs.get("id")

    def characters(self, content: str) -> None:
        self.text_size += len(content)
        if self.text_size > MAX_TEXT:
            raise FormatError(f"an element's text is longer than {MAX_TEXT} characters", self.line())
        self.text.append(content)

    def endElement(self, name: str) -> None:
        depth = len(self.stack)
        local = self.stack.pop()
        entry = self.entry
        if entry is None or depth > 5:
            if self.text:
                self.text, self.text_size = [], 0
            return
        text = "".join(self.text).strip()
        self.text, self.text_size = [], 0
        if depth == 3:
            self._finish(entry)
            self.entry = None
        elif depth == 4:
            self._field(entry, local, text)
        elif depth == 5 and self.stack[3] == "fingerprints":
            kind, value, line = entry.fingerprints[-1]
            if value is not None:
                entry.fingerprints[-1] = (kind, text, line)

    @staticmethod
    def _field(entry: _Entry, local: str, text: str) -> None:
        if local == "id":
            entry.entry_id = text
        elif local == "member":
            entry.member = text or None
        elif local == "classification":
            entry.classification = text or None

    def _finish(self, entry: _Entry) -> None:
        if not entry.entry_id:
            raise FormatError(f"an NCMEC {entry.kind} entry without an id", entry.line)
        key = (entry.kind, entry.entry_id)
        earlier = self.entries.get(key)
        if (
            earlier is not None
            and None not in (earlier.member_id, entry.member_id)
            and earlier.member_id != entry.member_id
        ):
            # Ids may be each member's own (pytx keys entries by member and id): the later would replace, or
            # delete, another member's entry without a word.
            change = "delete" if entry.deleted else "replace"
            raise FormatError(
                f"{entry.kind} id {entry.entry_id!r} is given by members {earlier.member_id} and "
                f"{entry.member_id}: one member's entry would {change} the other's",
                entry.line,
            )
        if entry.deleted:
            self.entries.pop(key, None)
            return
        self.entries[key] = entry  # a later state of an entry replaces the earlier one, in its place


class PageError(FormatError):
    """A FormatError in one page of a folder: path names the page, line is the page's own."""

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        super().__init__(message, line)
        self.path = path


@dataclass(frozen=True, slots=True)
class Page:
    """One saved response: where it came from (for errors) and its bytes."""

    name: str
    data: bytes


def read_pages(pages_in_order: Iterator[Page], starts: list[tuple[str, int]]) -> RawList:
    """The list rows of saved pages read in order. `starts` receives where each page's lines start in the
    rows' line numbers (a page's line n is line `start + n` of the whole: `locate` turns it back);
    raises PageError naming the page of a malformed one."""
    entries: dict[tuple[str, str], _Entry] = {}
    offset = 0
    for page in pages_in_order:
        starts.append((page.name, offset))
        try:
            _parse(page.data, entries, offset)
        except FormatError as error:
            raise PageError(page.name, error.message, error.line) from None
        offset += _lines(page.data)
    try:
        return _rows(list(entries.values()))
    except FormatError as error:  # a fingerprint's element name that is no type name, or too many unknown
        page, line = locate(starts, error.line) if error.line is not None else (starts[-1][0], None)
        raise PageError(page, error.message, line) from None


def _lines(data: bytes) -> int:
    """The lines of a page as the XML parser counts them: a line ends at "\n", "\r\n" or a lone "\r"."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n") + 1


def locate(starts: list[tuple[str, int]], line: int) -> tuple[str, int]:
    """The page and its own line for a line number of the whole (read_pages' starts)."""
    name, offset = next((s for s in reversed(starts) if s[1] < line), starts[0])
    return name, line - offset


def _parse(data: bytes, entries: dict[tuple[str, str], _Entry], offset: int) -> None:
    """Feed one page to the hardened parser; its entries update `entries`."""
    parser = DefusedExpatParser(forbid_dtd=True)
    handler = _Handler(entries, parser, offset)
    parser.setContentHandler(handler)
    try:
        for start in range(0, len(data), READ_SIZE):
            parser.feed(data[start : start + READ_SIZE])
        parser.close()
    except SAXParseException as error:
        raise FormatError(f"not well-formed XML: {error.getMessage()}", error.getLineNumber()) from None
    except LookupError as error:  # an encoding Python does not know, named in the XML declaration
        raise FormatError(f"not readable XML: {error}", parser.getLineNumber()) from None
    except DefusedXmlException:
        message = "refused: the document declares a document type (DTD): entities are never expanded"
        raise FormatError(message, parser.getLineNumber()) from None


def _rows(entries: list[_Entry]) -> RawList:
    """One row per inline fingerprint of every entry; fingerprints without a value counted as skipped."""
    columns: dict[str, list] = {
        k: [] for k in ("type", "hash", "id", "category", "member", "member_id", "kind")
    }
    lines: list[int] = []
    not_inline: dict[str, list[int]] = {}
    for entry in entries:
        for kind, value, line in entry.fingerprints:
            if value is None:
                not_inline.setdefault(kind.lower(), []).append(line)
                continue
            values = (
                kind,
                value,
                entry.entry_id,
                entry.classification,
                entry.member,
                entry.member_id,
                entry.kind,
            )
            for column, item in zip(columns.values(), values, strict=True):
                column.append(item)
            lines.append(line)
    names = FINGERPRINT_TYPES  # pdna: formats.TYPE_ALIASES, once a PhotoDNA plug-in is registered
    line_numbers = np.array(lines, dtype=np.int64)
    types, known, skipped = hash_types(arrowvalues.strings(columns["type"]), names, line_numbers)
    text = {name: arrowvalues.strings(values) for name, values in columns.items()}
    raw = RawList(
        hashes=text["hash"],
        types=types,
        lines=line_numbers,
        ids=text["id"],
        categories=text["category"],
        metadata=pa.table({k: text[k] for k in ("member", "member_id", "kind")}),
    )
    outside = {k: SkippedType(len(v), SkipReason.NOT_IN_LIST, v[0]) for k, v in not_inline.items()}
    return dataclasses.replace(raw.without_skipped(known, skipped), skipped=merged(skipped, outside))

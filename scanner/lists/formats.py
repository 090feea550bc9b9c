"""Hash list file formats: one small reader per format, picked by sniffing the first line.

A reader turns file text into a RawList (hash text, type, id, category and extra columns per row, with
line numbers); hashlist.py decodes and checks the hashes. Adding a format is one class here and a line
in FORMATS. Every reader works on whole columns (pyarrow), never a Python loop per line.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from scanner import arrowvalues
from scanner.hashtypes import BUILT_IN
from scanner.lists.hashtypes import LIST_TYPE_NAMES, first_true, string_buffers
from scanner.lists.skipped import SkippedType, SkipReason


class FormatError(ValueError):
    """A list that does not fit its format; line is 1-based, or None for the file as a whole."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class ListText:
    """A list file's bytes (BOM removed) as lines without surrounding whitespace.

    The lines of the whole file are split when first asked for: the line formats read them, while a CSV
    is read by pyarrow's reader from the bytes, and needs only its first content line (its header), found
    in a prefix of the file. A file-sized copy of every line would be the largest allocation of its load.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.first_line, self._first_content = "", 0  # "" (line 0): no content line
        for cut in _prefixes(data):
            lines, content = _split(data[:cut])
            if cut == len(data):
                self.__dict__["_whole"] = lines, content  # not split twice for the line formats
            found = np.flatnonzero(content)
            if len(found):
                self.first_line, self._first_content = str(lines[int(found[0])].as_py()), int(found[0]) + 1
                break

    @classmethod
    def from_bytes(cls, data: bytes) -> ListText:
        """The text of UTF-8 bytes; raises pyarrow.ArrowInvalid if they are not UTF-8."""
        offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
        whole = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)])
        whole.validate(full=True)
        return cls(data)

    @functools.cached_property
    def _whole(self) -> tuple[pa.Array, np.ndarray]:
        return _split(self.data)

    @property
    def lines(self) -> pa.Array:
        """Every line, trimmed of surrounding whitespace (and so of a "\r" before "\n")."""
        return self._whole[0]

    @property
    def content(self) -> np.ndarray:
        """Which lines are neither blank nor '#' comments."""
        return self._whole[1]

    def first_content_line(self) -> int:
        """1-based number of the first content line."""
        if not self._first_content:
            raise ValueError("the list has no content line")
        return self._first_content


_FIRST_LINE_PREFIXES = (1 << 16, 1 << 22)  # bytes searched for the first content line before the whole file


def _prefixes(data: bytes) -> list[int]:
    """Where to cut the text to look for its first content line: at line ends within each prefix (so that
    no cut splits a line), then the whole text."""
    cuts = [data.rfind(b"\n", 0, size) + 1 for size in _FIRST_LINE_PREFIXES if size < len(data)]
    return [*sorted({cut for cut in cuts if cut > 0}), len(data)]


def _split(data: bytes) -> tuple[pa.Array, np.ndarray]:
    """UTF-8 text (validated) split into trimmed lines with vectorised kernels, and which are content.

    Lines are copied once into one buffer (a 10M-line list would otherwise hold the file three times
    over); a line that may end in non-ASCII whitespace sends the file through pyarrow's Unicode trim.
    """
    lines = _ascii_trimmed_lines(np.frombuffer(data, dtype=np.uint8))
    if lines is None:
        offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
        whole = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)])
        lines = pc.utf8_trim_whitespace(pc.split_pattern(whole, "\n").flatten())
    starts, chars = string_buffers(lines)
    content = np.diff(starts) > 0
    content[content] = chars[starts[:-1][content]] != ord("#")
    return lines, content


_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True  # what pyarrow's utf8_trim_whitespace trims
_TRIM_ROUNDS = 4  # whitespace runs longer than this (rare) go to pyarrow's trim: each round scans every line
# Lists up to this size are packed by numpy: a URL list loads before a scan's first request, and numba's
# first call in a process (its registries, scipy) costs far more than numpy spends on a small file.
NUMPY_PACK_BYTES = 1 << 20
NEWLINE_BLOCK = 1 << 20  # bytes searched for line ends at a time
MAX_CSV_COLUMNS = 1000
COMMENTED_ROW = 'a row starts with "#": delete a commented-out row, or quote the value'
SPANNING_VALUE = "a quoted value spans lines"
WRONG_FIELD_COUNT = "expected {} comma-separated fields"
CSV_BLOCK = 1 << 20  # bytes pyarrow's CSV reader parses at a time (its default), unless a line is longer


def _ascii_trimmed_lines(buffer: np.ndarray) -> pa.Array | None:
    """Every "\n"-separated line without surrounding ASCII whitespace, packed into one new buffer; None
    when a trimmed line starts or ends with a non-ASCII byte (it may be Unicode whitespace)."""
    starts, ends = _line_bounds(buffer)
    for _ in range(_TRIM_ROUNDS):
        lead = starts < ends
        lead[lead] = _ASCII_SPACE[buffer[starts[lead]]]
        tail = starts < ends
        tail[tail] = _ASCII_SPACE[buffer[ends[tail] - 1]]
        if not (lead.any() or tail.any()):
            break
        starts += lead
        ends -= tail & (starts < ends)
    else:
        return None
    filled = starts < ends
    if (buffer[starts[filled]] >= 0x80).any() or (buffer[ends[filled] - 1] >= 0x80).any():
        return None
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=offsets[1:])
    packed = _packed(buffer, starts, ends, offsets)
    return pa.Array.from_buffers(
        pa.large_string(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(packed)]
    )


def _line_bounds(buffer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each "\n"-separated line starts and ends (its "\n" left out)."""
    ends = np.append(_newlines(buffer), len(buffer))
    return np.append(0, ends[:-1] + 1), ends


def _newlines(buffer: np.ndarray) -> np.ndarray:
    """Where each "\n" is, found a block at a time in one scratch array: a comparison of the whole file
    would take fresh memory the size of the file (650 MB for 10M PDQ hashes), and its page faults cost more
    than the search."""
    scratch = np.empty(min(len(buffer), NEWLINE_BLOCK), dtype=bool)
    found = [np.zeros(0, dtype=np.int64)]
    for start in range(0, len(buffer), NEWLINE_BLOCK):
        block = buffer[start : start + NEWLINE_BLOCK]
        hits = scratch[: len(block)]
        np.equal(block, ord("\n"), out=hits)
        found.append(np.flatnonzero(hits) + start)
    return np.concatenate(found)


def _packed(buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """buffer[starts[i]:ends[i]] for every i, one after another (offsets: where each begins)."""
    even = _even_lines(buffer, starts, ends)
    if even is not None:
        return even
    if len(buffer) > NUMPY_PACK_BYTES:
        from scanner.lists import _kernels  # numba: only a large list pays its import and first call

        packed = np.empty(offsets[-1], dtype=np.uint8)
        _kernels.pack_ranges(buffer, starts, ends, packed)
        return packed
    shift = np.repeat(starts - offsets[:-1], ends - starts)
    return buffer[np.arange(offsets[-1], dtype=np.int64) + shift]


def _even_lines(buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """The lines packed by one strided copy when every line (but an empty last one) is as long as the first
    and starts as far after the one before: hashes of one type, one a line, as lists are delivered. None
    for any other file. Numba's first call and the kernel's pass cost the coordinator ~0.4 s for a 1M-entry
    list; the check and the copy, a few ms."""
    count = len(starts) - int(len(starts) > 1 and starts[-1] == ends[-1])
    if count < 2:
        return None
    width, step = int(ends[0] - starts[0]), int(starts[1] - starts[0])
    if width == 0 or ((ends[:count] - starts[:count]) != width).any():
        return None
    if (np.diff(starts[:count]) != step).any():
        return None
    rows = np.lib.stride_tricks.as_strided(
        buffer[int(starts[0]) :], shape=(count, width), strides=(step, 1), writeable=False
    )
    return np.ascontiguousarray(rows).reshape(-1)


@dataclass(frozen=True, slots=True)
class RawList:
    """A list's rows before their hashes are decoded: all columns as text, with the line of each row."""

    hashes: pa.Array
    types: pa.Array | str  # one type name per row, or one for every row
    lines: np.ndarray  # 1-based line number of each row
    ids: pa.Array | None = None
    categories: pa.Array | None = None
    metadata: pa.Table | None = None
    skipped: Mapping[str, SkippedType] = field(default_factory=dict)  # rows of types left out, by type

    def without_skipped(self, known: pa.Array, skipped: Mapping[str, SkippedType]) -> RawList:
        """The rows where `known` is true; the others are counted in `skipped`."""
        if not skipped:
            return self
        types = self.types if isinstance(self.types, str) else self.types.filter(known)
        return RawList(
            self.hashes.filter(known),
            types,
            self.lines[arrowvalues.numpy(known)],
            None if self.ids is None else self.ids.filter(known),
            None if self.categories is None else self.categories.filter(known),
            None if self.metadata is None else self.metadata.filter(known),
            skipped,
        )


class ListFormat(ABC):
    """A list file format: recognises its first line and reads a whole file into a RawList."""

    name: ClassVar[str]
    typed: ClassVar[bool] = False  # rows name their own hash type (a TYPE: prefix is then refused)

    @classmethod
    @abstractmethod
    def sniff(cls, first_line: str, hash_type: str | None) -> bool:
        """Whether a file whose first content line is first_line is in this format."""

    @abstractmethod
    def read(self, text: ListText, hash_type: str | None) -> RawList:
        """All rows of the file; raises FormatError naming the line of the first malformed one."""

    @classmethod
    def single_type(cls, first_line: str, hash_type: str | None) -> str | None:
        """The hash type of every row, when the first line and the spec's TYPE tell it; None when rows may
        differ (a format whose rows name their types) or it cannot be told."""
        return None


class CsvFormat(ListFormat):
    """A CSV with a header naming a type column and a hash column; other columns become metadata."""

    typed = True
    roles: ClassVar[Mapping[str, tuple[str, ...]]]  # role -> accepted header names (lower_snake_case)
    type_names: ClassVar[Mapping[str, str]]  # type column value (lower case) -> hash type
    only_own_types: ClassVar[bool] = False  # only type_names (and plug-in aliases), not every listable type

    @classmethod
    def sniff(cls, first_line: str, hash_type: str | None) -> bool:
        found = cls._roles_of(_header(first_line))
        return "type" in found.values() and "hash" in found.values()

    @classmethod
    def _roles_of(cls, header: list[str]) -> dict[str, str]:
        """Header name -> role, for the columns this format recognises (case, spaces and dashes aside)."""
        roles = {}
        for name in header:
            plain = re.sub(r"[\s-]+", "_", name.strip().lower())
            for role, accepted in cls.roles.items():
                if plain in accepted and role not in roles.values():
                    roles[name] = role
        return roles

    def read(self, text: ListText, hash_type: str | None) -> RawList:
        header = _header(text.first_line)
        if len(header) > MAX_CSV_COLUMNS:  # the reader takes kilobytes a column before a row is read
            raise FormatError(
                f"a header of {len(header)} columns (a list has a few; at most {MAX_CSV_COLUMNS})",
                text.first_content_line(),
            )
        if len(set(header)) != len(header):
            raise FormatError(
                f"the header repeats a column name: {text.first_line!r}", text.first_content_line()
            )
        table, lines = _read_csv(text, header)
        roles = self._roles_of(header)
        extra = [name for name in header if name not in roles]
        metadata = table.select(extra) if extra else None
        column = {role: table.column(name) for name, role in roles.items()}
        del table
        for role in column:  # each column's chunks go as its one array is made: not the table twice over
            column[role] = column[role].combine_chunks()
        types, known, skipped = hash_types(column.pop("type"), self.type_names, lines, self.only_own_types)
        raw = RawList(
            hashes=trimmed(column.pop("hash")),
            types=types,
            lines=lines,
            ids=_optional(column.get("id")),
            categories=_optional(column.get("category")),
            metadata=metadata,
        )
        return raw.without_skipped(known, skipped)


class CanonicalCsv(CsvFormat):
    """The scanner's own CSV: `hash_type,hash` and optional `id,category`, with any hash type."""

    name = "csv"
    roles: ClassVar = {"type": ("hash_type",), "hash": ("hash",), "id": ("id",), "category": ("category",)}
    type_names: ClassVar = LIST_TYPE_NAMES


class NcmecCsv(CsvFormat):
    """Hash-sharing exports (NCMEC style): liberal in column names, strict in type values."""

    name = "ncmec-csv"
    roles: ClassVar = {
        "type": ("hash_type", "type", "algorithm", "hash_algorithm", "hashtype"),
        "hash": ("hash", "hash_value", "hashvalue", "value", "digest"),
        "id": ("id", "hash_id", "entry_id", "image_id", "record_id", "file_id"),
        "category": ("category", "classification", "label", "class"),
    }
    type_names: ClassVar = {
        "md5": "md5",
        "sha1": "sha1",
        "sha-1": "sha1",
        "sha256": "sha256",
        "sha-256": "sha256",
        "pdq": "pdq",
    }
    only_own_types = True  # its README entry: md5, sha1 or sha-1, sha256 or sha-256, pdq


SIGNAL_TYPES: Mapping[str, str] = {
    "pdq": "pdq",
    "md5": "md5",
    "photo_md5": "md5",
    "video_md5": "md5",
    "video_sha256": "sha256",
    "url": "url",
    "url_md5": "url_md5",
}
"""python-threatexchange signal type names -> hash types (digests of the file's bytes whatever the content
type); any other name a registered type has is its own (a plug-in's SignalType)."""


class ThreatExchangeCsv(CsvFormat):
    """`threatexchange dataset -P --csv`: `signal_type,signal_str,collab,category,tags` (tags
    space-separated); collab and tags become entry metadata."""

    name = "threatexchange-csv"
    roles: ClassVar = {"type": ("signal_type",), "hash": ("signal_str",), "category": ("category",)}
    type_names: ClassVar = SIGNAL_TYPES


class ThreatExchangeText(ListFormat):
    """python-threatexchange signal lines: `<signal_type> <hash>`, e.g. `pdq 5f1c...` or `video_md5 ...`."""

    name = "threatexchange"
    typed = True
    type_names: ClassVar = SIGNAL_TYPES
    # a signal type the scanner may not know (photodna), but not a hex hash with a trailing word
    _line = re.compile(r"^(?![0-9A-Fa-f]+\s)[A-Za-z][A-Za-z0-9_]*\s+\S+$")

    @classmethod
    def sniff(cls, first_line: str, hash_type: str | None) -> bool:
        return cls._line.match(first_line) is not None

    def read(self, text: ListText, hash_type: str | None) -> RawList:
        values, lines = _content(text)
        parts = pc.extract_regex(values, r"^(?P<signal>\S+)\s+(?P<hash>\S+)$")
        if parts.null_count:
            row = first_true(parts.is_null())
            raise FormatError("expected '<signal_type> <hash>'", int(lines[row]))
        types, known, skipped = hash_types(parts.field("signal"), self.type_names, lines)
        return RawList(hashes=parts.field("hash"), types=types, lines=lines).without_skipped(known, skipped)


class PdqHashio(ListFormat):
    """Lists read by the PDQ C++ tools (hashio): `[hash=]<64 hex>[,metadata]`; metadata is the entry id."""

    name = "pdq-hashio"
    _line = re.compile(r"^(hash=)?[0-9a-fA-F]{64}(,.*)?$")

    @classmethod
    def sniff(cls, first_line: str, hash_type: str | None) -> bool:
        marked = first_line.startswith("hash=") or "," in first_line
        return marked and cls._line.match(first_line) is not None

    def read(self, text: ListText, hash_type: str | None) -> RawList:
        values, lines = _content(text)
        parts = pc.extract_regex(values, r"^(?:hash=)?(?P<hash>[^,]*)(?:,(?P<id>.*))?$")
        return RawList(
            hashes=trimmed(parts.field("hash")),
            types=hash_type or "pdq",
            lines=lines,
            ids=_optional(parts.field("id")),
        )

    @classmethod
    def single_type(cls, first_line: str, hash_type: str | None) -> str | None:
        return hash_type or "pdq"


class PlainText(ListFormat):
    """One hash a line. The type is the spec's TYPE: or else told by length (md5 = 32 hex, sha1 = 40)."""

    name = "text"
    by_length: ClassVar = {32: "md5", 40: "sha1"}
    ambiguous: ClassVar = {64: "sha256 or pdq", 16: "phash or dhash"}

    @classmethod
    def sniff(cls, first_line: str, hash_type: str | None) -> bool:
        return hash_type is not None or re.fullmatch(r"[0-9a-fA-F]+", first_line) is not None

    def read(self, text: ListText, hash_type: str | None) -> RawList:
        values, lines = _content(text)
        return RawList(hashes=values, types=hash_type or self._type_by_length(text, lines), lines=lines)

    @classmethod
    def single_type(cls, first_line: str, hash_type: str | None) -> str | None:
        return hash_type or cls.by_length.get(len(first_line))

    def _type_by_length(self, text: ListText, lines: np.ndarray) -> str:
        length = len(text.first_line)
        if length in self.by_length:
            return self.by_length[length]
        if length in self.ambiguous:
            raise FormatError(
                f"{length} hex digits could be {self.ambiguous[length]}: name the type as TYPE:PATH",
                int(lines[0]),
            )
        raise FormatError(
            f"cannot tell the hash type of a {length}-character line: use TYPE:PATH", int(lines[0])
        )


FORMATS: tuple[type[ListFormat], ...] = (
    CanonicalCsv,
    NcmecCsv,
    ThreatExchangeCsv,
    ThreatExchangeText,
    PdqHashio,
    PlainText,
)
"""Every format, in the order they are tried: the first whose sniff accepts the file reads it."""


def single_type(first_line: str, hash_type: str | None) -> str | None:
    """The hash type every row of a list has, told from its first content line (and the spec's TYPE) as
    read_list would read it; None when rows may name their own types or the line fits no format."""
    for list_format in FORMATS:
        if list_format.sniff(first_line, hash_type):
            return None if list_format.typed else list_format.single_type(first_line, hash_type)
    return None


def read_list(text: ListText, hash_type: str | None) -> tuple[str, RawList]:
    """The format name and rows of a list file; hash_type is the spec's TYPE: prefix, if any."""
    if not text.first_line:
        raise FormatError("the list is empty")
    stray_return = _stray_carriage_return(text.data)
    if stray_return is not None:
        raise FormatError("a carriage return inside a line: use \\n or \\r\\n line breaks", stray_return)
    for list_format in FORMATS:
        if list_format.sniff(text.first_line, hash_type):
            if hash_type is not None and list_format.typed:
                raise FormatError(
                    f"this {list_format.name} list names its own hash types: drop the TYPE: prefix"
                )
            return list_format.name, list_format().read(text, hash_type)
    accepted = ", ".join([*(f.name for f in FORMATS), "ncmec-xml"])  # XML: read apart (lists/ncmec.py)
    raise FormatError(
        f"unrecognised list format: {text.first_line[:80]!r}; accepted formats: {accepted} "
        "(hashlists/README.md)",
        text.first_content_line(),
    )


def _header(first_line: str) -> list[str]:
    """The column names of a CSV header line (none if it does not parse as CSV)."""
    try:
        return [name.strip() for name in next(csv.reader([first_line]))]
    except csv.Error:
        return []


def _stray_carriage_return(data: bytes) -> int | None:
    """The line of the first "\\r" not followed by "\\n" (CSV readers would split lines there)."""
    if b"\r" not in data:
        return None
    buffer = np.frombuffer(data, dtype=np.uint8)
    returns = np.flatnonzero(buffer[:-1] == 13)
    stray = returns[buffer[returns + 1] != 10]
    return data.count(b"\n", 0, int(stray[0])) + 1 if len(stray) else None


def _content(text: ListText) -> tuple[pa.Array, np.ndarray]:
    """The non-blank, non-comment lines and their 1-based line numbers."""
    rows = np.flatnonzero(text.content)
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # one run (a final newline, a heading comment)
        return text.lines.slice(int(rows[0]), len(rows)), rows + 1
    return text.lines.filter(arrowvalues.booleans(text.content)), rows + 1


@dataclass(frozen=True, slots=True)
class _CsvRows:
    """Where a CSV's rows lie: the 1-based lines a CSV reader sees as rows after the header (all but empty
    ones: "" or "\\r"), the offset of the line after the header, and the longest line's length."""

    lines: np.ndarray
    body: int
    longest: int
    commented: int  # the first row's line that starts with "#" (0: none)

    @classmethod
    def of(cls, data: bytes, header_line: int) -> _CsvRows:
        buffer = np.frombuffer(data, dtype=np.uint8)
        starts, ends = _line_bounds(buffer)
        lengths = ends - starts
        first_bytes = buffer[np.minimum(starts, len(buffer) - 1)]
        carriage_return_only = (lengths == 1) & (first_bytes == ord("\r"))
        rows = np.flatnonzero((lengths > 0) & ~carriage_return_only) + 1
        body = int(starts[header_line]) if header_line < len(starts) else len(data)
        rows = rows[rows > header_line]
        commented = rows[first_bytes[rows - 1] == ord("#")]
        return cls(rows, body, int(lengths.max(initial=0)) + 1, int(commented[0]) if len(commented) else 0)


def _read_csv(text: ListText, header: list[str]) -> tuple[pa.Table, np.ndarray]:
    """The rows after the header, all as strings, and their lines; a malformed row is an error at its line."""
    bad_rows: list[int] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad_rows.append(row.number)
        return "skip"

    rows = _CsvRows.of(text.data, text.first_content_line())
    lines = rows.lines
    if not len(lines):  # the reader calls that an empty file
        return pa.table({name: arrowvalues.strings([]) for name in header}), lines
    # The reader starts after the header, not told to skip lines up to it: it skips only within its first
    # block, so a header after a megabyte of comments would be an error; and a row must fit in one block.
    # Quotes are followed across line breaks (newlines_in_values): else a block cut inside a quoted value
    # closes it there, and its next line reads as a row of its own.
    try:
        table = pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(text.data)[rows.body :]),
            read_options=pacsv.ReadOptions(
                use_threads=False, column_names=header, block_size=max(CSV_BLOCK, 2 * rows.longest)
            ),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string())),
        )
    except pa.ArrowInvalid as exc:  # a quote left open past a block: pyarrow names no row
        found = _first_bad_record(text.data[rows.body :], len(header))
        errors = [(text.first_content_line() + found[0], found[1])] if found else []
        errors += [(rows.commented, COMMENTED_ROW)] if rows.commented else []
        line, message = min(errors, default=(text.first_content_line(), f"malformed CSV ({exc})"))
        raise FormatError(message.splitlines()[0], line) from exc
    # pyarrow numbers a row by its place among the non-empty rows it read, from 1: up to the first value
    # that spans lines each of them is one line, so the first error in the file is the one reported.
    spanning = _first_spanning_row(table, header, bad_rows) if _may_span(table, len(lines), bad_rows) else 0
    errors = []
    if bad_rows and not 0 < spanning < bad_rows[0]:
        errors.append((int(lines[bad_rows[0] - 1]), WRONG_FIELD_COUNT.format(len(header))))
    if spanning:
        errors.append((int(lines[spanning - 1]), SPANNING_VALUE))
    if rows.commented:  # every other format skips such a line: here it would be a live entry
        errors.append((rows.commented, COMMENTED_ROW))
    if _open_at_end(text.data):
        errors.append((int(lines[-1]), "a quoted value is not closed"))
    if errors:
        line, message = min(errors)
        raise FormatError(message, line)
    return table, lines


def _may_span(table: pa.Table, line_count: int, bad_rows: list[int]) -> bool:
    """Whether a quoted value may run over a line break: fewer rows than lines, or a last value left open
    over empty lines only (each of them no row)."""
    if table.num_rows + len(bad_rows) != line_count:
        return True
    last = table.slice(table.num_rows - 1).to_pylist() if table.num_rows else []
    return any("\n" in (value or "") for value in (last[0].values() if last else ()))


def _open_at_end(data: bytes) -> bool:
    """Whether the last line, with no line break after it, leaves a quoted value open (the reader closes it
    at the end of the file): a line break added ends up inside that value."""
    if data.endswith(b"\n"):
        return False
    last = data[data.rfind(b"\n") + 1 :].decode("utf-8", "replace")
    record = next(csv.reader([last + "\n"]), [])
    return any("\n" in value for value in record)


def _first_bad_record(body: bytes, fields: int) -> tuple[int, str] | None:
    """The first record that runs over a line break or has other than `fields` fields: its line, counted
    from the first after the header, and what is wrong (Python's csv reads it: the error path only)."""
    reader = csv.reader(io.StringIO(body.decode("utf-8", "replace"), newline=""))
    done = 0
    try:
        for record in reader:
            if reader.line_num > done + 1 or any("\n" in value for value in record):
                return done + 1, SPANNING_VALUE
            if record and len(record) != fields:
                return done + 1, WRONG_FIELD_COUNT.format(fields)
            done = reader.line_num
    except csv.Error as exc:
        return done + 1, f"malformed CSV ({exc})"
    return None


def _first_spanning_row(table: pa.Table, header: list[str], bad_rows: list[int]) -> int:
    """pyarrow's number of the first row read whose quoted value ran over a line break, or 0 when only a bad
    row did (bad rows were skipped, not in the table)."""
    spans = (pc.match_substring(table.column(name), "\n") for name in header)
    found = [np.flatnonzero(arrowvalues.numpy(spanning)) for spanning in spans]
    first = [int(rows[0]) for rows in found if len(rows)]
    if not first:
        return 0
    number = 1 + min(first)
    for bad in bad_rows:
        number += bad <= number
    return number


# A plug-in's name for a type lists name otherwise (NCMEC's `pdna` is pytx's PhotoDNA signal):
# accepted in every typed format once the plug-in is registered, skipped and counted before.
TYPE_ALIASES: Mapping[str, str] = {"pdna": "photodna"}
_TYPE_NAME = r"^[a-z][a-z0-9_.+-]{0,63}$"  # what a list may call a hash type, known or not
_HEX_DIGEST = r"^[0-9a-f]{16,}$"  # a hash in the type column (columns swapped): an error, never a type name
# Distinct unknown type names a list may hold (each is skipped and named in the reports): more is not a list
# of hashes the scanner cannot compute but a column of something else.
MAX_UNKNOWN_TYPES = 100


def hash_types(
    values: pa.Array, names: Mapping[str, str], lines: np.ndarray, own_only: bool = False
) -> tuple[pa.Array, pa.Array, dict[str, SkippedType]]:
    """Row type names mapped to hash types (`names`, else the live registry's listable names: a plug-in's
    type counts as soon as it is registered; with own_only, `names` and plug-in aliases only), which rows
    are of a known type, and the rows of other types, counted by name; a value that is no type name at all
    (a hash, in swapped columns) is an error at its first line, as are too many unknown names."""
    values = pc.utf8_lower(trimmed(values.cast(pa.string())))
    aliases = {alias: name for alias, name in TYPE_ALIASES.items() if name in LIST_TYPE_NAMES}
    # A format strict in its type values still takes a plug-in's type by its own name (PhotoDNA).
    listable = {name: name for name in LIST_TYPE_NAMES if not own_only or name not in BUILT_IN}
    accepted = {**listable, **aliases, **names}
    no = arrowvalues.boolean(False)
    digest = pc.fill_null(pc.match_substring_regex(values, _HEX_DIGEST), no)
    named = pc.and_(pc.fill_null(pc.match_substring_regex(values, _TYPE_NAME), no), pc.invert(digest))
    bad = np.flatnonzero(~arrowvalues.numpy(named))
    if len(bad):
        row = int(bad[0])
        if digest[row].as_py():  # the list's own hash: not repeated in a message
            raise FormatError("a hash value where a hash type's name should be", int(lines[row]))
        raise FormatError(f"not a hash type name: {values[row].as_py()!r}", int(lines[row]))
    known = pc.is_in(values, value_set=arrowvalues.strings(list(accepted)))
    skipped = _skipped_by_name(values, known, lines)
    unique = pc.unique(values.filter(known))
    targets = arrowvalues.strings([accepted[name] for name in unique.to_pylist()])
    return pc.take(targets, pc.index_in(values, value_set=unique)), known, skipped


def _skipped_by_name(values: pa.Array, known: pa.Array, lines: np.ndarray) -> dict[str, SkippedType]:
    """The rows of unknown types, counted by type name with the line of the first."""
    unknown = np.flatnonzero(~arrowvalues.numpy(known))
    if not len(unknown):
        return {}
    encoded = pc.dictionary_encode(values.take(arrowvalues.integers(unknown)))
    kinds, firsts, counts = np.unique(
        arrowvalues.numpy(encoded.indices), return_index=True, return_counts=True
    )
    names = encoded.dictionary.to_pylist()
    if len(kinds) > MAX_UNKNOWN_TYPES:
        raise FormatError(
            f"{len(kinds)} different hash type names the scanner does not know (at most {MAX_UNKNOWN_TYPES}):"
            " is this the type column?",
            int(lines[unknown[firsts.min()]]),
        )
    skipped = {
        names[kind]: SkippedType(int(count), SkipReason.NO_HASHER, int(lines[unknown[first]]))
        for kind, first, count in zip(kinds, firsts, counts, strict=True)
    }
    return dict(sorted(skipped.items()))


def _optional(values: pa.Array | None) -> pa.Array | None:
    """Trimmed text with empty values as nulls; None when the column is absent or all empty."""
    if values is None:
        return None
    text = trimmed(values.cast(pa.string()))
    empty = pc.fill_null(pc.equal(text, arrowvalues.text("")), arrowvalues.boolean(True))
    if not pc.any(empty).as_py():
        return text
    if pc.all(empty).as_py():
        return None
    return pc.if_else(empty, arrowvalues.null(pa.string()), text)


def trimmed(values: pa.Array) -> pa.Array:
    """pyarrow's utf8_trim_whitespace, which copies every value: only when some value starts or ends with
    whitespace, or with a non-ASCII byte (which may be Unicode whitespace)."""
    starts, chars = string_buffers(values)
    filled = np.flatnonzero(starts[1:] > starts[:-1])
    edges = np.concatenate((chars[starts[filled]], chars[starts[filled + 1] - 1]))
    if _ASCII_SPACE[edges].any() or (edges >= 0x80).any():
        return pc.utf8_trim_whitespace(values)
    return values

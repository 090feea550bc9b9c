"""Loaded hash lists: spec parsing, file checks, decoding, duplicate handling and per-type entries."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scanner import arrowvalues
from scanner.errors import HashListError
from scanner.lists import ncmec
from scanner.lists.formats import FormatError, ListText, RawList, read_list
from scanner.lists.hashtypes import LIST_TYPE_NAMES, BadValue, ListKeys, list_keys
from scanner.lists.index import aligned_copy, first_occurrences
from scanner.lists.skipped import SkippedType
from scanner.regularfile import open_regular

ColumnT = TypeVar("ColumnT", pa.Array, pa.Table, None)
# A spec's own name: NAME=rest (ListSpec.parse; a rescan adding lists tells a named one by it).
NAMED_SPEC = re.compile(r"^([A-Za-z0-9_.-]+)=(.+)$")


class DuplicateHashWarning(UserWarning):
    """A list repeats a hash; the repeats were merged into the first entry."""


@dataclass(frozen=True, slots=True)
class ListSpec:
    """A parsed list spec: NAME=TYPE:PATH, with NAME defaulting to the file stem."""

    name: str
    hash_type: str | None
    path: Path

    @classmethod
    def parse(cls, spec: str) -> ListSpec:
        """Split PATH | NAME=PATH | TYPE:PATH | NAME=TYPE:PATH; a TYPE must be a known hash type."""
        name = None
        named = NAMED_SPEC.match(spec)
        if named:
            name, spec = named.groups()
        hash_type = None
        typed = re.match(r"^([A-Za-z0-9_]+):(.+)$", spec)
        if typed and not Path(spec).exists():
            hash_type, spec = typed.group(1).lower(), typed.group(2)
            if hash_type not in LIST_TYPE_NAMES:
                known = ", ".join(LIST_TYPE_NAMES)
                raise HashListError(spec, f"unknown hash type {hash_type!r} in list spec (known: {known})")
        path = Path(spec)
        return cls(name or path.stem, hash_type, path)


@dataclass(frozen=True, eq=False)
class HashEntries:
    """The entries of one hash type in one list, in file order (repeats merged)."""

    hash_type: ListKeys
    keys: np.ndarray  # (n, nbytes) uint8
    ids: pa.Array | None = None  # entry ids; null (or no array) means the hash's own text
    categories: pa.Array | None = None
    metadata: pa.Table | None = None
    texts: pa.Array | None = None  # a plug-in type's signal strings, for its own compare (lists/signals.py)

    def __len__(self) -> int:
        return len(self.keys)

    def entry_id(self, row: int) -> str:
        """The list's id for an entry: its id column, or the hash in lower-case hex."""
        if self.ids is not None and self.ids[row].is_valid:
            return str(self.ids[row].as_py())
        return self.keys[row].tobytes().hex()

    def category(self, row: int) -> str | None:
        """The entry's category, if the list gives one."""
        if self.categories is None:
            return None
        value = self.categories[row].as_py()
        return None if value is None else str(value)

    def fields(self, row: int) -> tuple[tuple[str, str], ...]:
        """The entry's metadata columns that hold a value, by name (read for matched entries only)."""
        if self.metadata is None:
            return ()
        values = self.metadata.slice(row, 1).to_pylist()[0]
        return tuple((name, str(value)) for name, value in values.items() if value not in (None, ""))

    def without_fields(self, names: Collection[str]) -> HashEntries:
        """These entries with the named metadata columns dropped (the rest shared, not copied)."""
        if self.metadata is None or not set(names) & set(self.metadata.column_names):
            return self
        kept = [name for name in self.metadata.column_names if name not in names]
        return dataclasses.replace(self, metadata=self.metadata.select(kept) if kept else None)


@dataclass(frozen=True, eq=False)
class HashList:
    """One loaded list file: where it came from, what format it was, and its entries by hash type."""

    name: str
    path: Path
    digest: str  # sha256 hex of the file's bytes
    format: str
    entries: Mapping[str, HashEntries]
    duplicates_merged: int = 0
    skipped: Mapping[str, SkippedType] = field(default_factory=dict)  # entries of types left out, by type
    size: int = 0  # bytes read (a folder of pages: all of them)

    @property
    def counts(self) -> dict[str, int]:
        """Entries per hash type."""
        return {name: len(entries) for name, entries in self.entries.items()}

    @property
    def stats(self) -> dict[str, object]:
        """A JSON-ready summary for reports and manifests."""
        return {
            "name": self.name,
            "path": str(self.path),
            "sha256": self.digest,
            "format": self.format,
            "counts": self.counts,
            "duplicates_merged": self.duplicates_merged,
            "skipped": {name: skipped.stats(name) for name, skipped in self.skipped.items()},
        }


def load_hashlist(spec: str | ListSpec) -> HashList:
    """Read, check and decode one list; raises HashListError naming the file and line of any problem."""
    spec = spec if isinstance(spec, ListSpec) else ListSpec.parse(spec)
    path = str(spec.path)
    if spec.path.is_dir():
        return _load_ncmec(spec, None)
    data = _read(path)
    if ncmec.is_xml(data):
        return _load_ncmec(spec, data)
    text = _checked_text(data, path)
    try:
        format_name, raw = read_list(text, spec.hash_type)
    except FormatError as error:
        raise HashListError(path, error.message, error.line) from None
    entries, merged = _decode(raw, path)
    skipped = raw.skipped
    del text, raw
    pa.default_memory_pool().release_unused()  # hand the file's text back to the OS, not to a pool
    digest = hashlib.sha256(data).hexdigest()
    return HashList(spec.name, spec.path, digest, format_name, entries, merged, dict(skipped), len(data))


def _read(path: str) -> bytes:
    try:
        with open_regular(path) as handle:  # a FIFO or /dev/zero named as a list must not hang the scan
            return handle.read()
    except OSError as error:
        raise HashListError(path, f"cannot read the list: {error.strerror or error}") from None


def _load_ncmec(spec: ListSpec, data: bytes | None) -> HashList:
    """An NCMEC hash sharing response: one saved file (its bytes, `data`), or a folder of saved pages."""
    path = str(spec.path)
    if spec.hash_type is not None:
        raise HashListError(path, f"this {ncmec.NAME} list names its own hash types: drop the TYPE: prefix")
    try:
        files = [spec.path] if data is not None else ncmec.pages(spec.path)
    except OSError as error:
        raise HashListError(path, f"cannot read the list: {error.strerror or error}") from None
    if not files:
        message = f"a directory with no {ncmec.PAGE_SUFFIX} file (a folder of saved NCMEC pages holds them)"
        raise HashListError(path, f"cannot read the list: {message}")
    digests: list[tuple[str, str]] = []
    sizes: list[int] = []

    def read_all() -> Iterator[ncmec.Page]:
        for page in files:
            content = data if data is not None else _read(str(page))
            digests.append((page.name, hashlib.sha256(content).hexdigest()))
            sizes.append(len(content))
            yield ncmec.Page(str(page), content)

    starts: list[tuple[str, int]] = []
    try:
        raw = ncmec.read_pages(read_all(), starts)
    except ncmec.PageError as error:
        raise HashListError(error.path, error.message, error.line) from None

    def where(line: int) -> str:
        page, own = ncmec.locate(starts, line)
        return f"{os.path.basename(page)} line {own}" if data is None else at_line(own)

    try:
        entries, merged = _decode(raw, path, where)
    except HashListError as error:
        if error.line is None:
            raise
        page, line = ncmec.locate(starts, error.line)
        raise HashListError(page, error.message, line) from None
    digest = digests[0][1] if data is not None else ncmec.folder_digest(digests)
    size = sum(sizes)
    skipped = {name: _on_page(found, starts, data is None) for name, found in raw.skipped.items()}
    return HashList(spec.name, spec.path, digest, ncmec.NAME, entries, merged, skipped, size)


def _on_page(skipped: SkippedType, starts: list[tuple[str, int]], folder: bool) -> SkippedType:
    """A folder's skipped type with its first line as a line of its page (and the page named)."""
    if skipped.first_line is None:
        return skipped
    page, line = ncmec.locate(starts, skipped.first_line)
    return dataclasses.replace(skipped, first_line=line, page=os.path.basename(page) if folder else None)


def _checked_text(data: bytes, path: str) -> ListText:
    """The file as lines, refusing text that is not UTF-8 (the error names the first bad line)."""
    body = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return ListText.from_bytes(body)
    except pa.ArrowInvalid:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as error:
            line = body.count(b"\n", 0, error.start) + 1
            raise HashListError(path, "not UTF-8 text", line) from None
        raise


def at_line(line: int) -> str:
    """A line of a list file, in a message."""
    return f"line {line}"


def _decode(
    raw: RawList, path: str, where: Callable[[int], str] = at_line
) -> tuple[dict[str, HashEntries], int]:
    """Entries per hash type and how many repeated hashes were merged; `where` names a line of the list in
    a message (for a folder of pages, the page and its own line)."""
    if len(raw.hashes) == 0 and raw.skipped:
        unknown = "; ".join(
            f"unknown hash type {name!r} on {n.entries} entries ({n.why(name)})"
            for name, n in raw.skipped.items()
        )
        raise HashListError(path, f"no entry of a hash type the scanner can match: {unknown}")
    if len(raw.hashes) == 0:
        raise HashListError(path, "the list has no entries")
    names = [raw.types] if isinstance(raw.types, str) else pc.unique(raw.types).to_pylist()
    if len(names) == 1:  # every row: no mask, and no copy of the columns through one
        groups: dict[str, pa.Array | None] = {str(names[0]): None}
    else:
        groups = {str(name): pc.equal(raw.types, arrowvalues.text(str(name))) for name in names}
    entries = {}
    merged = 0
    for type_name in sorted(groups):
        rows = groups[type_name]
        entries[type_name], repeats = _decode_type(list_keys(type_name), raw, rows, path, where)
        merged += repeats
    return entries, merged


def _decode_type(
    hash_type: ListKeys, raw: RawList, rows: pa.Array | None, path: str, where: Callable[[int], str]
) -> tuple[HashEntries, int]:
    """One type's entries (rows: which of the list's rows hold this type; None for all): decoded keys,
    repeats merged, ids checked."""
    lines = raw.lines if rows is None else raw.lines[arrowvalues.numpy(rows)]
    try:
        parsed = hash_type.parse(_subset(raw.hashes, rows))
    except BadValue as error:
        raise HashListError(path, error.message, int(lines[error.row])) from None
    keep = first_occurrences(parsed.keys)
    repeats = int(len(keep) - keep.sum())
    kept = None
    if repeats:
        first_repeat = int(lines[np.flatnonzero(~keep)[0]])
        warnings.warn(
            f"{path}: {repeats} repeated {hash_type.name} hash(es) merged into their first entry "
            f"(first repeat at {where(first_repeat)})",
            DuplicateHashWarning,
            stacklevel=2,
        )
        kept = arrowvalues.booleans(keep)
    ids = _subset(_subset(raw.ids, rows), kept) if raw.ids is not None else _subset(parsed.names, kept)
    _check_unique_ids(ids, lines[keep], hash_type.name, path, where)
    entries = HashEntries(
        hash_type=hash_type,
        keys=aligned_copy(parsed.keys[keep]) if repeats else parsed.keys,
        ids=ids,
        categories=_subset(_subset(raw.categories, rows), kept),
        metadata=_compact(_subset(_subset(raw.metadata, rows), kept)),
        texts=_subset(parsed.names, kept) if hash_type.type.signal else None,
    )
    return entries, repeats


def _compact(metadata: pa.Table | None) -> pa.Table | None:
    """Metadata columns that repeat their values (an NCMEC member, a pytx collab) dictionary-encoded: each
    value held once, four bytes an entry."""
    if metadata is None:
        return None
    columns = {}
    for name, column in zip(metadata.column_names, metadata.columns, strict=True):
        whole = column.combine_chunks()
        repeats = len(whole) >= 2 * pc.count_distinct(whole, mode="all").as_py()
        columns[name] = pc.dictionary_encode(whole) if repeats else whole
    return pa.table(columns)


def _subset(column: ColumnT, mask: pa.Array | None) -> ColumnT:
    """The rows of a column (or table) where mask is true; all of them without a mask."""
    return column if column is None or mask is None else column.filter(mask)


def _check_unique_ids(
    ids: pa.Array | None, lines: np.ndarray, type_name: str, path: str, where: Callable[[int], str]
) -> None:
    """Refuse one id given to two different hashes of the same type (repeats are already merged)."""
    if ids is None:
        return
    valid = np.flatnonzero(arrowvalues.numpy(ids.is_valid()))
    # a stable sort: file order within an id
    order = valid[arrowvalues.numpy(pc.sort_indices(ids.take(arrowvalues.integers(valid))))]
    ordered = ids.take(arrowvalues.integers(order))
    same = arrowvalues.numpy(pc.equal(ordered[1:], ordered[:-1]))
    if not same.any():
        return
    later, earlier = order[1:][same], order[:-1][same]
    first_repeat = int(np.argmin(later))
    row, first_row = int(later[first_repeat]), int(earlier[first_repeat])
    raise HashListError(
        path,
        f"id {ids[row].as_py()!r} is given to two different {type_name} hashes "
        f"(the first at {where(int(lines[first_row]))})",
        int(lines[row]),
    )

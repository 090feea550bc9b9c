"""WebDataset tar shards (img2dataset output), read member by member into memory and never extracted.

Members are grouped into samples by key (directory plus file name up to its first dot, as WebDataset does);
each image member (by extension) is one row, with `url` and `key` from the sample's `.json` sidecar where it
has them. A sample without an image member is one `invalid` row (`no_image_member`). Damage is one `invalid`
row where it is and the walk resynchronises on the next valid header: `corrupt_member` for a stretch that is
not a valid header, `truncated_tar` for data or an end-of-archive marker cut short by the end of the file.

Members are read through tarfile's own reader, so a GNU or PAX sparse member is its expanded bytes (holes as
zeros), bounded by its expanded size. A member with an image name that holds no bytes of its own is a row
too, never followed: `hard_link_member` (its bytes are its target's, a row of its own when it has an image
name), `symlink_member`, `not_a_regular_file` (a device, a FIFO, an unknown type). Directories are not rows.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from scanner.errors import SourceError
from scanner.outcomes import SourceReason
from scanner.sources.base import (
    KEY_COLUMNS,
    URL_COLUMNS,
    Row,
    SourceOptions,
    Span,
    cell_to_str,
    parse_json,
    pick_column,
)
from scanner.sources.storage import input_size, open_input

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"})
SIDECAR_MAX_BYTES = 1024 * 1024
BLOCK = tarfile.BLOCKSIZE
ZERO_CHUNK = 1024 * 1024
# tarfile lets these out of a damaged GNU or PAX sparse header (a map that is not numbers, cut short).
DAMAGED_HEADER = (ValueError, IndexError)
COMPRESSION_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}


@dataclass(frozen=True, slots=True)
class Damage:
    """A stretch of the archive that cannot be read as members."""

    reason: SourceReason
    offset: int
    member: str | None = None


@dataclass(slots=True)
class Sample:
    """Consecutive regular members that share a key, or one damaged stretch; `offset` is where it starts."""

    offset: int
    key: str | None
    members: list[tarfile.TarInfo] = field(default_factory=list)
    damage: Damage | None = None

    @property
    def images(self) -> list[tarfile.TarInfo]:
        return [m for m in self.members if extension(m.name) in IMAGE_EXTENSIONS]

    @property
    def rows(self) -> int:
        return max(len(self.images), 1)


def sample_key(name: str) -> str:
    """WebDataset's key: the member's directory and file name up to the first dot (leading dots kept)."""
    directory, base = posixpath.split(name)
    head = base.lstrip(".")
    stem = base[: len(base) - len(head)] + head.partition(".")[0]
    return posixpath.join(directory, stem)


def extension(name: str) -> str:
    """The last extension of a member name, lower-cased."""
    base = posixpath.basename(name)
    return base.rpartition(".")[2].lower() if "." in base.lstrip(".") else ""


class WebDatasetSource:
    """A `.tar` shard of samples; spans are runs of whole samples, located by their byte offset."""

    kind = "webdataset"

    def __init__(self, path: str, options: SourceOptions) -> None:
        self.path = path
        self.options = options
        self.size = input_size(path)
        if self.size == 0:
            raise SourceError(path, "empty file: not a tar archive")
        with open_input(path) as handle:
            head = handle.read(8)
        for magic, name in COMPRESSION_MAGIC.items():
            if head.startswith(magic):
                raise SourceError(
                    path, f"{name}-compressed: decompress it first (members are read by seeking)"
                )

    def spans(self) -> list[Span]:
        """Walk the headers once (no member data is read) and cut spans of about rows_per_unit rows."""
        spans: list[Span] = []
        start = rows = 0
        offset: int | None = None
        sample: Sample | None = None
        with open_input(self.path) as handle:
            for sample in self._samples(handle, 0):
                if offset is None:
                    offset = sample.offset
                rows += sample.rows
                if rows - start >= self.options.rows_per_unit:
                    spans.append(Span(start, rows, offset=offset))
                    start, offset = rows, None
        if offset is not None:
            spans.append(Span(start, rows, offset=offset))
        if rows == 1 and sample is not None and sample.damage is not None and sample.damage.member is None:
            raise SourceError(self.path, "not a tar archive (no valid member header)")
        return spans

    def read(self, span: Span) -> Iterator[list[Row]]:
        """Yield the span's rows one sample at a time, so at most one sample's images are held here."""
        row = span.start
        with open_input(self.path) as handle:
            for sample in self._samples(handle, span.offset):
                if row >= span.stop:
                    return
                batch = self._rows(handle, sample, row)
                row += len(batch)
                yield batch

    def _samples(self, handle: BinaryIO, start: int) -> Iterator[Sample]:
        """Group the walk's regular members into samples; damage is a sample of its own."""
        current: Sample | None = None
        for item in walk(handle, start, self.size, self.path):
            if isinstance(item, Damage):
                if current is not None:
                    yield current
                    current = None
                yield Sample(item.offset, None, damage=item)
                continue
            if not item.isreg() and (item.isdir() or extension(item.name) not in IMAGE_EXTENSIONS):
                continue
            key = sample_key(item.name)
            if current is None or current.key != key:
                if current is not None:
                    yield current
                current = Sample(item.offset, key)
            current.members.append(item)
        if current is not None:
            yield current

    def _rows(self, handle: BinaryIO, sample: Sample, first_row: int) -> list[Row]:
        damage = sample.damage
        if damage is not None:
            return [Row(self.path, first_row, None, None, member=damage.member, error=damage.reason)]
        images = sample.images
        if not images:
            first = sample.members[0].name
            return [
                Row(self.path, first_row, None, sample.key, member=first, error=SourceReason.NO_IMAGE_MEMBER)
            ]
        url, key, columns = sidecar_fields(self._sidecar(handle, sample), self.options)
        rows = []
        for index, member in enumerate(images):
            row = Row(self.path, first_row + index, url, key or sample.key, dict(columns), member=member.name)
            row.body, row.error = self._body(handle, member)
            rows.append(row)
        return rows

    def _body(self, handle: BinaryIO, member: tarfile.TarInfo) -> tuple[bytes | None, SourceReason | None]:
        """An image member's bytes, or why they are not read: not a file, too large, or cut short."""
        if not member.isreg():
            return None, link_reason(member)
        if member.size < 0:  # the walk calls such a header damage: never a read of the rest of the shard
            return None, SourceReason.CORRUPT_MEMBER
        if member.size > self.options.max_member_bytes:
            return None, SourceReason.MEMBER_TOO_LARGE
        body = read_member(handle, member)
        return (body, None) if len(body) == member.size else (None, SourceReason.TRUNCATED_TAR)

    def _sidecar(self, handle: BinaryIO, sample: Sample) -> dict[str, object]:
        """The sample's `.json` metadata, or {} when it has none that is a small JSON object."""
        meta = next((m for m in sample.members if m.name.lower() == f"{sample.key}.json".lower()), None)
        if meta is None or meta.size > SIDECAR_MAX_BYTES:
            return {}
        try:
            value = parse_json(read_member(handle, meta))
        except ValueError:  # not JSON, not UTF-8, nested too deep, or strings no report can hold
            return {}
        return value if isinstance(value, dict) else {}


def sidecar_fields(meta: dict[str, object], options: SourceOptions) -> tuple[str | None, str | None, dict]:
    """The URL, key and extra columns a sample's metadata gives (img2dataset writes `url` and `key`)."""
    url_field = pick_column(list(meta), options.url_col, URL_COLUMNS)
    key_field = pick_column(list(meta), options.key_col, KEY_COLUMNS)
    url = cell_to_str(meta.get(url_field)) if url_field else None
    key = cell_to_str(meta.get(key_field)) if key_field else None
    return url, key, {c: meta.get(c) for c in options.extra_cols}


def link_reason(member: tarfile.TarInfo) -> SourceReason:
    """Why a member that is not a regular file gives no bytes."""
    if member.islnk():
        return SourceReason.HARD_LINK_MEMBER
    return SourceReason.SYMLINK_MEMBER if member.issym() else SourceReason.NOT_A_REGULAR_FILE


def read_member(handle: BinaryIO, member: tarfile.TarInfo) -> bytes:
    """A regular member's bytes, short (or empty) if the file ends early; a sparse member's through
    tarfile's own reader, which expands its map. The caller bounds member.size, the expanded size, first."""
    if not member.issparse():  # the common case, read directly: tarfile's reader costs 3x per member
        handle.seek(member.offset_data)
        return handle.read(member.size)
    handle.seek(member.offset)
    try:
        with open_tar(handle) as tar:
            data = tar.extractfile(member)
            return data.read(member.size) if data is not None else b""
    except tarfile.ReadError:  # the data, or a sparse map, runs past the end of the file
        return b""


def open_tar(handle: BinaryIO, ignore_zeros: bool = False) -> tarfile.TarFile:
    """tarfile over an open shard from its current position (which tarfile parses at once)."""
    try:
        return tarfile.open(fileobj=handle, mode="r:", ignore_zeros=ignore_zeros, errors="replace")
    except DAMAGED_HEADER as exc:
        raise tarfile.ReadError(f"damaged header ({exc})") from exc


def next_member(tar: tarfile.TarFile) -> tarfile.TarInfo | None:
    """tar.next(), where a damaged header is always a ReadError."""
    try:
        return tar.next()
    except DAMAGED_HEADER as exc:
        raise tarfile.ReadError(f"damaged header ({exc})") from exc


def data_end(member: tarfile.TarInfo, next_header: int) -> int:
    """Where a member's stored data ends. A link, directory or device stores none whatever its size field
    says (tarfile reads the next header right after it); a sparse member stores only its map's chunks (its
    size is the expanded one), and a map that claims more than the header stored is cut at the next
    header, so a lying map damages its own member, not the walk."""
    if not member.isreg() and member.type in tarfile.SUPPORTED_TYPES:
        return member.offset_data
    if not member.issparse():
        return member.offset_data + member.size
    stored = sum(size for _offset, size in member.sparse or ())
    return min(member.offset_data + stored, next_header)


def walk(handle: BinaryIO, start: int, size: int, path: str) -> Iterator[tarfile.TarInfo | Damage]:
    """Yield the members from byte `start` on, and each damaged stretch once; stop at the first truncation.

    tarfile's ignore_zeros mode steps over zero and invalid blocks one at a time; a jump between where a
    member should start and where tarfile found it is damage unless the skipped bytes are all zeros.
    """
    expected = restart = start
    reported = False
    while True:
        tar: tarfile.TarFile | None = None
        try:
            refuse_long_run(handle, restart, size)
            handle.seek(restart)
            with open_tar(handle, ignore_zeros=True) as tar:
                while (member := next_member(tar)) is not None:
                    tar.members.clear()  # TarFile keeps every member it has seen; a walk needs none of them
                    expected = past_global_headers(handle, expected, member.offset)
                    skipped = member.offset > expected and not reported
                    if skipped and not zeros(handle, expected, member.offset):
                        yield Damage(SourceReason.CORRUPT_MEMBER, expected)
                    if member.size < 0 or tar.offset <= member.offset:  # tarfile would go back or stay
                        raise _Backwards(member.offset)
                    if data_end(member, tar.offset) > size:
                        yield Damage(SourceReason.TRUNCATED_TAR, member.offset, member.name)
                        return
                    yield member
                    expected, reported = tar.offset, False
                    refuse_long_run(handle, tar.offset, size)
        except _LongRun as exc:  # tarfile would read it by recursion, as deep as the run is long
            if not reported:
                yield Damage(SourceReason.CORRUPT_MEMBER, exc.start)
            expected = restart = exc.end
            reported = True
            continue
        except _Backwards as exc:  # a negative size: the member is damage, the walk goes on after its header
            if not reported:
                yield Damage(SourceReason.CORRUPT_MEMBER, exc.offset)
            expected = restart = exc.offset + BLOCK
            reported = True
            continue
        except RecursionError:  # a run refuse_long_run did not see (past a stretch tarfile skips): the same
            if not reported:
                yield Damage(SourceReason.CORRUPT_MEMBER, expected)
            restart, reported = past_extended_headers(handle, max(restart, expected), size), True
            continue
        except tarfile.ReadError:
            if expected >= size:  # the last member's padding is cut off: tarfile cannot step past it
                yield Damage(SourceReason.TRUNCATED_TAR, expected)
                return
            # A valid extended header followed by an invalid one: report it and resume one block further on.
            if not reported:
                yield Damage(SourceReason.CORRUPT_MEMBER, expected)
                reported = True
            restart = max(restart, expected, tar.offset if tar is not None else 0) + BLOCK
            continue
        except OSError as exc:
            raise SourceError(path, f"read failed near byte {expected} ({exc})") from exc
        break
    tail = tail_damage(handle, expected, size)
    if tail is not None and not reported:
        yield tail


def tail_damage(handle: BinaryIO, end: int, size: int) -> Damage | None:
    """What follows the last member: a proper end-of-archive marker is zeros; nothing or garbage is damage."""
    if end >= size:
        return Damage(SourceReason.TRUNCATED_TAR, end)
    if zeros(handle, end, size):
        return None
    ends_with_marker = size - end >= BLOCK and zeros(handle, size - BLOCK, size)
    return Damage(SourceReason.CORRUPT_MEMBER if ends_with_marker else SourceReason.TRUNCATED_TAR, end)


class _Backwards(Exception):
    """A member whose size would send tarfile's next header back (or nowhere): its header's offset."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


def header_at(handle: BinaryIO, offset: int) -> tarfile.TarInfo | None:
    """The header block at offset as tarfile parses it alone (no extended header applied), if it is one."""
    handle.seek(offset)
    try:
        return tarfile.TarInfo.frombuf(handle.read(BLOCK), "utf-8", "replace")
    except (tarfile.HeaderError, *DAMAGED_HEADER):
        return None


def after_header(header: tarfile.TarInfo, offset: int) -> int:
    """Where the next header lies after an extended header at offset and its data."""
    return offset + BLOCK + -(-header.size // BLOCK) * BLOCK


def past_global_headers(handle: BinaryIO, offset: int, member_offset: int) -> int:
    """Past the global pax headers (git archive writes one) from offset up to a member: tarfile applies
    them and goes on, so they lie between the last member and the next, and are no damage."""
    while offset < member_offset:
        header = header_at(handle, offset)
        if header is None or header.type != tarfile.XGLTYPE or header.size < 0:
            break
        offset = after_header(header, offset)
    return offset


EXTENDED_TYPES = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


class _LongRun(Exception):
    """A run of more than MAX_EXTENDED_RUN extended headers: where it starts and the header after it."""

    def __init__(self, start: int, end: int) -> None:
        super().__init__(start, end)
        self.start, self.end = start, end


# Extended headers in a row before a member: a real archive has one or two (a long name, pax records);
# tarfile reads each by a recursive call, so a long run would reach the recursion limit, at a length that
# depends on how deep the caller is (the plan and a worker would disagree about the same shard).
MAX_EXTENDED_RUN = 64


def refuse_long_run(handle: BinaryIO, offset: int, size: int) -> None:
    """Raise _LongRun if the next header tarfile reads from offset (past a few zero or invalid blocks, which
    it steps over: past more, the RecursionError fallback) starts a run of more than MAX_EXTENDED_RUN
    extended headers."""

    def header(at: int) -> tarfile.TarInfo | None:
        return header_at(handle, at) if at + BLOCK <= size else None

    limit = min(size, offset + MAX_EXTENDED_RUN * BLOCK)
    found = header(offset)  # parsed once: this runs before every member
    while found is None and offset + BLOCK <= limit:
        offset += BLOCK
        found = header(offset)
    start, count = offset, 0
    while found is not None and found.type in EXTENDED_TYPES and found.size >= 0:
        count += 1
        if count > MAX_EXTENDED_RUN:
            raise _LongRun(start, past_extended_headers(handle, offset, size))
        offset = after_header(found, offset)
        found = header(offset)


def past_extended_headers(handle: BinaryIO, offset: int, size: int) -> int:
    """The first header from offset on that is not an extended one (nor invalid): where a walk resumes
    after a run of extended headers too long for tarfile, in one pass over the run."""
    while offset + BLOCK <= size:
        header = header_at(handle, offset)
        if header is None or header.size < 0:
            offset += BLOCK
        elif header.type in EXTENDED_TYPES:
            offset = after_header(header, offset)
        else:
            return offset
    return offset


def zeros(handle: BinaryIO, start: int, stop: int) -> bool:
    """Tell whether the bytes in [start, stop) are all zero, reading in bounded chunks."""
    handle.seek(start)
    remaining = stop - start
    while remaining > 0:
        chunk = handle.read(min(remaining, ZERO_CHUNK))
        if not chunk or chunk.count(0) != len(chunk):
            return False
        remaining -= len(chunk)
    return True

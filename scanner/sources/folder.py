"""Directories of image files, and how a directory given as input is read: as shards, or as one folder.

Every file whose first bytes sniff as an image, or whose name says it is one, is a row (recursively, sorted,
symlinked directories not followed): a `.jpg` that is an HTML error page is reported `invalid`, not skipped.
Other files (README, captions, JSON) are skipped and counted. A file that cannot be read is a row too,
`invalid` with `unreadable_file`, so nothing goes unchecked silently; so is anything that is not a regular
file (a FIFO, a device, a socket, a symlink to one), `invalid` with `not_a_regular_file`, never opened in a
way that could block or read without end. Symlinks to regular files are followed, inside the tree or out of
it (a Hugging Face cache snapshot is symlinks into its blob store): the row is the file a loader would read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

from scanner.errors import SourceError
from scanner.imageformat import sniff_format
from scanner.outcomes import SourceReason
from scanner.regularfile import NotRegularFileError, open_regular, read_capped
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
from scanner.sources.webdataset import IMAGE_EXTENSIONS, SIDECAR_MAX_BYTES

SNIFF_BYTES = 256
READ_BATCH_ROWS = 16


class FolderSource:
    """A directory tree of image files: one shard, spans are runs of its sorted image paths."""

    kind = "folder"

    def __init__(self, path: str, options: SourceOptions, listed: bool = True) -> None:
        """List the folder (the plan); `listed=False` (a process that reads the plan's spans) skips the walk:
        each span names its files, as the plan listed them. Listed again, the folder could hold other files
        (written or removed since, a pseudo-file that sniffs as something else at each read), and the
        plan's row numbers would name other files."""
        self.path = path
        self.options = options
        self.images: list[str] = []
        self.other_files = 0
        # Taken by the walk that lists the rows: a second walk, for the resume fingerprint, could see a file
        # written since, that a resumed plan would list and shift the rows after it by.
        self.signature: list[object] = []
        if not listed:
            # A node of a cluster without the folder (or with the bare mount point of a file system not
            # mounted there): the shard fails, not each of its files.
            if not holds_files(path):
                raise SourceError(
                    path,
                    "no such directory here, or it is empty: every machine of the scan must see the folder",
                )
            return
        entries = []
        for relative in walk_files(path):
            entries.append(folder_entry(path, relative))
            if extension(relative) in IMAGE_EXTENSIONS or sniffs_as_image(os.path.join(path, relative)):
                self.images.append(relative)
            else:
                self.other_files += 1
        self.images.sort()
        self.signature = folder_signature(entries)
        if not self.images:
            raise SourceError(
                path, f"no dataset shard and no image in the directory ({self.other_files} files)"
            )

    def spans(self) -> list[Span]:
        per_unit = self.options.rows_per_unit
        starts = range(0, len(self.images), per_unit)
        return [
            Span(s, min(s + per_unit, len(self.images)), members=tuple(self.images[s : s + per_unit]))
            for s in starts
        ]

    def read(self, span: Span) -> Iterator[list[Row]]:
        """Yield the span's files (those it names) as rows in small batches, each file read whole."""
        members = span.members or tuple(self.images[span.start : span.stop])
        if len(members) != span.rows:
            raise SourceError(self.path, f"a span of {span.rows} rows names {len(members)} files")
        for first in range(0, len(members), READ_BATCH_ROWS):
            batch = members[first : first + READ_BATCH_ROWS]
            yield [self._row(span.start + first + i, relative) for i, relative in enumerate(batch)]

    def _row(self, index: int, relative: str) -> Row:
        full = os.path.join(self.path, relative)
        meta = sidecar(os.path.splitext(full)[0] + ".json")
        url = cell_to_str(meta.get(pick_column(list(meta), self.options.url_col, URL_COLUMNS) or ""))
        key = cell_to_str(meta.get(pick_column(list(meta), self.options.key_col, KEY_COLUMNS) or ""))
        shown = os.fsencode(relative).decode("utf-8", "replace")  # a file name need not be UTF-8; reports are
        row = Row(self.path, index, url, key or os.path.splitext(shown)[0], member=shown)
        row.columns = {c: meta.get(c) for c in self.options.extra_cols}
        row.body, row.error = read_file(full, self.options.max_member_bytes)
        return row


def holds_files(directory: str) -> bool:
    """Whether a directory is here and holds anything (a file or a directory)."""
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is not None
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise SourceError(directory, f"cannot list directory ({exc.strerror})") from exc


def folder_entry(directory: str, relative: str) -> str:
    """One file of a folder in its signature: its path, size and mtime, as a stat finds it now."""
    try:
        stat = os.stat(os.path.join(directory, relative))
    except OSError:
        return f"{relative}\0unreadable"
    return f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}"


def folder_signature(entries: list[str]) -> list[object]:
    """A folder's signature from its files' entries (folder_entry): their count and a digest of them all."""
    digest = hashlib.sha256("\n".join(sorted(entries)).encode("utf-8", "surrogateescape"))
    return [len(entries), digest.hexdigest()]


def walk_files(directory: str) -> Iterator[str]:
    """Relative paths (with `/`) of every file under a directory; an unreadable directory fails."""

    def fail(error: OSError) -> None:
        raise SourceError(error.filename or directory, f"cannot list directory ({error.strerror})")

    for root, _dirs, files in os.walk(directory, onerror=fail):
        for name in files:
            yield os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/")


def sniffs_as_image(path: str) -> bool:
    """Sniff the first bytes; an unreadable file or one that is not a regular file counts as an image, so
    it is reported, not skipped."""
    try:
        with open_regular(path) as handle:
            return sniff_format(handle.read(SNIFF_BYTES)) is not None
    except OSError:
        return True


def read_file(path: str, max_bytes: int) -> tuple[bytes | None, SourceReason | None]:
    """A file's bytes, or why they are not read: not a regular file, too large, or unreadable."""
    try:
        with open_regular(path) as handle:
            body = read_capped(handle, max_bytes)
    except NotRegularFileError:
        return None, SourceReason.NOT_A_REGULAR_FILE
    except OSError:
        return None, SourceReason.UNREADABLE_FILE
    return (None, SourceReason.MEMBER_TOO_LARGE) if body is None else (body, None)


def sidecar(path: str) -> dict[str, object]:
    """An image's `.json` metadata beside it (img2dataset's `files` layout), or {} when there is no small
    regular file of a JSON object there."""
    try:
        with open_regular(path) as handle:
            data = read_capped(handle, SIDECAR_MAX_BYTES)
        value = parse_json(data) if data is not None else {}
    except (OSError, ValueError):  # unreadable, not JSON, nested too deep, or strings no report can hold
        return {}
    return value if isinstance(value, dict) else {}


def directory_inputs(directory: str, shard_suffixes: tuple[str, ...]) -> list[str]:
    """The shards a directory tree holds, or the directory itself when it is a tree of images.

    A directory holding image files is image data: its `.txt`/`.json` files are captions and metadata, not
    URL lists. A `.parquet` beside a same-named `.tar` or directory is img2dataset's metadata for those
    samples, not a list to fetch. Shards and images in one tree are ambiguous: refused, not half-scanned.
    """
    shards: list[str] = []
    image_dir: str | None = None
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        if any(extension(name) in IMAGE_EXTENSIONS for name in files):
            image_dir = image_dir or root
            continue
        shards.extend(
            os.path.join(root, name) for name in sorted(files) if name.lower().endswith(shard_suffixes)
        )
    shards = drop_metadata(shards)
    if shards and image_dir is not None:
        raise SourceError(
            directory, f"holds dataset shards and image files (in {image_dir}); give them separately"
        )
    return shards or [directory]


def drop_metadata(paths: list[str]) -> list[str]:
    """Leave out each `X.parquet` beside an `X.tar` or a directory `X/`: img2dataset's sample record."""
    present = set(paths)

    def is_metadata(path: str) -> bool:
        stem = path.removesuffix(".parquet")
        return stem != path and (f"{stem}.tar" in present or os.path.isdir(stem))

    return [p for p in paths if not is_metadata(p)]


def extension(name: str) -> str:
    return name.rpartition(".")[2].lower() if "." in name else ""

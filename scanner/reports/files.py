"""Private, atomic file writing: directories 0700, files 0600, visible only once complete."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from scanner.errors import WriteError
from scanner.regularfile import open_regular
from scanner.reports import jsonl

DIR_MODE = 0o700
FILE_MODE = 0o600
# Disk full, quota exceeded, read-only file system, file too large: the file system's fault, and a resume
# gets past them once there is room.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def private_dir(path: str | Path) -> Path:
    """Create (or tighten) a directory so only its owner can list or enter it."""
    directory = Path(path)
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(directory, DIR_MODE)
    return directory


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a private temporary file beside path (a unique name), then rename it over path once flushed
    to disk."""
    target = Path(path)
    # A unique name, created exclusively (mkstemp: O_CREAT|O_EXCL, 0600): two writers never share a file.
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    temp = Path(name)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        if isinstance(exc, OSError) and exc.errno in NO_ROOM:  # a write's OSError does not name the file
            raise WriteError(str(target), exc.strerror or str(exc)) from exc
        raise


@contextlib.contextmanager
def utf8_text(raw: IO[bytes]) -> Iterator[IO[str]]:
    """UTF-8 text over a binary handle whatever the locale, newlines untranslated (as csv wants); the handle
    stays open for atomic_open to sync."""
    text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    try:
        yield text
    finally:
        text.flush()
        text.detach()


def write_json(path: str | Path, data: object) -> None:
    """Write stable, human-readable JSON atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(jsonl.escape(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)) + "\n")


def write_jsonl(handle: IO, records: list[dict]) -> None:
    """Append records as one compact, key-sorted JSON object a line (scanner.reports.jsonl)."""
    jsonl.write_records(handle, records)


def sha256_file(path: str | Path, follow_links: bool = True) -> str:
    """Digest a file in chunks; a regular file only (regularfile.open_regular: a FIFO would hang the open, a
    link to /dev/zero never end), NotRegularFileError (an OSError) otherwise; with follow_links=False a
    symbolic link is refused too."""
    digest = hashlib.sha256()
    with open_regular(path, follow_links=follow_links) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

"""Where shards live: local paths, or fsspec URLs (s3://, gs://, memory://, ...) when fsspec is installed."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from scanner.errors import SourceError
from scanner.regularfile import NotRegularFileError, file_kind, open_regular


def is_remote(path: str) -> bool:
    """Tell whether a path is a URL for fsspec rather than a local path."""
    return "://" in path


def open_input(path: str) -> BinaryIO:
    """Open a shard for seekable binary reading, local (regular files only) or remote; failures name it."""
    try:
        if not is_remote(path):
            return open_regular(path)
        filesystem, inner = _filesystem(path)
        with _remote_errors(path, "open"):
            return RemoteFile(filesystem.open(inner, "rb"))  # type: ignore[return-value]
    except NotRegularFileError as exc:
        raise SourceError(path, f"{exc.strerror}: give a regular file") from exc
    except OSError as exc:
        raise SourceError(path, f"cannot open ({exc.strerror or exc})") from exc


def input_size(path: str) -> int:
    """The shard's size in bytes, local or remote."""
    try:
        if not is_remote(path):
            return os.path.getsize(path)
        filesystem, inner = _filesystem(path)
        with _remote_errors(path, "stat"):
            return int(filesystem.size(inner))
    except OSError as exc:
        raise SourceError(path, f"cannot stat ({exc.strerror or exc})") from exc


def check_input_file(path: str) -> None:
    """Fail, naming the path, unless it is a file (a regular file, when local) that exists."""
    if is_remote(path):
        filesystem, inner = _filesystem(path)
        with _remote_errors(path, "stat"):
            found = filesystem.isfile(inner)
        if not found:
            raise SourceError(path, "no such file")
        return
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        missing = exc.errno == errno.ENOENT
        raise SourceError(path, "no such file" if missing else f"cannot stat ({exc.strerror})") from exc
    if not stat.S_ISREG(mode):
        raise SourceError(path, f"not a regular file ({file_kind(mode)}): give a regular file")


def input_signature(path: str) -> list[object]:
    """What changes when a shard's content does, for the resume fingerprint: size and mtime (or ETag, or a
    Hub file's git blob id). A folder of images has its own, from the walk that lists it (FolderSource)."""
    if is_remote(path):
        filesystem, inner = _filesystem(path)
        with _remote_errors(path, "stat"):
            info = filesystem.info(inner)
        version = (
            info.get("ETag") or info.get("LastModified") or info.get("mtime") or info.get("blob_id") or ""
        )
        return [info.get("size"), str(version)]
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def remote_glob(pattern: str) -> list[str]:
    """Expand a remote glob into sorted URLs of the files it matches."""
    filesystem, inner = _filesystem(pattern)
    with _remote_errors(pattern, "list"):
        matched = sorted(p for p in filesystem.glob(inner) if filesystem.isfile(p))
    if not matched:
        raise SourceError(pattern, "pattern matches no file")
    return [filesystem.unstrip_protocol(p) for p in matched]


class RemoteFile:
    """A remote file whose failed reads are OSErrors whatever the backend's client raised (httpx, aiohttp,
    botocore share no base), so the sources' handlers name the shard instead of failing the unit."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def read(self, size: int = -1) -> bytes:
        return self._call(self._inner.read, size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._call(self._inner.seek, offset, whence)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> RemoteFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()

    @staticmethod
    def _call(method: Any, *args: object) -> Any:
        try:
            return method(*args)
        except OSError:
            raise
        except Exception as exc:
            raise OSError(f"remote read failed: {first_line(exc)}") from exc


@contextmanager
def _remote_errors(path: str, doing: str) -> Iterator[None]:
    """A remote backend's own client errors as one line naming the path (a missing file as such)."""
    try:
        yield
    except (SourceError, NotRegularFileError):
        raise
    except FileNotFoundError as exc:
        raise SourceError(path, "no such file") from exc
    except Exception as exc:  # each backend's client has its own exceptions, with no common base
        raise SourceError(path, f"cannot {doing} ({first_line(exc)})") from exc


def first_line(exc: BaseException) -> str:
    """An exception's message as one bounded line (a client's may span many, or quote a whole answer)."""
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _filesystem(path: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError as exc:
        raise SourceError(
            path, "install fsspec (and its backend for the scheme, e.g. s3fs) for remote paths"
        ) from exc
    try:
        return fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as exc:
        raise SourceError(path, f"cannot open remote path ({exc})") from exc

"""Where shards live: local paths, or fsspec URLs (s3://, gs://, memory://, ...) when fsspec is installed."""

from __future__ import annotations

import hashlib
import os
from typing import Any, BinaryIO

from scanner.errors import SourceError


def is_remote(path: str) -> bool:
    """Tell whether a path is a URL for fsspec rather than a local path."""
    return "://" in path


def open_input(path: str) -> BinaryIO:
    """Open a shard for seekable binary reading, local or remote; failures name the path."""
    try:
        if not is_remote(path):
            return open(path, "rb")
        filesystem, inner = _filesystem(path)
        return filesystem.open(inner, "rb")
    except OSError as exc:
        raise SourceError(path, f"cannot open ({exc.strerror or exc})") from exc


def input_size(path: str) -> int:
    """The shard's size in bytes, local or remote."""
    try:
        if not is_remote(path):
            return os.path.getsize(path)
        filesystem, inner = _filesystem(path)
        return int(filesystem.size(inner))
    except OSError as exc:
        raise SourceError(path, f"cannot stat ({exc.strerror or exc})") from exc


def input_exists(path: str) -> bool:
    """Tell whether a shard file exists, local or remote."""
    if not is_remote(path):
        return os.path.isfile(path)
    filesystem, inner = _filesystem(path)
    return bool(filesystem.isfile(inner))


def input_signature(path: str) -> list[object]:
    """What changes when a shard's content does, for the resume fingerprint: size and mtime (or ETag);
    for a folder of images, its file count and a digest of every file's path, size and mtime."""
    if is_remote(path):
        filesystem, inner = _filesystem(path)
        info = filesystem.info(inner)
        version = info.get("ETag") or info.get("LastModified") or info.get("mtime") or ""
        return [info.get("size"), str(version)]
    if os.path.isdir(path):
        return _folder_signature(path)
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def _folder_signature(path: str) -> list[object]:
    entries = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
                entries.append(f"{os.path.relpath(full, path)}\0{stat.st_size}\0{stat.st_mtime_ns}")
            except OSError:
                entries.append(f"{os.path.relpath(full, path)}\0unreadable")
    digest = hashlib.sha256("\n".join(sorted(entries)).encode("utf-8", "surrogateescape"))
    return [len(entries), digest.hexdigest()]


def remote_glob(pattern: str) -> list[str]:
    """Expand a remote glob into sorted URLs of the files it matches."""
    filesystem, inner = _filesystem(pattern)
    matched = sorted(p for p in filesystem.glob(inner) if filesystem.isfile(p))
    if not matched:
        raise SourceError(pattern, "pattern matches no file")
    return [filesystem.unstrip_protocol(p) for p in matched]


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

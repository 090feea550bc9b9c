"""Where shards live: local paths, or fsspec URLs (s3://, gs://, memory://, ...) when fsspec is installed."""

from __future__ import annotations

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

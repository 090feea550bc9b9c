"""Dataset sources: each shard kind is one class that splits itself into spans and reads them as rows."""

from __future__ import annotations

import glob
import os

from scanner.errors import SourceError
from scanner.sources.base import Row, Source, SourceOptions, Span
from scanner.sources.folder import FolderSource, directory_inputs, drop_metadata
from scanner.sources.imagebytes import open_parquet
from scanner.sources.storage import check_input_file, is_remote, remote_glob
from scanner.sources.text import TextSource
from scanner.sources.webdataset import WebDatasetSource

TEXT_KINDS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt"}
KNOWN_SUFFIXES = (".parquet", ".tar", *TEXT_KINDS)

__all__ = ["Row", "Source", "SourceOptions", "Span", "expand_inputs", "open_source"]


def open_source(path: str, options: SourceOptions) -> Source:
    """Open one shard by its suffix, or a local directory as a folder of images; unknown suffixes fail."""
    suffix = os.path.splitext(path)[1].lower()
    if not is_remote(path) and os.path.isdir(path):
        return FolderSource(path, options)
    check_input_file(path)
    if suffix == ".parquet":
        return open_parquet(path, options)
    if suffix == ".tar":
        return WebDatasetSource(path, options)
    if suffix in TEXT_KINDS:
        if is_remote(path):
            raise SourceError(path, "remote URL lists are not supported: copy the list to a local file")
        return TextSource(path, TEXT_KINDS[suffix], options)
    raise SourceError(path, f"unknown shard type {suffix!r}; expected one of {', '.join(KNOWN_SUFFIXES)}")


def expand_inputs(inputs: list[str]) -> list[str]:
    """Turn files, directories and globs into a sorted, de-duplicated list of shard paths.

    A directory expands to the shards it holds, or stays one input when it is a tree of images; remote URLs
    (fsspec) are kept as given, their globs expanded.
    """
    paths: list[str] = []
    for item in inputs:
        if is_remote(item):
            paths.extend(drop_metadata(remote_glob(item)) if glob.has_magic(item) else [item])
        elif os.path.isdir(item):
            paths.extend(directory_inputs(item, KNOWN_SUFFIXES))
        elif glob.has_magic(item) and not os.path.exists(item):  # a file named a[1].csv is that file
            matched = sorted(glob.glob(item, recursive=True))
            if not matched:
                raise SourceError(item, "pattern matches no file")
            paths.extend(drop_metadata([m for m in matched if os.path.isfile(m)]))
        else:
            paths.append(item)
    for path in paths:
        if not path.isascii() and not _is_utf8(path):
            shown = os.fsencode(path).decode("utf-8", "replace")
            raise SourceError(shown, "the file name is not valid UTF-8, which the reports must be: rename it")
    return list(dict.fromkeys(p if is_remote(p) else os.path.abspath(p) for p in paths))


def _is_utf8(text: str) -> bool:
    """False for a name read from the file system with bytes that are not UTF-8 (held as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

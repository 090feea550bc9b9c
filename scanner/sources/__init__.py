"""Dataset sources: each shard kind is one class that splits itself into spans and reads them as rows."""

from __future__ import annotations

import glob
import os

from scanner.errors import SourceError
from scanner.sources.base import Row, Source, SourceOptions, Span
from scanner.sources.parquet import ParquetSource
from scanner.sources.text import TextSource

TEXT_KINDS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt"}
KNOWN_SUFFIXES = (".parquet", *TEXT_KINDS)

__all__ = ["Row", "Source", "SourceOptions", "Span", "expand_inputs", "open_source"]


def open_source(path: str, options: SourceOptions) -> Source:
    """Open one shard by its suffix; unknown suffixes are an error naming the file."""
    suffix = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise SourceError(path, "no such file")
    if suffix == ".parquet":
        return ParquetSource(path, options)
    if suffix in TEXT_KINDS:
        return TextSource(path, TEXT_KINDS[suffix], options)
    raise SourceError(path, f"unknown shard type {suffix!r}; expected one of {', '.join(KNOWN_SUFFIXES)}")


def expand_inputs(inputs: list[str]) -> list[str]:
    """Turn files, directories and globs into a sorted, de-duplicated list of shard paths."""
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            paths.extend(_shards_in(item))
        elif glob.has_magic(item):
            matched = sorted(glob.glob(item, recursive=True))
            if not matched:
                raise SourceError(item, "pattern matches no file")
            paths.extend(m for m in matched if os.path.isfile(m))
        else:
            paths.append(item)
    return list(dict.fromkeys(os.path.abspath(p) for p in paths))


def _shards_in(directory: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in sorted(files) if f.lower().endswith(KNOWN_SUFFIXES))
    if not found:
        raise SourceError(directory, f"directory holds no shard ({', '.join(KNOWN_SUFFIXES)})")
    return found

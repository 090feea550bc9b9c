"""Parquet shards, read row group by row group so memory stays bounded whatever the shard size."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from scanner.errors import SourceError
from scanner.sources.base import (
    KEY_COLUMNS,
    URL_COL_HINT,
    URL_COLUMNS,
    Row,
    SourceOptions,
    Span,
    cell_to_str,
    pick_column,
)
from scanner.sources.storage import open_input

READ_BATCH_ROWS = 8192


def open_parquet_file(
    path: str, dictionary: tuple[str, ...] = (), metadata: pq.FileMetaData | None = None
) -> pq.ParquetFile:
    """Open a Parquet shard (local, or remote through fsspec) reading only its footer (none when its
    `metadata` is given, from an earlier open). A local one is handed to pyarrow opened, so that what was
    checked to be a regular file is what is read. Columns in `dictionary` are read as their dictionary and
    indices: a value stored once is held once, not per row."""
    handle = open_input(path)
    try:
        return pq.ParquetFile(handle, metadata=metadata, read_dictionary=list(dictionary) or None)
    except (OSError, UnicodeDecodeError, pa.ArrowException) as exc:  # column names need not be UTF-8
        handle.close()
        raise SourceError(path, f"not a readable Parquet file ({exc})") from exc


class ParquetSource:
    """A LAION / img2dataset / DataComp / COYO style Parquet shard of URLs."""

    kind = "parquet"
    read_batch_rows = READ_BATCH_ROWS

    def __init__(self, path: str, options: SourceOptions, file: pq.ParquetFile | None = None) -> None:
        self.path = path
        self.options = options
        self._file = file or open_parquet_file(path)
        names = self._file.schema_arrow.names
        self._pick_columns(names)
        repeated = sorted({c for c in self._read_columns() if names.count(c) > 1})
        if repeated:
            raise SourceError(
                path, f"column {', '.join(map(repr, repeated))} appears more than once: name each once"
            )

    def _pick_columns(self, names: list[str]) -> None:
        """Find the URL (required), key and extra columns, or fail listing the columns there are."""
        path, options = self.path, self.options
        self.url_col = pick_column(names, options.url_col, URL_COLUMNS)
        if self.url_col is None:
            wanted = options.url_col or " or ".join(URL_COLUMNS)
            raise SourceError(
                path, f"no URL column {wanted!r}; columns are: {', '.join(names)}; {URL_COL_HINT}"
            )
        self.key_col = pick_column(names, options.key_col, KEY_COLUMNS)
        if options.key_col is not None and self.key_col is None:
            raise SourceError(path, f"no key column {options.key_col!r}; columns are: {', '.join(names)}")
        missing = [c for c in options.extra_cols if c not in names]
        if missing:
            raise SourceError(path, f"no column {', '.join(missing)}; columns are: {', '.join(names)}")

    def spans(self) -> list[Span]:
        """Group small row groups, and split large ones, into spans of about rows_per_unit rows."""
        meta = self._file.metadata
        per_unit = self.options.rows_per_unit
        spans: list[Span] = []
        start, groups, row = 0, [], 0
        for index in range(meta.num_row_groups):
            size = meta.row_group(index).num_rows
            if size > per_unit:
                if groups:
                    spans.append(Span(start, row, tuple(groups)))
                spans.extend(
                    Span(s, min(s + per_unit, row + size), (index,)) for s in range(row, row + size, per_unit)
                )
                row += size
                start, groups = row, []
                continue
            groups.append(index)
            row += size
            if row - start >= per_unit:
                spans.append(Span(start, row, tuple(groups)))
                start, groups = row, []
        if groups:
            spans.append(Span(start, row, tuple(groups)))
        return spans

    def read(self, span: Span) -> Iterator[list[Row]]:
        """Yield the span's rows in batches, reading only its row groups and the columns the scan needs."""
        row = self._first_row(span.row_groups[0]) if span.row_groups else span.start
        try:
            batches = self._file.iter_batches(
                batch_size=self._batch_rows(span),
                row_groups=list(span.row_groups),
                columns=self._read_columns(),
            )
            for batch in batches:
                low, high = max(span.start - row, 0), min(span.stop - row, batch.num_rows)
                if high > low:
                    yield self._rows(batch.slice(low, high - low), row + low)
                row += batch.num_rows
                if row >= span.stop:  # a span cut from a large row group: the rest of the group is not its
                    break
            if row < span.stop:  # pyarrow can end a damaged row group early without an error
                raise SourceError(self.path, f"corrupt data near row {row} (fewer rows than the footer says)")
        except (OSError, UnicodeDecodeError, pa.ArrowException) as exc:  # a string cell need not be UTF-8
            raise SourceError(self.path, f"corrupt data near row {row} ({exc})") from exc

    def _read_columns(self) -> list[str]:
        return list(dict.fromkeys(c for c in (self.url_col, self.key_col, *self.options.extra_cols) if c))

    def _batch_rows(self, span: Span) -> int:
        """Rows decoded at once from the span's row groups."""
        return self.read_batch_rows

    def _first_row(self, group: int) -> int:
        meta = self._file.metadata
        return sum(meta.row_group(i).num_rows for i in range(group))

    def _rows(self, batch: pa.RecordBatch, first_row: int) -> list[Row]:
        urls = batch.column(self.url_col).to_pylist() if self.url_col else [None] * batch.num_rows
        keys = batch.column(self.key_col).to_pylist() if self.key_col else [None] * len(urls)
        extras = {c: batch.column(c).to_pylist() for c in self.options.extra_cols}
        return [
            Row(
                shard=self.path,
                row=first_row + i,
                url=cell_to_str(url),
                key=cell_to_str(key),
                columns={c: values[i] for c, values in extras.items()},
            )
            for i, (url, key) in enumerate(zip(urls, keys, strict=True))
        ]

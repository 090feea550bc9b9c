"""CSV, TSV, JSONL and plain-text URL lists, streamed line by line with byte offsets for resumable spans."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import BinaryIO

from scanner.errors import SourceError
from scanner.sources.base import (
    KEY_COLUMNS,
    URL_COL_HINT,
    URL_COLUMNS,
    Row,
    SourceOptions,
    Span,
    cell_to_str,
    parse_json,
    pick_column,
)
from scanner.sources.storage import open_input

READ_BATCH_ROWS = 8192


class LineFeed:
    """Iterate a binary file's lines as strict UTF-8 text, tracking the byte offset and line number."""

    def __init__(self, path: str, handle: BinaryIO, offset: int, line: int) -> None:
        self.path = path
        self._handle = handle
        self.offset = offset
        self.line = line

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                raw = self._handle.readline()
            except OSError as exc:  # an I/O error, or a pseudo-file whose read would wait forever
                raise SourceError(self.path, f"read failed ({exc.strerror or exc})", self.line + 1) from exc
            if not raw:
                return
            first = self.offset == 0
            self.line += 1
            self.offset += len(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SourceError(
                    self.path, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", self.line
                ) from exc
            yield text.removeprefix("\ufeff") if first else text  # a byte order mark (Excel's UTF-8 CSV)


class TextSource:
    """A delimited, JSON-lines or one-URL-per-line file; records are counted and validated up front."""

    def __init__(self, path: str, kind: str, options: SourceOptions) -> None:
        self.path = path
        self.kind = kind
        self.options = options
        self.url_col: str | None = None
        self.key_col: str | None = None
        self._spans = self._scan()

    def spans(self) -> list[Span]:
        return list(self._spans)

    def read(self, span: Span) -> Iterator[list[Row]]:
        """Yield the span's rows in batches, starting at the span's byte offset."""
        batch: list[Row] = []
        records = self._records_with_offsets(span.offset)
        for index, (_offset, record) in zip(range(span.start, span.stop), records, strict=False):
            batch.append(self._row(index, record))
            if len(batch) >= READ_BATCH_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch

    def _scan(self) -> list[Span]:
        """Validate every record once and note where each span starts."""
        spans: list[Span] = []
        start, start_offset, count = 0, 0, 0
        for offset, _record in self._records_with_offsets(0):
            if count - start == self.options.rows_per_unit:
                spans.append(Span(start, count, offset=start_offset))
                start, start_offset = count, offset
            count += 1
        if count > start:
            spans.append(Span(start, count, offset=start_offset))
        return spans

    def _records_with_offsets(self, offset: int) -> Iterator[tuple[int, object]]:
        """Yield (byte offset where the record starts, record) from offset on."""
        with open_input(self.path) as handle:
            handle.seek(offset)
            feed = LineFeed(self.path, handle, offset, 0)
            header = self._read_header(feed) if offset == 0 else self._header
            yield from self._parse(feed, header)

    def _read_header(self, feed: LineFeed) -> list[str] | None:
        if self.kind not in ("csv", "tsv"):
            self._header = None
            return None
        delimiter = "\t" if self.kind == "tsv" else ","
        try:
            header = next(csv.reader(feed, delimiter=delimiter), None)
        except csv.Error as exc:
            raise SourceError(self.path, f"malformed {self.kind.upper()} header ({exc})", feed.line) from exc
        if not header:
            raise SourceError(self.path, "empty file: no header row", 1)
        self.url_col = pick_column(header, self.options.url_col, URL_COLUMNS)
        if self.url_col is None:
            wanted = self.options.url_col or " or ".join(URL_COLUMNS)
            raise SourceError(
                self.path, f"no URL column {wanted!r}; columns are: {', '.join(header)}; {URL_COL_HINT}", 1
            )
        self.key_col = pick_column(header, self.options.key_col, KEY_COLUMNS)
        self._header = header
        return header

    def _parse(self, feed: LineFeed, header: list[str] | None) -> Iterator[tuple[int, object]]:
        if self.kind in ("csv", "tsv"):
            yield from self._parse_delimited(feed, header or [])
        elif self.kind == "jsonl":
            yield from self._parse_jsonl(feed)
        else:
            start = feed.offset
            for line in feed:
                yield start, line.rstrip("\r\n")
                start = feed.offset

    def _parse_delimited(self, feed: LineFeed, header: list[str]) -> Iterator[tuple[int, object]]:
        delimiter = "\t" if self.kind == "tsv" else ","
        start = feed.offset
        try:
            for values in csv.reader(feed, delimiter=delimiter):
                if values:
                    yield start, dict(zip(header, values, strict=False))
                start = feed.offset
        except csv.Error as exc:
            raise SourceError(self.path, f"malformed {self.kind.upper()} ({exc})", feed.line) from exc

    def _parse_jsonl(self, feed: LineFeed) -> Iterator[tuple[int, object]]:
        start = feed.offset
        for line in feed:
            if line.strip():
                yield start, self._json_record(line, feed.line)
            start = feed.offset

    def _json_record(self, line: str, line_number: int) -> dict[str, object]:
        try:
            record = parse_json(line)
        except ValueError as exc:
            raise SourceError(self.path, f"not JSON ({exc})", line_number) from exc
        if not isinstance(record, dict):
            raise SourceError(self.path, "a JSON line must be an object", line_number)
        if self.url_col is None:
            self.url_col = pick_column(list(record), self.options.url_col, URL_COLUMNS)
            self.key_col = pick_column(list(record), self.options.key_col, KEY_COLUMNS)
        if self.url_col is None:
            wanted = self.options.url_col or " or ".join(URL_COLUMNS)
            raise SourceError(
                self.path,
                f"no URL field {wanted!r}; fields are: {', '.join(record)}; {URL_COL_HINT}",
                line_number,
            )
        return record

    def _row(self, index: int, record: object) -> Row:
        if isinstance(record, str):
            return Row(self.path, index, cell_to_str(record), None)
        assert isinstance(record, dict)
        return Row(
            shard=self.path,
            row=index,
            url=cell_to_str(record.get(self.url_col)),
            key=cell_to_str(record.get(self.key_col)) if self.key_col else None,
            columns={c: record.get(c) for c in self.options.extra_cols},
        )

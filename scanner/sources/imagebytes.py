"""Parquet shards that embed the images: Hugging Face `image` structs and img2dataset `jpg`/`png` columns.

Rows carry the bytes in memory (no fetch); `url` and `key` are filled where the shard has such columns.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scanner.errors import SourceError
from scanner.outcomes import SourceReason
from scanner.sources.base import KEY_COLUMNS, URL_COLUMNS, Row, SourceOptions, Span, cell_to_str, pick_column
from scanner.sources.parquet import ParquetSource, open_parquet_file

BINARY_IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "img")
# Images are large: a small batch keeps the decoded rows waiting for the pipeline to a few MB; fewer rows
# when the footer says they are larger (megabytes of zeros compress to nothing: a batch of them does not).
IMAGE_BATCH_ROWS = 32
IMAGE_BATCH_BYTES = 8 * 1024 * 1024


def open_parquet(path: str, options: SourceOptions) -> ParquetSource:
    """A Parquet shard of embedded images when it has an image column (named or detected), else of URLs."""
    file = open_parquet_file(path)
    column = image_column(path, file.schema_arrow, options.image_col)
    if column is None:
        return ParquetSource(path, options, file)
    # A dictionary-encoded column's footer counts each distinct image once: a shard of one image of zeros a
    # thousand times is a few KB on disk, its footer says one image, and rows read plain are a thousand
    # copies. Read as a dictionary, it is held once.
    # (Not a Hugging Face struct's `bytes`: pyarrow reads no nested dictionary across chunks.)
    if is_binary(file.schema_arrow.field(column).type):
        footer = file.metadata
        file.close(force=True)  # its handle too: pyarrow leaves a file object it was given open
        file = open_parquet_file(path, dictionary=(column,), metadata=footer)
    return ImageParquetSource(path, options, file, column)


def image_column(path: str, schema: pa.Schema, wanted: str | None) -> str | None:
    """The named image column, or the one column that holds image bytes; several candidates must be named."""
    if wanted is not None:
        if wanted not in schema.names:
            raise SourceError(path, f"no image column {wanted!r}; columns are: {', '.join(schema.names)}")
        if schema.names.count(wanted) > 1:
            raise SourceError(path, f"column {wanted!r} appears more than once: name each once")
        if not holds_bytes(schema.field(wanted).type):
            raise SourceError(
                path, f"column {wanted!r} is {schema.field(wanted).type}, not binary or an image"
            )
        return wanted
    structs = [f.name for f in schema if is_image_struct(f.type)]
    binaries = [f.name for f in schema if f.name.lower() in BINARY_IMAGE_COLUMNS and is_binary(f.type)]
    found = structs + binaries
    if len(found) > 1:
        raise SourceError(path, f"several image columns ({', '.join(found)}); choose one with --image-col")
    return found[0] if found else None


def is_binary(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def is_image_struct(kind: pa.DataType) -> bool:
    """The Hugging Face `Image` feature: struct<bytes: binary, path: string>."""
    if not pa.types.is_struct(kind) or kind.get_field_index("bytes") < 0:
        return False
    return is_binary(kind.field("bytes").type)


def holds_bytes(kind: pa.DataType) -> bool:
    return is_binary(kind) or is_image_struct(kind)


class ImageParquetSource(ParquetSource):
    """A Parquet shard whose rows embed the image: spans and row-group reading as for URL shards."""

    kind = "parquet-images"
    read_batch_rows = IMAGE_BATCH_ROWS

    def __init__(self, path: str, options: SourceOptions, file: pq.ParquetFile, column: str) -> None:
        self.image_col = column
        super().__init__(path, options, file)

    def _pick_columns(self, names: list[str]) -> None:
        """URL and key columns are optional here: the bytes are the row."""
        self.url_col = pick_column(names, self.options.url_col, URL_COLUMNS)
        self.key_col = pick_column(names, self.options.key_col, KEY_COLUMNS)
        for wanted, found in ((self.options.url_col, self.url_col), (self.options.key_col, self.key_col)):
            if wanted is not None and found is None:
                raise SourceError(self.path, f"no column {wanted!r}; columns are: {', '.join(names)}")
        missing = [c for c in self.options.extra_cols if c not in names]
        if missing:
            raise SourceError(self.path, f"no column {', '.join(missing)}; columns are: {', '.join(names)}")

    def _read_columns(self) -> list[str]:
        return list(dict.fromkeys([self.image_col, *super()._read_columns()]))

    def _batch_rows(self, span: Span) -> int:
        """IMAGE_BATCH_ROWS, or fewer when the footer says the span's images are larger on average."""
        meta = self._file.metadata
        groups = [meta.row_group(g) for g in span.row_groups]
        largest = max((_image_bytes(g, self.image_col) / max(g.num_rows, 1) for g in groups), default=0.0)
        return max(1, min(IMAGE_BATCH_ROWS, int(IMAGE_BATCH_BYTES // max(largest, 1.0))))

    def _rows(self, batch: pa.RecordBatch, first_row: int) -> list[Row]:
        rows = super()._rows(batch, first_row)
        column = batch.column(self.image_col)
        cells = column.field("bytes") if pa.types.is_struct(column.type) else column
        values, indices = (
            (cells.dictionary, cells.indices) if pa.types.is_dictionary(cells.type) else (cells, None)
        )
        lengths = pc.binary_length(values)
        sizes = [size or 0 for size in (lengths if indices is None else lengths.take(indices)).to_pylist()]
        names = column.field("path").to_pylist() if _has_path(column.type) else [None] * len(rows)
        valid = column.is_valid().to_pylist()
        places = range(len(rows)) if indices is None else indices.to_pylist()  # each row's value
        for i, (row, size) in enumerate(zip(rows, sizes, strict=True)):
            row.member = cell_to_str(names[i]) if valid[i] else None
            if size == 0 or not valid[i]:
                row.error = SourceReason.NO_IMAGE_BYTES
            elif size > self.options.max_member_bytes:  # never copied out of the batch
                row.error = SourceReason.MEMBER_TOO_LARGE
            else:
                row.body = values[places[i]].as_py()
        return rows


def _has_path(kind: pa.DataType) -> bool:
    return pa.types.is_struct(kind) and kind.get_field_index("path") >= 0


def _image_bytes(group: pq.RowGroupMetaData, column: str) -> int:
    """The uncompressed bytes the footer gives for a row group's image column (all its leaves)."""
    chunks = (group.column(i) for i in range(group.num_columns))
    return sum(c.total_uncompressed_size for c in chunks if c.path_in_schema.split(".")[0] == column)

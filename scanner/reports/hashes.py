"""hashes.parquet (--keep-hashes): one record per input row with the hashes computed for it, never the image.

Rows never fetched or hashed (dead, screened, unchecked) keep their shard, row, url and key with the hash
columns null, so `rematch` can screen every URL again and `rescan` can revisit every row.

Schema version 2 (the `scanner.hashes_version` key of the Parquet metadata) added `pdq_dihedral`: the 8
dihedral PDQ hashes as a fixed-size list of 8 lower-case hex strings in DIHEDRAL_TRANSFORMS order (original
first), set when the scan computed them (--pdq-dihedral with a PDQ list), null otherwise. Version 1 files
(no metadata key, no column) are read as if that column were null.

The hash columns derive from scanner.hashtypes.REGISTRY: one lower-case hex column per recorded image type
(md5, sha1, sha256, pdq, phash, dhash, in registry order; `<type>_quality` after a type that has one), one
fixed-size list column per variant type (pdq_dihedral) at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from scanner import arrowvalues
from scanner.errors import InputError
from scanner.hashtypes import REGISTRY, ImageHashes, recorded_types, variant_types
from scanner.regularfile import NotRegularFileError, open_regular
from scanner.reports.files import atomic_open
from scanner.reports.records import RowResult, UnitFiles

HASHES_FILE = "hashes.parquet"
UNIT_SUFFIX = ".hashes.parquet"
HEADER_COLUMNS = ("width", "height", "format")
DIHEDRAL_COLUMN = REGISTRY["pdq_dihedral"].name
HASHES_VERSION = 2
ROW_GROUP_ROWS = 64 * 1024


def hex_columns() -> tuple[str, ...]:
    """The hex hash columns: every recorded image type (md5, sha1, sha256, pdq, phash, dhash)."""
    return tuple(t.name for t in recorded_types())


def image_columns() -> tuple[str, ...]:
    """What else a hashed image gives: the qualities (pdq_quality), then width, height and format."""
    return (*(t.quality_column for t in recorded_types() if t.quality_column), *HEADER_COLUMNS)


def optional_columns() -> tuple[str, ...]:
    """Columns added after version 1 (the variant types: pdq_dihedral): older files lack them."""
    return tuple(t.name for t in variant_types())


def hashes_schema() -> pa.Schema:
    """The schema of hash records, from the registry as it is now."""
    columns = [("shard", pa.string()), ("row", pa.int64()), ("url", pa.string()), ("key", pa.string())]
    for hash_type in recorded_types():
        columns.append((hash_type.name, pa.string()))
        if hash_type.quality_column:
            columns.append((hash_type.quality_column, pa.int32()))
    columns += [
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("etag", pa.string()),
        ("last_modified", pa.string()),
        ("fetched_at", pa.timestamp("ms", tz="UTC")),
    ]
    columns += [(t.name, pa.list_(pa.string(), len(t.transforms))) for t in variant_types()]
    return pa.schema(columns, metadata={"scanner.hashes_version": str(HASHES_VERSION)})


HASHES_SCHEMA = hashes_schema()  # the built-in types' schema (the writers ask hashes_schema() each time)


class Validators(Protocol):
    """What a record keeps of a response (a scanner.fetch.FetchResult is one): its HTTP validators, for a
    rescan's conditional request, and when it was fetched."""

    etag: str | None
    last_modified: str | None
    fetched_at: float


def hash_record(outcome: RowResult, hashes: ImageHashes | None, fetch: Validators | None) -> dict:
    """One row's record: where it came from, its hashes in lower-case hex, and the response validators."""
    record: dict = {"shard": outcome.shard, "row": outcome.row, "url": outcome.url, "key": outcome.key}
    record.update(hash_values(hashes))
    record["etag"] = fetch.etag if fetch else None
    record["last_modified"] = fetch.last_modified if fetch else None
    record["fetched_at"] = fetch.fetched_at if fetch else outcome.fetched_at
    return record


def hash_values(hashes: ImageHashes | None) -> dict:
    """The hash columns of a record (all None without hashes; pdq_dihedral None unless computed)."""
    recorded, variants = recorded_types(), variant_types()
    values: dict = dict.fromkeys((*(t.name for t in recorded), *image_columns(), *(t.name for t in variants)))
    if hashes is not None:
        for hash_type in recorded:
            value = hashes.get(hash_type.name)
            values[hash_type.name] = hash_type.to_hex(value) if value is not None else None
        for name in image_columns():
            values[name] = hashes.get(name)
        for hash_type in variants:
            if found := hashes.get(hash_type.name):
                values[hash_type.name] = [hash_type.to_hex(value) for value in found]
    return values


def stored_hashes(record: dict) -> ImageHashes | None:
    """The ImageHashes a record holds (the dihedral PDQ when stored), or None if it holds none."""
    recorded = recorded_types()
    if all(record.get(t.name) is None for t in recorded):
        return None
    values = {t.name: t.from_hex(record[t.name]) if record.get(t.name) else None for t in recorded}
    values.update((name, record.get(name)) for name in image_columns())
    for hash_type in variant_types():
        found = record.get(hash_type.name)
        values[hash_type.name] = tuple(hash_type.from_hex(value) for value in found) if found else None
    return ImageHashes.of(values)


def hashes_table(records: list[dict]) -> pa.Table:
    """Records as a table of the fixed schema (fetched_at in ms since the epoch, UTC)."""
    schema = hashes_schema()
    columns = {name: [r.get(name) for r in records] for name in schema.names}
    columns["fetched_at"] = [None if t is None else int(t * 1000) for t in columns["fetched_at"]]
    return pa.Table.from_arrays([arrowvalues.column(columns[f.name], f.type) for f in schema], schema=schema)


def write_unit_hashes(stem: str, records: list[dict]) -> None:
    """A work unit's records, as a side file committed before its outcomes."""
    with atomic_open(f"{stem}{UNIT_SUFFIX}") as handle:
        pq.write_table(hashes_table(records), handle)


def merge_hashes(out_dir: Path, checkpoint: UnitFiles, unit_ids: list[int]) -> Path:
    """Concatenate the units' records in unit order into hashes.parquet (0600, atomic)."""
    path = Path(out_dir) / HASHES_FILE
    schema = hashes_schema()
    with atomic_open(path) as handle, pq.ParquetWriter(handle, schema) as writer:
        for unit_path in checkpoint.side_files(unit_ids, UNIT_SUFFIX):
            writer.write_table(pq.read_table(unit_path, schema=schema), row_group_size=ROW_GROUP_ROWS)
    return path


def open_hashes(path: str | Path) -> pq.ParquetFile:
    """A hashes.parquet (or a report directory holding one), checked to have the expected columns."""
    path = Path(path)
    if path.is_dir():
        path = path / HASHES_FILE
    try:  # a FIFO would hang pyarrow's own open: judged first, as every input is (regularfile.open_regular);
        # the ParquetFile opens the path itself, so that it stays picklable for the workers
        open_regular(path).close()
    except NotRegularFileError as exc:
        raise InputError(str(path), exc.strerror) from exc
    except FileNotFoundError as exc:
        raise InputError(
            str(path), "no such file: hash records are written by a scan with --keep-hashes"
        ) from exc
    except OSError as exc:
        raise InputError(str(path), f"cannot read ({exc.strerror})") from exc
    try:
        file = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(str(path), f"not a readable Parquet file ({exc})") from exc
    required = [name for name in hashes_schema().names if name not in optional_columns()]
    missing = [name for name in required if name not in file.schema_arrow.names]
    if missing:
        raise InputError(str(path), f"not a hashes.parquet: no column {', '.join(missing)}")
    return file


def read_slice(file: pq.ParquetFile, start: int, stop: int, columns: list[str] | None = None) -> pa.Table:
    """Rows [start, stop) of a Parquet file, reading only the row groups that hold them."""
    meta = file.metadata
    groups, first, row = [], None, 0
    for index in range(meta.num_row_groups):
        size = meta.row_group(index).num_rows
        if row + size > start and row < stop:
            groups.append(index)
            first = row if first is None else first
        row += size
    if not groups:
        return file.schema_arrow.empty_table().select(columns) if columns else file.schema_arrow.empty_table()
    table = file.read_row_groups(groups, columns=columns)
    return table.slice(start - first, stop - start)

"""hashes.parquet (--keep-hashes): one record per input row with the hashes computed for it, never the image.

Rows never fetched or hashed (dead, screened, unchecked) keep their shard, row, url and key with the hash
columns null, so `rematch` can screen every URL again and `rescan` can revisit every row.

Schema version 2 (the `scanner.hashes_version` key of the Parquet metadata) added `pdq_dihedral`: the 8
dihedral PDQ hashes as a fixed-size list of 8 lower-case hex strings in DIHEDRAL_TRANSFORMS order (original
first), set when the scan computed them (--pdq-dihedral with a PDQ list), null otherwise. Version 1 files
(no metadata key, no column) are read as if that column were null.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from scanner.errors import InputError
from scanner.fetch import FetchResult
from scanner.hashing import DIHEDRAL_TRANSFORMS, ImageHashes
from scanner.reports.files import atomic_open
from scanner.reports.records import RowResult

if TYPE_CHECKING:
    from scanner.checkpoint import Checkpoint

HASHES_FILE = "hashes.parquet"
UNIT_SUFFIX = ".hashes.parquet"
HEX_COLUMNS = ("md5", "sha1", "sha256", "pdq", "phash", "dhash")
IMAGE_COLUMNS = ("pdq_quality", "width", "height", "format")
DIHEDRAL_COLUMN = "pdq_dihedral"
OPTIONAL_COLUMNS = (DIHEDRAL_COLUMN,)  # added after version 1: older files lack them
HASHES_VERSION = 2
ROW_GROUP_ROWS = 64 * 1024

HASHES_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("row", pa.int64()),
        ("url", pa.string()),
        ("key", pa.string()),
        ("md5", pa.string()),
        ("sha1", pa.string()),
        ("sha256", pa.string()),
        ("pdq", pa.string()),
        ("pdq_quality", pa.int32()),
        ("phash", pa.string()),
        ("dhash", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("etag", pa.string()),
        ("last_modified", pa.string()),
        ("fetched_at", pa.timestamp("ms", tz="UTC")),
        (DIHEDRAL_COLUMN, pa.list_(pa.string(), len(DIHEDRAL_TRANSFORMS))),
    ],
    metadata={"scanner.hashes_version": str(HASHES_VERSION)},
)


def hash_record(outcome: RowResult, hashes: ImageHashes | None, fetch: FetchResult | None) -> dict:
    """One row's record: where it came from, its hashes in lower-case hex, and the response validators."""
    record: dict = {"shard": outcome.shard, "row": outcome.row, "url": outcome.url, "key": outcome.key}
    record.update(hash_values(hashes))
    record["etag"] = fetch.etag if fetch else None
    record["last_modified"] = fetch.last_modified if fetch else None
    record["fetched_at"] = fetch.fetched_at if fetch else outcome.fetched_at
    return record


def hash_values(hashes: ImageHashes | None) -> dict:
    """The hash columns of a record (all None without hashes; pdq_dihedral None unless computed)."""
    values: dict = dict.fromkeys((*HEX_COLUMNS, *IMAGE_COLUMNS, DIHEDRAL_COLUMN))
    if hashes is not None:
        for name in HEX_COLUMNS:
            value = getattr(hashes, name)
            values[name] = value.hex() if value is not None else None
        for name in IMAGE_COLUMNS:
            values[name] = getattr(hashes, name)
        if hashes.pdq_dihedral:
            values[DIHEDRAL_COLUMN] = [value.hex() for value in hashes.pdq_dihedral]
    return values


def stored_hashes(record: dict) -> ImageHashes | None:
    """The ImageHashes a record holds (the dihedral PDQ when stored), or None if it holds none."""
    if all(record.get(name) is None for name in HEX_COLUMNS):
        return None
    raw = {name: bytes.fromhex(record[name]) if record.get(name) else None for name in HEX_COLUMNS}
    dihedral = record.get(DIHEDRAL_COLUMN)
    return ImageHashes(
        **raw,
        **{name: record.get(name) for name in IMAGE_COLUMNS},
        pdq_dihedral=tuple(bytes.fromhex(value) for value in dihedral) if dihedral else None,
    )


def hashes_table(records: list[dict]) -> pa.Table:
    """Records as a table of the fixed schema (fetched_at in ms since the epoch, UTC)."""
    columns = {name: [r.get(name) for r in records] for name in HASHES_SCHEMA.names}
    columns["fetched_at"] = [None if t is None else int(t * 1000) for t in columns["fetched_at"]]
    return pa.table(columns, schema=HASHES_SCHEMA)


def write_unit_hashes(stem: str, records: list[dict]) -> None:
    """A work unit's records, as a side file committed before its outcomes."""
    with atomic_open(f"{stem}{UNIT_SUFFIX}") as handle:
        pq.write_table(hashes_table(records), handle)


def merge_hashes(out_dir: Path, checkpoint: Checkpoint, unit_ids: list[int]) -> Path:
    """Concatenate the units' records in unit order into hashes.parquet (0600, atomic)."""
    path = Path(out_dir) / HASHES_FILE
    with atomic_open(path) as handle, pq.ParquetWriter(handle, HASHES_SCHEMA) as writer:
        for unit_path in checkpoint.side_files(unit_ids, UNIT_SUFFIX):
            writer.write_table(pq.read_table(unit_path, schema=HASHES_SCHEMA), row_group_size=ROW_GROUP_ROWS)
    return path


def open_hashes(path: str | Path) -> pq.ParquetFile:
    """A hashes.parquet (or a report directory holding one), checked to have the expected columns."""
    path = Path(path)
    if path.is_dir():
        path = path / HASHES_FILE
    if not path.is_file():
        raise InputError(str(path), "no such file: hash records are written by a scan with --keep-hashes")
    try:
        file = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(str(path), f"not a readable Parquet file ({exc})") from exc
    required = [name for name in HASHES_SCHEMA.names if name not in OPTIONAL_COLUMNS]
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

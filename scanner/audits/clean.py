"""scanner clean: write a dataset's shards again without the rows a scan flagged, and list what was removed.

Parquet shards keep their schema (with its metadata), compression and row-group layout: row group i of the
clean shard holds the rows of row group i that were kept, even when none were. JSONL and TXT URL lists keep
every other line byte for byte. CSV and TSV lists keep their header and columns, each record written as
csv.writer writes it (same delimiter, minimal quoting, CRLF; a UTF-8 byte order mark kept). removed.parquet
names each removed row by shard, row, key and the SHA-256 of its normalised URL (never the URL), so holders
of older copies can clean theirs by diffing. Only URL lists are rewritten: a shard holding images (tar,
image Parquet, folder) would put image content on disk. A shard must be one the report scanned, unchanged
since (its size and modification time are in the manifest).
"""

from __future__ import annotations

import codecs
import csv
import json
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scanner import procguard
from scanner.errors import ConfigError, InputError
from scanner.outcomes import MATCHED, OUTCOMES, VERDICTS, Outcome, Verdict
from scanner.reports.files import atomic_open, private_dir, utf8_text
from scanner.reports.verdicts import Verdicts, url_sha256
from scanner.run.reportlock import report_lock
from scanner.sources import expand_inputs
from scanner.sources.storage import input_signature, is_remote
from scanner.sources.text import LineFeed

DEFAULT_DROP = (Outcome.MATCH,)
LINE_KINDS = ("jsonl", "txt")  # one row a line (a JSONL blank line is no row)
DELIMITERS = {"csv": ",", "tsv": "\t"}  # a header, then one row a record (a blank line is no row)
REMOVED_FILE = "removed.parquet"
REMOVED_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),  # the shard's file name, as written in the clean directory
        ("row", pa.int64()),
        ("key", pa.string()),
        ("url_sha256", pa.string()),  # of the normalised URL (`scanner url`); null when it has none
        ("outcome", pa.string()),
    ]
)


@dataclass(slots=True)
class CleanedShard:
    """One shard written again: where from, where to, how many rows it had and how many were removed."""

    source: str
    output: Path
    rows: int
    removed: int


@dataclass(slots=True)
class CleanResult:
    """The clean directory, each shard written there, and the removed-rows file."""

    out: Path
    shards: list[CleanedShard]
    removed_file: Path

    @property
    def removed(self) -> int:
        return sum(shard.removed for shard in self.shards)


@dataclass(slots=True)
class _Flagged:
    """A shard's row count in the report and its rows to remove (in row order)."""

    rows: int = 0
    dropped: list[dict] = field(default_factory=list)


def clean(
    shards: Sequence[str], report: str | Path, out: str | Path, drop: Sequence[str] = DEFAULT_DROP
) -> CleanResult:
    """Write each shard into out without the rows whose outcome in the report is one of drop."""
    drop = _checked_drop(drop)
    # A shard is a URL list, but a Parquet one may carry binary columns it does not name as images (and a
    # shard is read whole, row group by row group): no core dump, not dumpable, before any shard is read.
    procguard.harden()
    with report_lock(out, "clean"):
        return _clean(shards, Path(report), Path(out), drop)


def _clean(shards: Sequence[str], report: Path, out: Path, drop: tuple[str, ...]) -> CleanResult:
    inputs = _scanned_inputs(report)
    paths = expand_inputs(list(shards))
    for path in paths:
        _check_cleanable(path, inputs)
    names = [os.path.basename(p) for p in paths]
    if len(set(names)) != len(names):
        raise ConfigError("two shards share a file name; clean them into separate directories")
    flagged = _flagged_rows(report / "outcomes.parquet", set(paths), drop)
    out_dir = private_dir(out)
    cleaned, removed = [], []
    for path, name in zip(paths, names, strict=True):
        rows = flagged[path]
        write = _writer(inputs[path]["kind"])
        written = write(path, out_dir / name, {r["row"] for r in rows.dropped}, rows.rows)
        cleaned.append(CleanedShard(path, out_dir / name, rows.rows, written))
        removed.extend(_removed_record(name, r) for r in rows.dropped)
    removed_file = out_dir / REMOVED_FILE
    with atomic_open(removed_file) as handle:
        pq.write_table(pa.Table.from_pylist(removed, schema=REMOVED_SCHEMA), handle)
    return CleanResult(out_dir, cleaned, removed_file)


def _checked_drop(drop: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(drop) - set(OUTCOMES) - set(VERDICTS))
    if unknown or not drop:
        raise ConfigError(
            f"--drop takes outcomes among {', '.join(OUTCOMES)} and verdicts among {', '.join(VERDICTS)}; "
            f"not {', '.join(unknown) or 'none'}"
        )
    return tuple(drop)


def _scanned_inputs(report: Path) -> dict[str, dict]:
    """The report's inputs by path (from manifest.json), each with its kind and signature."""
    path = report / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(str(path), f"cannot read the report's manifest ({exc.strerror})") from exc
    except ValueError as exc:
        raise InputError(str(path), f"not valid JSON ({exc})") from exc
    return {entry["path"]: entry for entry in manifest.get("inputs", [])}


def _check_cleanable(path: str, inputs: dict[str, dict]) -> None:
    """A local URL list that the report scanned, unchanged since."""
    entry = inputs.get(path)
    if entry is None:
        raise InputError(path, "not among the report's inputs: clean the shards that were scanned")
    if is_remote(path):
        raise InputError(path, "remote shards are not cleaned: copy the shard to a local file first")
    if entry["kind"] not in ("parquet", *DELIMITERS, *LINE_KINDS):
        raise InputError(
            path,
            f"a {entry['kind']} shard is not cleaned: only Parquet, CSV, TSV, JSONL and TXT URL lists are "
            "written again (a shard holding images would put image content on disk)",
        )
    if json.loads(json.dumps(input_signature(path))) != entry.get("signature"):
        raise InputError(path, "changed since the scan (size or modification time): scan it again first")


def _flagged_rows(outcomes: Path, shards: set[str], drop: tuple[str, ...]) -> dict[str, _Flagged]:
    """Per shard: rows in the report, and the rows whose outcome is to be dropped, read batch by batch."""
    flagged: dict[str, _Flagged] = defaultdict(_Flagged)
    wanted, dropped = pa.array(sorted(shards)), pa.array([d for d in drop if d in OUTCOMES], pa.string())
    by_verdict = _by_verdict(outcomes.parent, drop)
    try:
        file = pq.ParquetFile(outcomes)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(str(outcomes), f"cannot read the report's outcomes ({exc})") from exc
    for batch in file.iter_batches(columns=["shard", "row", "key", "url", "outcome"]):
        table = pa.Table.from_batches([batch])
        table = table.filter(pc.is_in(table["shard"], wanted))
        for group in table.group_by("shard").aggregate([([], "count_all")]).to_pylist():
            flagged[group["shard"]].rows += group["count_all"]
        for record in table.filter(pc.is_in(table["outcome"], dropped)).to_pylist():
            flagged[record["shard"]].dropped.append(record)
        if by_verdict is not None:
            for record in table.filter(pc.invert(pc.is_in(table["outcome"], dropped))).to_pylist():
                if by_verdict(record):
                    flagged[record["shard"]].dropped.append(record)
    for shard in flagged.values():
        shard.dropped.sort(key=lambda r: r["row"])
    return flagged


def _by_verdict(report: Path, drop: tuple[str, ...]) -> Callable[[dict], bool] | None:
    """Whether a row is dropped for its verdict (a matched row's; unreviewed when none is recorded), or
    None when --drop names no verdict."""
    wanted = {d for d in drop if d in VERDICTS}
    if not wanted:
        return None
    verdicts = Verdicts.load(report)

    def dropped(record: dict) -> bool:
        if record["outcome"] not in MATCHED:
            return False
        verdict = verdicts.of(record["shard"], record["row"], record["url"], record["key"])
        if record["outcome"] == Outcome.SUPPRESSED and verdict == Verdict.UNREVIEWED:
            return False  # a negative list's entry: a false positive reviewed before, not a row to review
        return verdict in wanted

    return dropped


def _writer(kind: str) -> Callable[[str, Path, set[int], int], int]:
    """The function that writes a shard of this kind again without the dropped rows."""
    if kind == "parquet":
        return _clean_parquet
    if kind in DELIMITERS:
        return _clean_delimited(kind)
    return _clean_lines(kind)


def _clean_parquet(source: str, target: Path, dropped: set[int], report_rows: int) -> int:
    """Copy a Parquet shard row group by row group without the dropped rows; returns how many were removed."""
    file = pq.ParquetFile(source)
    meta = file.metadata
    _check_rows(source, meta.num_rows, report_rows)
    drop = np.array(sorted(dropped), dtype=np.int64)
    first = 0
    with (
        atomic_open(target) as handle,
        pq.ParquetWriter(handle, file.schema_arrow, compression=_compression(meta)) as writer,
    ):
        for group in range(meta.num_row_groups):
            table = file.read_row_group(group)
            keep = np.ones(table.num_rows, dtype=bool)
            inside = drop[(drop >= first) & (drop < first + table.num_rows)]
            keep[inside - first] = False
            writer.write_table(table.filter(pa.array(keep)), row_group_size=max(table.num_rows, 1))
            first += table.num_rows
    return len(drop)


def _clean_lines(kind: str) -> Callable[[str, Path, set[int], int], int]:
    """A writer for one-row-a-line shards (rows counted as the text source counts them): kept lines copied
    byte for byte."""

    def write(source: str, target: Path, dropped: set[int], report_rows: int) -> int:
        row = 0
        with open(source, "rb") as lines, atomic_open(target) as handle:
            for line in lines:
                if kind == "jsonl" and not line.decode("utf-8").strip():
                    handle.write(line)  # a blank line is no row
                    continue
                if row not in dropped:
                    handle.write(line)
                row += 1
            _check_rows(source, row, report_rows)
        return len(dropped)

    return write


def _clean_delimited(kind: str) -> Callable[[str, Path, set[int], int], int]:
    """A writer for CSV or TSV shards: records parsed as the text source parses them, the header and every
    kept record written again by csv.writer."""
    delimiter = DELIMITERS[kind]

    def write(source: str, target: Path, dropped: set[int], report_rows: int) -> int:
        row = 0
        with open(source, "rb") as raw, atomic_open(target) as handle, utf8_text(handle) as text:
            if raw.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8:
                text.write("\ufeff")  # LineFeed drops it from the first line; Excel wants it back
            raw.seek(0)
            feed = LineFeed(source, raw, 0, 0)
            records, writer = csv.reader(feed, delimiter=delimiter), csv.writer(text, delimiter=delimiter)
            try:
                header = next(records, None)
                if not header:
                    raise InputError(source, "empty file: no header row", 1)
                writer.writerow(header)
                for values in records:
                    if not values or row not in dropped:
                        writer.writerow(values)  # a blank line is no row, and stays
                    row += bool(values)
            except csv.Error as exc:
                raise InputError(source, f"malformed {kind.upper()} ({exc})", feed.line) from exc
            _check_rows(source, row, report_rows)
        return len(dropped)

    return write


def _check_rows(source: str, rows: int, report_rows: int) -> None:
    if rows != report_rows:
        raise InputError(source, f"{rows} rows, but the report has {report_rows}: not the shard it scanned")


def _compression(meta: pq.FileMetaData) -> str | dict[str, str]:
    """The shard's codec (one for all columns, or per column), as ParquetWriter names them."""
    if meta.num_row_groups == 0:
        return "snappy"
    group = meta.row_group(0)
    codecs = {
        group.column(i).path_in_schema: group.column(i).compression.lower() for i in range(group.num_columns)
    }
    codecs = {name: "none" if codec == "uncompressed" else codec for name, codec in codecs.items()}
    return next(iter(codecs.values())) if len(set(codecs.values())) == 1 else codecs


def _removed_record(shard: str, record: dict) -> dict:
    return {
        "shard": shard,
        "row": record["row"],
        "key": record["key"],
        "url_sha256": url_sha256(record["url"]),
        "outcome": record["outcome"],
    }

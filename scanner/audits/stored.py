"""Finished scans read back for rematch and rescan: each row's hash record and previous outcome, work units
over the stored rows, and what the two share as Jobs (their reports go through the same lifecycle as a
scan's: scanner.run.job)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from scanner.errors import InputError
from scanner.hashing import ImageHashes
from scanner.lists import HashList
from scanner.outcomes import Outcome
from scanner.reports import jsonl, verdicts
from scanner.reports.hashes import (
    DIHEDRAL_COLUMN,
    HASHES_FILE,
    hex_columns,
    open_hashes,
    read_slice,
    stored_hashes,
)
from scanner.reports.records import OUTCOME_SCHEMA, RowResult
from scanner.run import lifecycle
from scanner.run.job import Job, Run
from scanner.sources import Row


@dataclass(slots=True)
class StoredRow:
    """One row of a finished scan: its hash record, its outcome there, and the hashes the record holds."""

    record: dict
    previous: RowResult
    hashes: ImageHashes | None

    @property
    def row(self) -> Row:
        """The row as a source gives it (for screening)."""
        record = self.record
        return Row(record["shard"], record["row"], record["url"], record["key"], member=self.previous.member)


class StoredScan:
    """A hashes.parquet and, in a report directory, that scan's outcomes, evidence and manifest."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.dir = path if path.is_dir() else path.parent
        self.hashes_path = self.dir / HASHES_FILE if path.is_dir() else path
        self.hashes = open_hashes(self.hashes_path)
        self.rows = self.hashes.metadata.num_rows
        self.outcomes = self._outcomes() if self.hashes_path.name == HASHES_FILE else None

    def _outcomes(self) -> pq.ParquetFile | None:
        path = self.dir / "outcomes.parquet"
        if not path.is_file():
            return None
        outcomes = pq.ParquetFile(path)
        if outcomes.metadata.num_rows != self.rows:
            raise InputError(
                str(path), f"{outcomes.metadata.num_rows} rows, but {self.hashes_path} has {self.rows}"
            )
        return outcomes

    def read(self, start: int, stop: int) -> list[StoredRow]:
        """Rows [start, stop), each with its previous outcome (from outcomes.parquet when there is one)."""
        records = read_slice(self.hashes, start, stop).to_pylist()
        for record in records:
            fetched = record["fetched_at"]
            record["fetched_at"] = fetched.timestamp() if fetched is not None else None
        if self.outcomes is None:
            previous = [_assumed_outcome(r) for r in records]
        else:
            previous = [_outcome(o) for o in read_slice(self.outcomes, start, stop).to_pylist()]
        rows = []
        for record, outcome in zip(records, previous, strict=True):
            if (outcome.shard, outcome.row) != (record["shard"], record["row"]):
                raise InputError(
                    str(self.hashes_path), f"row {record['row']} is not in outcomes.parquet's order"
                )
            rows.append(StoredRow(record, outcome, stored_hashes(record)))
        return rows

    @property
    def has_dihedral(self) -> bool:
        """Whether the records have the dihedral PDQ column (hashes.parquet version 2 and later)."""
        return DIHEDRAL_COLUMN in self.hashes.schema_arrow.names

    def first_without_dihedral(self) -> dict | None:
        """The shard and row of the first record holding a PDQ hash but not its 8 dihedral ones; None when
        every PDQ hash has them (one pass over those two columns)."""
        columns = ["pdq", DIHEDRAL_COLUMN] if self.has_dihedral else ["pdq"]
        start = 0
        for batch in self.hashes.iter_batches(columns=columns):
            lacking = batch.column(0).is_valid()
            if self.has_dihedral:
                lacking = pc.and_(lacking, batch.column(1).is_null())
            if pc.any(lacking).as_py():
                index = start + pc.index(lacking, True).as_py()
                return read_slice(self.hashes, index, index + 1, ["shard", "row"]).to_pylist()[0]
            start += batch.num_rows
        return None

    def evidence(self) -> dict[tuple[str, int], dict]:
        """The evidence records of the rows that matched, by (shard, row); empty without evidence.jsonl."""
        path = self.dir / "evidence.jsonl"
        if self.outcomes is None or not path.is_file():
            return {}
        return {(r["shard"], r["row"]): r for r in jsonl.read_records(path)}

    def manifest(self) -> dict:
        """The scan's manifest.json; InputError when there is none."""
        return self.read_manifest(self.dir)

    @staticmethod
    def read_manifest(out: Path) -> dict:
        """The manifest.json of the report directory out; InputError when there is none."""
        path = out / "manifest.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(str(path), f"cannot read the scan's manifest ({exc.strerror})") from exc
        except ValueError as exc:
            raise InputError(str(path), f"not valid JSON ({exc})") from exc

    def signature(self) -> list:
        """What a resumed rematch or rescan must find unchanged: path, size and mtime of the records."""
        stat = self.hashes_path.stat()
        return [str(self.hashes_path.resolve()), stat.st_size, stat.st_mtime_ns]


@dataclass(frozen=True, slots=True)
class StoredUnit:
    """A run of stored rows: the unit of work, checkpointing and resumption of rematch and rescan."""

    id: int
    scan: int  # index into the stored scans
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def where(self) -> str:
        """The unit as an error names it."""
        return f"unit {self.id} (stored rows {self.start}-{self.stop} of scan {self.scan})"


def plan_units(scans: list[StoredScan], rows_per_unit: int) -> list[StoredUnit]:
    """Consecutive units over every stored scan's rows, in order."""
    units: list[StoredUnit] = []
    for index, scan in enumerate(scans):
        for start in range(0, scan.rows, rows_per_unit):
            units.append(StoredUnit(len(units), index, start, min(start + rows_per_unit, scan.rows)))
    return units


class StoredJob(Job):
    """What a rematch and a rescan share as Jobs: units over the stored rows, the records' signatures as
    what a resumption must find unchanged, the scans' inputs in the manifest, hash records always kept."""

    scans: list[StoredScan]

    def load(self) -> list[StoredUnit]:
        return plan_units(self.scans, self.config.source.rows_per_unit)

    def fingerprint(self, lists: list[HashList]) -> dict:
        return lifecycle.fingerprint(self.config, lists, records=[scan.signature() for scan in self.scans])

    def stored_manifest(self, run: Run, **extra: object) -> dict:
        """Provenance, with the inputs of the scans whose records were read (for `scanner clean`)."""
        inputs = []
        for scan in self.scans:
            if (scan.dir / "manifest.json").is_file():
                inputs.extend(scan.manifest().get("inputs", []))
        return lifecycle.manifest(self.config, run.lists, inputs, **extra)

    def merge_more(self, run: Run) -> None:
        """Verdicts recorded beside the stored scans come along (reports/verdicts.py checks each row)."""
        verdicts.carry([scan.dir for scan in self.scans], run.out)


class StoredScans:
    """The stored scans as a process running units opens them: by path, each once, on first use (a
    ParquetFile stays in the process that opened it), with its evidence records."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self._scans: dict[int, StoredScan] = {}
        self._evidence: dict[int, dict[tuple[str, int], dict]] = {}

    def __getstate__(self) -> dict:
        return {"paths": self.paths}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["paths"])

    def read(self, unit: StoredUnit) -> list[StoredRow]:
        return self.scan(unit.scan).read(unit.start, unit.stop)

    def scan(self, index: int) -> StoredScan:
        if index not in self._scans:
            self._scans[index] = StoredScan(self.paths[index])
        return self._scans[index]

    def evidence(self, index: int) -> dict[tuple[str, int], dict]:
        if index not in self._evidence:
            self._evidence[index] = self.scan(index).evidence()
        return self._evidence[index]


def _outcome(values: dict) -> RowResult:
    fetched = values.get("fetched_at")
    fields = {name: values.get(name) for name in OUTCOME_SCHEMA.names}
    fields["fetched_at"] = fetched.timestamp() if fetched is not None else None
    return RowResult(**fields)


def _assumed_outcome(record: dict) -> RowResult:
    """Without outcomes.parquet: clean when the record holds an image's hashes, invalid when only digests
    (a body that was no usable image), unchecked when none."""
    hashed = any(record.get(name) for name in hex_columns())
    image = record.get("width") is not None
    return RowResult(
        record["shard"],
        record["row"],
        record["url"],
        record["key"],
        (Outcome.CLEAN if image else Outcome.INVALID) if hashed else Outcome.UNCHECKED,
        fetched_at=record["fetched_at"],
    )

"""The rows a scan reports: one RowResult per input row, plus match and evidence records."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from scanner.outcomes import Outcome

OUTCOME_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("row", pa.int64()),
        ("url", pa.string()),
        ("key", pa.string()),
        ("outcome", pa.string()),
        ("http_status", pa.int32()),
        ("reason", pa.string()),
        ("fetched_at", pa.timestamp("ms", tz="UTC")),
        ("bytes", pa.int64()),
        ("member", pa.string()),
        ("perceptual_distance", pa.int32()),  # changed rows: bits from the dataset's pHash/PDQ
    ]
)

MATCH_FIELDS = (
    "shard",
    "row",
    "url",
    "key",
    "list",
    "entry_id",
    "category",
    "hash_type",
    "distance",
    "quality",
    "hash",
)


@dataclass(slots=True)
class RowResult:
    """What happened to one input row: one line of outcomes.parquet."""

    shard: str
    row: int
    url: str | None
    key: str | None
    outcome: Outcome
    http_status: int | None = None
    reason: str | None = None  # a scanner.outcomes reason (or http_<status>)
    fetched_at: float | None = None
    bytes: int | None = None
    member: str | None = None
    perceptual_distance: int | None = None  # a changed row's distance from the dataset's perceptual hash


@dataclass(slots=True)
class UnitReport:
    """Everything one work unit produced: committed together, merged in unit order."""

    unit_id: int
    outcomes: list[RowResult]
    matches: list[dict] = field(default_factory=list)
    evidence: list[dict] = field(default_factory=list)
    hashes: list[dict] | None = None  # hash records, one per row, when the scan keeps them
    # A job's own unit files (a rescan's changes and counts), by suffix: a list is written as JSON Lines,
    # a dict as one JSON object; committed with the unit, merged by the job.
    side: dict[str, list[dict] | dict] = field(default_factory=dict)


def outcomes_table(outcomes: list[RowResult]) -> pa.Table:
    """Build the outcomes table with the fixed schema (timestamps in ms since the epoch, UTC)."""
    columns = {name: [getattr(o, name) for o in outcomes] for name in OUTCOME_SCHEMA.names}
    columns["fetched_at"] = [None if t is None else int(t * 1000) for t in columns["fetched_at"]]
    return pa.table(columns, schema=OUTCOME_SCHEMA)


class UnitFiles(Protocol):
    """The committed files of work units, as the merge reads them (scanner.run.checkpoint.Checkpoint is one):
    the reports take unit files, never the checkpoint that wrote them."""

    def outcome_files(self, unit_ids: list[int]) -> Iterator[Path]:
        """Each unit's outcomes file, in unit order, checked against its commit."""
        ...

    def side_files(self, unit_ids: list[int], suffix: str) -> Iterator[Path]:
        """Each unit's file with this suffix (matches, evidence, hash records), in unit order, checked."""
        ...

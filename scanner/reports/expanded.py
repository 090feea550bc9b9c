"""expanded.jsonl: rows of a scan that lie near a seed row by a stored perceptual hash (`scanner expand`).

One line per (candidate row, hash type): the row (shard, row, url, key), the hash type, the threshold used,
the distance to its nearest seed and that seed's shard and row. Candidates, never matches: nothing in a list
named them, a person decides. Written 0600, atomically, beside the other reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from scanner.reports import jsonl
from scanner.reports.files import atomic_open

EXPANDED_FILE = "expanded.jsonl"
LISTED_RECORDS = 50  # records report.html shows; the file holds them all


@dataclass(slots=True)
class ExpandedFigures:
    """What report.html shows of expanded.jsonl: counts and the first records, read in one pass."""

    records: int = 0
    rows: int = 0  # distinct candidate rows (the file lists a row's hash types together)
    last: tuple | None = None
    seeds: set = field(default_factory=set)
    by_hash_type: Counter = field(default_factory=Counter)
    listed: list[dict] = field(default_factory=list)


def write_expanded(out_dir: str | Path, records: Iterable[dict]) -> tuple[Path, int]:
    """Write out_dir/expanded.jsonl (0600, atomic); returns its path and the number of records."""
    path = Path(out_dir) / EXPANDED_FILE
    with atomic_open(path, "w") as handle:
        count = jsonl.write_records(handle, records)
    return path, count


def expanded_figures(out_dir: str | Path) -> ExpandedFigures | None:
    """The figures of out_dir/expanded.jsonl, or None when `scanner expand` has not run there."""
    path = Path(out_dir) / EXPANDED_FILE
    if not path.is_file():
        return None
    figures = ExpandedFigures()
    for record in jsonl.read_records(path):
        figures.records += 1
        row = (record.get("shard"), record.get("row"))
        figures.rows += row != figures.last
        figures.last = row
        figures.seeds.add((record.get("seed_shard"), record.get("seed_row")))
        figures.by_hash_type[str(record.get("hash_type"))] += 1
        if len(figures.listed) < LISTED_RECORDS:
            figures.listed.append(record)
    return figures

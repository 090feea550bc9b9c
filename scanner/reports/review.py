"""What the merge sets aside for review: flood entries (one list entry matching far too many rows), their
rows held (--hold-floods), and rows a negative list suppresses (--negative-list).

Units run in parallel, so how many rows an entry matched is known only once every unit is done: the merge
counts first (matches are few beside rows), then writes each unit's rows in unit order, a held or
suppressed row's outcome rewritten and its match records moved to held.jsonl or suppressed.jsonl (one line
a row: its matches and evidence), never dropped. The same units and settings give the same files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from scanner.outcomes import Outcome
from scanner.reports import jsonl
from scanner.reports.files import atomic_open
from scanner.reports.records import OUTCOME_SCHEMA, UnitFiles

HELD_FILE = "held.jsonl"
SUPPRESSED_FILE = "suppressed.jsonl"
SET_ASIDE = {Outcome.HELD: HELD_FILE, Outcome.SUPPRESSED: SUPPRESSED_FILE}


@dataclass(frozen=True, slots=True)
class ReviewConfig:
    """The [review] settings: when an entry is a flood, whether its rows are held, the negative lists."""

    flood_rows: int = 100  # an entry matching more rows than this is a flood
    flood_share: float = 0.001  # or more than this share of the scanned rows ...
    flood_min_rows: int = 10  # ... and more rows than this (a small scan's share is a row or two)
    hold_floods: bool = False  # rows whose every match is a flood entry: held, not match
    negative_lists: tuple[str, ...] = ()  # lists of false positives' own hashes (scanner review negative)


@dataclass(frozen=True, slots=True)
class Review:
    """A run's review rules: its settings and the names of its negative lists as loaded."""

    config: ReviewConfig = field(default_factory=ReviewConfig)
    negative: frozenset[str] = frozenset()


def is_flood(rows: int, scanned: int, config: ReviewConfig) -> bool:
    """Whether an entry that matched `rows` of `scanned` rows is a likely bad list entry."""
    by_share = rows > config.flood_share * scanned and rows > config.flood_min_rows
    return rows > config.flood_rows or by_share


def count_entries(unit_matches: Iterable[Iterable[dict]], negative: frozenset[str]) -> Counter:
    """Rows matched per (list, entry id), negative lists left out; a row's records come together."""
    counts: Counter = Counter()
    for records in unit_matches:
        for row_records in by_row(records):
            counts.update({(m["list"], m["entry_id"]) for m in row_records if m["list"] not in negative})
    return counts


def floods(counts: Counter, scanned: int, config: ReviewConfig) -> list[dict]:
    """The flood entries, most rows first (then list and id): summary.json `floods`."""
    found = [
        {"list": name, "entry_id": entry, "rows": rows, "hold": config.hold_floods}
        for (name, entry), rows in counts.items()
        if is_flood(rows, scanned, config)
    ]
    return sorted(found, key=lambda f: (-f["rows"], f["list"], f["entry_id"]))


def set_aside(records: list[dict], review: Review, flooded: set[tuple[str, str]]) -> Outcome | None:
    """A matched row's outcome when review sets it aside (suppressed, held), else None (a match)."""
    if any(m["list"] in review.negative for m in records):
        return Outcome.SUPPRESSED
    if review.config.hold_floods and all((m["list"], m["entry_id"]) in flooded for m in records):
        return Outcome.HELD
    return None


def by_row(records: Iterable[dict]) -> Iterator[list[dict]]:
    """Match records grouped by row (a row's records are written together, in row order)."""
    group: list[dict] = []
    for record in records:
        if group and (group[0]["shard"], group[0]["row"]) != (record["shard"], record["row"]):
            yield group
            group = []
        group.append(record)
    if group:
        yield group


def set_aside_record(records: list[dict], evidence: dict | None, outcome: Outcome) -> dict:
    """One line of held.jsonl or suppressed.jsonl: the row, why, every match it had and its evidence."""
    first = records[0]
    return {
        "shard": first["shard"],
        "row": first["row"],
        "url": first.get("url"),
        "key": first.get("key"),
        "outcome": outcome,
        "matches": records,
        "evidence": evidence,
    }


def read_set_aside(out_dir: Path, outcome: Outcome) -> Iterator[dict]:
    """The records of held.jsonl or suppressed.jsonl ([] when the run set none aside)."""
    path = Path(out_dir) / SET_ASIDE[outcome]
    if path.is_file():
        for _number, record in jsonl.read_lines(path):
            yield record


Counts = tuple[Callable[[pa.Table], None], Callable[[dict], None]]


def merge_reviewed(
    out_dir: Path, units: UnitFiles, unit_ids: list[int], review: Review, counts: Counts
) -> list[dict]:
    """The merge with review: count rows per entry, then write every unit's outcomes, matches and evidence
    in unit order, setting aside held and suppressed rows; `counts` sees each unit's outcomes table and
    each match record written. Returns the flood entries."""
    scanned = sum(pq.read_metadata(path).num_rows for path in units.outcome_files(unit_ids))
    unit_matches = (jsonl.read_records(p) for p in units.side_files(unit_ids, ".matches.jsonl"))
    found = floods(count_entries(unit_matches, review.negative), scanned, review.config)
    merge = _Merge(review, {(f["list"], f["entry_id"]) for f in found}, counts)
    with ExitStack() as stack:
        handle = stack.enter_context(atomic_open(out_dir / "outcomes.parquet"))
        writer = stack.enter_context(pq.ParquetWriter(handle, OUTCOME_SCHEMA))
        merge.matches = stack.enter_context(atomic_open(out_dir / "matches.jsonl", "w"))
        merge.evidence = stack.enter_context(atomic_open(out_dir / "evidence.jsonl", "w"))
        sides = zip(
            units.outcome_files(unit_ids),
            units.side_files(unit_ids, ".matches.jsonl"),
            units.side_files(unit_ids, ".evidence.jsonl"),
            strict=True,
        )
        for outcome_path, matches_path, evidence_path in sides:
            changed = merge.unit(jsonl.read_records(matches_path), jsonl.read_records(evidence_path))
            table = _rewritten(pq.read_table(outcome_path, schema=OUTCOME_SCHEMA), changed)
            writer.write_table(table, row_group_size=64 * 1024)
            counts[0](table)
    for outcome, records in merge.aside.items():
        path = out_dir / SET_ASIDE[outcome]
        if not records:
            path.unlink(missing_ok=True)  # an earlier run's, in a --restart'ed directory
            continue
        with atomic_open(path, "w") as handle:
            jsonl.write_records(handle, records)
    return found


class _Merge:
    """One reviewed merge's state: where kept matches go, and the rows set aside so far."""

    def __init__(self, review: Review, flooded: set[tuple[str, str]], counts: Counts) -> None:
        self.review, self.flooded, self.count_match = review, flooded, counts[1]
        self.matches: IO[str] | None = None
        self.evidence: IO[str] | None = None
        self.aside: dict[Outcome, list[dict]] = {outcome: [] for outcome in SET_ASIDE}

    def unit(self, matches: Iterable[dict], evidence: Iterable[dict]) -> dict[tuple[str, int], Outcome]:
        """Write a unit's kept matches and evidence; returns the outcomes of its rows set aside."""
        proofs = {(e["shard"], e["row"]): e for e in evidence}
        changed: dict[tuple[str, int], Outcome] = {}
        for records in by_row(matches):
            where = (records[0]["shard"], records[0]["row"])
            outcome = set_aside(records, self.review, self.flooded)
            if outcome is not None:
                changed[where] = outcome
                self.aside[outcome].append(set_aside_record(records, proofs.get(where), outcome))
                continue
            jsonl.write_records(self.matches, records)
            jsonl.write_records(self.evidence, [proofs[where]] if where in proofs else [])
            for record in records:
                self.count_match(record)
        return changed


def _rewritten(table: pa.Table, changed: dict[tuple[str, int], Outcome]) -> pa.Table:
    """The unit's outcomes with the set-aside rows' outcome replaced."""
    if not changed:
        return table
    keys = zip(table["shard"].to_pylist(), table["row"].to_pylist(), strict=True)
    column = [changed.get(key, old) for key, old in zip(keys, table["outcome"].to_pylist(), strict=True)]
    index = table.schema.get_field_index("outcome")
    return table.set_column(index, "outcome", pa.array(column, pa.string()))

"""The report files against each other (for `scanner verify`): digests show a file changed since the manifest,
these checks show reports that disagree however they came to be (a unit merged twice, an edited outcome with
its digest updated in the manifest too).

- outcomes.parquet holds every row of every shard exactly once: rows 0..n-1 of each shard, each once;
- every match record's (shard, row) has outcome `match`, and every `match` outcome has a match record.
The summary's totals against the outcome and match rows are checked by verify itself.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scanner.errors import InputError
from scanner.outcomes import Outcome
from scanner.reports import jsonl

SHOWN = 3  # examples named per problem
COLUMNS = {"shard": pa.string(), "row": pa.int64(), "outcome": pa.string()}


def consistency_problems(out: Path) -> list[str]:
    """Each disagreement between outcomes.parquet and matches.jsonl, named; [] when they agree (or a file
    is missing, which verify reports already)."""
    outcomes_path, matches_path = out / "outcomes.parquet", out / "matches.jsonl"
    if not outcomes_path.is_file():
        return []
    try:
        schema = pq.read_schema(outcomes_path)
        wrong = [
            name
            for name, kind in COLUMNS.items()
            if name not in schema.names or schema.field(name).type != kind
        ]
        if wrong:
            return [f"outcomes.parquet: no {' or '.join(wrong)} column of the outcome schema's type"]
        table = pq.read_table(outcomes_path, columns=list(COLUMNS))
    except (OSError, pa.ArrowException) as exc:
        return [f"outcomes.parquet: unreadable ({exc})"]
    problems = _row_problems(table)
    if matches_path.is_file():
        problems.extend(_match_problems(table, matches_path))
    return problems


def _row_problems(table: pa.Table) -> list[str]:
    """Per shard: rows 0..n-1, each exactly once."""
    stats = table.group_by("shard").aggregate(
        [("row", "count"), ("row", "count_distinct"), ("row", "min"), ("row", "max"), ([], "count_all")]
    )
    problems = []
    for shard in stats.to_pylist():
        name, rows = shard["shard"], shard["count_all"]
        if shard["row_count"] != rows:
            problems.append(
                f"outcomes.parquet: shard {name}: {rows - shard['row_count']} row(s) with no row number"
            )
            continue
        repeated = rows - shard["row_count_distinct"]
        if repeated:
            problems.append(
                f"outcomes.parquet: shard {name}: {repeated} outcome(s) for rows that already have one "
                f"(row {', '.join(map(str, _repeated_rows(table, name)))}): one outcome per input row"
            )
        elif (shard["row_min"], shard["row_max"]) != (0, rows - 1):
            problems.append(
                f"outcomes.parquet: shard {name}: rows {shard['row_min']}..{shard['row_max']} for {rows} "
                f"outcome(s), not 0..{rows - 1}: rows are missing"
            )
    return problems


def _repeated_rows(table: pa.Table, shard: str) -> list[int]:
    rows = table.filter(pc.equal(table["shard"], shard))["row"]
    counts = pc.value_counts(rows).to_pylist()
    return sorted(c["values"] for c in counts if c["counts"] > 1)[:SHOWN]


def _match_problems(table: pa.Table, matches_path: Path) -> list[str]:
    """Match records against the rows whose outcome is `match`, both ways."""
    matched = table.filter(pc.equal(table["outcome"], Outcome.MATCH.value))
    matched_rows = set(zip(matched["shard"].to_pylist(), matched["row"].to_pylist(), strict=True))
    try:
        recorded = _match_keys(matches_path)
    except ValueError as exc:
        return [f"matches.jsonl: {exc}"]
    problems = []
    without_outcome = sorted(recorded - matched_rows, key=str)
    if without_outcome:
        problems.append(
            f"matches.jsonl: {len(without_outcome)} matched row(s) whose outcome in outcomes.parquet is not "
            f"match ({_shown(without_outcome)})"
        )
    without_record = sorted(matched_rows - recorded, key=str)
    if without_record:
        problems.append(
            f"outcomes.parquet: {len(without_record)} row(s) with outcome match but no record in "
            f"matches.jsonl ({_shown(without_record)})"
        )
    return problems


def _match_keys(path: Path) -> set[tuple[str, int]]:
    """(shard, row) of every match record, read as every report reader reads JSON Lines (jsonl.read_lines);
    ValueError naming the line for one that is not a match record."""
    keys = set()
    try:
        for number, record in jsonl.read_lines(path):
            shard, row = record.get("shard"), record.get("row")
            if not isinstance(shard, str) or type(row) is not int:
                raise ValueError(f"line {number} is not a match record (needs a shard name and a row number)")
            keys.add((shard, row))
    except InputError as exc:
        raise ValueError(f"line {exc.line}: {exc.message}" if exc.line else exc.message) from exc
    return keys


def _shown(keys: list[tuple[str, int]]) -> str:
    shown = ", ".join(f"shard {shard} row {row}" for shard, row in keys[:SHOWN])
    return shown + (", ..." if len(keys) > SHOWN else "")

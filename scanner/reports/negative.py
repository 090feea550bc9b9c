"""`scanner review negative`: the false positives' own hashes as a negative list (canonical CSV).

Each matched row whose verdict is false_positive gives the hashes of its image that matched (matches.jsonl
`hash`, or held.jsonl's and suppressed.jsonl's records): image types only, each once. A later scan or
rematch with --negative-list reports a row matching a list and one of these entries as suppressed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scanner.errors import InputError
from scanner.hashtypes import IMAGE, REGISTRY
from scanner.outcomes import Outcome, Verdict
from scanner.reports import jsonl
from scanner.reports.files import atomic_open, utf8_text
from scanner.reports.review import read_set_aside
from scanner.reports.verdicts import Verdicts

CATEGORY = Verdict.FALSE_POSITIVE.value


@dataclass(slots=True)
class NegativeList:
    """What was written: entries, the rows they came from, and false positives without a stored hash."""

    entries: int
    rows: int
    without_hash: int


def write_negative_list(out_dir: str | Path, output: str | Path) -> NegativeList:
    """Write the negative list of out_dir's false positives to output (0600, atomically)."""
    verdicts = Verdicts.load(out_dir)
    entries: dict[tuple[str, str], str] = {}
    rows, without = set(), set()
    for record in _matches(Path(out_dir)):
        if verdicts.of_record(record) != Verdict.FALSE_POSITIVE:
            continue
        where = (record["shard"], record["row"])
        rows.add(where)
        kind, value = record.get("hash_type"), record.get("hash")
        if value and kind in REGISTRY and REGISTRY[kind].computed_from == IMAGE:
            entries.setdefault((kind, value), f"fp-{len(entries) + 1:06d}")
        else:
            without.add(where)
    if not entries:
        raise InputError(str(out_dir), "no false_positive verdict with a stored hash: nothing to write")
    with atomic_open(output, "wb") as raw, utf8_text(raw) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["hash_type", "hash", "id", "category"])
        for (kind, value), entry_id in entries.items():
            writer.writerow([kind, value, entry_id, CATEGORY])
    return NegativeList(len(entries), len(rows), len(without))


def _matches(out: Path) -> Iterator[dict]:
    """Every match record of the report: matches.jsonl, then those held or suppressed."""
    path = out / "matches.jsonl"
    if not path.is_file():
        raise InputError(str(out), "no matches.jsonl here; is this a finished scan's directory?")
    yield from jsonl.read_records(path)
    for outcome in (Outcome.HELD, Outcome.SUPPRESSED):
        for record in read_set_aside(out, outcome):
            yield from record.get("matches", [])

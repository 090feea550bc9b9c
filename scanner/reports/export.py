"""scanner export: one referral record per match, with what hotline intake forms ask for and nothing more."""

from __future__ import annotations

import bisect
import csv
import itertools
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from scanner.errors import InputError
from scanner.outcomes import Outcome, Verdict
from scanner.reports import jsonl, safetext
from scanner.reports.cybertip import CYBERTIP_DRAFT, write_drafts
from scanner.reports.files import atomic_open, utf8_text
from scanner.reports.review import read_set_aside
from scanner.reports.verdicts import Verdicts

FORMATS = ("csv", "jsonl", CYBERTIP_DRAFT)
CAPTION_COLUMNS = ("TEXT", "caption", "text")
REFERRAL_FIELDS = (
    "url",
    "final_url",
    "observed_at",
    "http_status",
    "server_ip",
    "content_length",
    "content_type",
    "list",
    "entry_id",
    "category",
    "hash_type",
    "distance",
    "quality",
    "transform",
    "entry",  # the list's own columns of the matched entry (NCMEC member, pytx tags); JSON text in CSV
    "dataset",
    "shard",
    "row",
    "member",  # the image inside a downloaded corpus shard (tar member, folder file); empty for URL lists
    "key",
    "verdict",  # the reviewer's (verdicts.jsonl): confirmed, false_positive, or unreviewed
)


def write_referrals(
    out_dir: str | Path,
    fmt: str = "csv",
    with_captions: bool = False,
    output: str | Path | None = None,
    verdicts: Collection[str] = (),
) -> tuple[Path, int]:
    """Write the referral file (0600, atomically; default DIR/referrals.FORMAT, DIR/cybertip-draft.jsonl);
    return path and count (rows; drafts). `verdicts`: only match records whose row has one of these."""
    if fmt not in FORMATS:
        raise InputError(
            str(output or out_dir), f"unknown export format {fmt!r}; expected {', '.join(FORMATS)}"
        )
    out = Path(out_dir)
    if not (out / "matches.jsonl").is_file():
        raise InputError(str(out), "no matches.jsonl here; is this a finished scan's directory?")
    if fmt == CYBERTIP_DRAFT and not verdicts:
        verdicts = (Verdict.CONFIRMED,)  # a draft is for a reviewed, confirmed row only, unless asked
    # A held row is a match set aside for review: referred once a reviewer confirms it (or asked by verdict)
    records = itertools.chain(
        referrals(out, with_captions), held_referrals(out, verdicts or (Verdict.CONFIRMED,), with_captions)
    )
    if verdicts:
        records = (r for r in records if r["verdict"] in verdicts)
    if fmt == CYBERTIP_DRAFT:
        path = Path(output) if output else out / f"{CYBERTIP_DRAFT}.jsonl"
        with atomic_open(path, "wb") as raw, utf8_text(raw) as handle:
            return path, write_drafts(handle, records)
    path = Path(output) if output else out / f"referrals.{fmt}"
    fields = [*REFERRAL_FIELDS, "caption"] if with_captions else list(REFERRAL_FIELDS)
    with atomic_open(path, "wb") as raw, utf8_text(raw) as handle:
        count = _write(handle, fmt, fields, records)
    return path, count


def referrals(out_dir: Path, with_captions: bool = False) -> Iterator[dict]:
    """Stream-join matches.jsonl and evidence.jsonl: both in unit order, one evidence line per matched row."""
    evidence = _records(out_dir / "evidence.jsonl")
    captions = _Captions() if with_captions else None
    verdicts = Verdicts.load(out_dir)
    current: dict | None = None
    for number, match in _records(out_dir / "matches.jsonl"):
        where = (match["shard"], match["row"])
        while current is None or (current["shard"], current["row"]) != where:
            current = next(evidence, (0, None))[1]
            if current is None:
                raise InputError(
                    str(out_dir / "matches.jsonl"), "no evidence.jsonl record for this match", number
                )
        record = referral(match, current)
        record["verdict"] = verdicts.of_record(match)
        if captions is not None:
            record["caption"] = captions.get(match["shard"], match["row"])
        yield record


def held_referrals(out_dir: Path, verdicts: Collection[str], with_captions: bool = False) -> Iterator[dict]:
    """The match records of held rows (held.jsonl) whose verdict is one of `verdicts`, with their evidence."""
    captions = _Captions() if with_captions else None
    known = Verdicts.load(out_dir)
    for row in read_set_aside(out_dir, Outcome.HELD):
        verdict = known.of_record(row)
        if verdict not in verdicts:
            continue
        for match in row.get("matches") or []:
            record = referral(match, row.get("evidence") or {})
            record["verdict"] = verdict
            if captions is not None:
                record["caption"] = captions.get(match["shard"], match["row"])
            yield record


def referral(match: dict, evidence: dict) -> dict:
    """One referral record from a match and the evidence of the response that carried the image."""
    return {
        "url": match["url"],
        "final_url": evidence.get("final_url"),
        "observed_at": evidence.get("observed_at"),
        "http_status": evidence.get("http_status"),
        "server_ip": evidence.get("server_ip"),
        "content_length": evidence.get("content_length"),
        "content_type": evidence.get("content_type"),
        "list": match["list"],
        "entry_id": match["entry_id"],
        "category": match.get("category"),
        "hash_type": match["hash_type"],
        "distance": match["distance"],
        "quality": match.get("quality"),
        "transform": match.get("transform"),
        "entry": match.get("entry") if isinstance(match.get("entry"), dict) else None,
        "dataset": str(Path(match["shard"]).parent),
        "shard": match["shard"],
        "row": match["row"],
        "member": match.get("member"),
        "key": match.get("key"),
        "hash": match.get("hash"),
        "classification": match.get("classification"),
    }


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    if not path.is_file():
        raise InputError(str(path), "no such file; is this a finished scan's directory?")
    for number, record in jsonl.read_lines(path):
        if "shard" not in record or "row" not in record:
            raise InputError(str(path), "not a report record (needs shard and row)", number)
        yield number, record


def _write(handle: IO[str], fmt: str, fields: list[str], records: Iterator[dict]) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow({k: safetext.csv_cell(_csv_value(v)) for k, v in record.items()})
            count += 1
    else:
        for record in records:
            line = jsonl.dumps({k: record.get(k) for k in fields}, sort_keys=False, separators=(", ", ": "))
            handle.write(line + "\n")  # exact values; nothing hidden shows raw (jsonl escapes it)
            count += 1
    return count


def _csv_value(value: object) -> object:
    """A nested value (the entry's columns) as compact JSON text; anything else as it is."""
    return jsonl.dumps(value, sort_keys=False, separators=(",", ":")) if isinstance(value, dict) else value


class _Captions:
    """Captions by row from Parquet shards, one row group in memory at a time (matches come in row order)."""

    def __init__(self) -> None:
        self._shard: str | None = None
        self._file: pq.ParquetFile | None = None
        self._column = ""
        self._starts: list[int] = []
        self._group = (-1, [])

    def get(self, shard: str, row: int) -> str | None:
        if shard != self._shard:
            self._open(shard)
        index = bisect.bisect_right(self._starts, row) - 1
        if index < 0 or row >= self._starts[-1]:
            raise InputError(shard, f"no row {row} (the shard has {self._starts[-1]} rows)")
        if self._group[0] != index:
            table = self._file.read_row_group(index, columns=[self._column])
            self._group = (index, table.column(0).to_pylist())
        value = self._group[1][row - self._starts[index]]
        return None if value is None else str(value)

    def _open(self, shard: str) -> None:
        if not shard.lower().endswith(".parquet"):
            raise InputError(shard, "--with-captions reads captions from Parquet shards only")
        try:
            self._file = pq.ParquetFile(shard)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(shard, f"cannot read the shard for captions ({exc})") from exc
        names = self._file.schema_arrow.names
        column = next((c for c in CAPTION_COLUMNS if c in names), None)
        if column is None:
            raise InputError(shard, f"no caption column ({', '.join(CAPTION_COLUMNS)}); columns are: {names}")
        meta = self._file.metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self._starts = [0, *itertools.accumulate(sizes)]
        self._shard, self._column, self._group = shard, column, (-1, [])

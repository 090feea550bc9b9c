"""Reviewers' verdicts on matched rows, kept beside the reports in verdicts.jsonl (0600, append-only).

A verdict is keyed by shard and row and carries the SHA-256 of the row's normalised URL (and its key): it
applies to a row of a report only while both still agree, so a verdict copied to a rematch or rescan of
the same rows holds, and one brought to a reshuffled dataset is reported as a mismatch, never applied to
the wrong row. Each line records the verdict, the reviewer's note, the operator and the time; nothing about
the image. The last line for a row wins (`unreviewed` takes a verdict back); a matched row without any is
unreviewed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scanner.errors import InputError
from scanner.outcomes import MATCHED, VERDICTS, Verdict
from scanner.regularfile import open_regular
from scanner.reports import jsonl
from scanner.reports.files import utf8_text
from scanner.urls.normal import normalise_url

VERDICTS_FILE = "verdicts.jsonl"
MAX_NOTE = 2000  # characters of a reviewer's note kept
MAX_OPERATOR = 200
MAX_INPUT_BYTES = 256 * 1024 * 1024  # a verdicts file to import
SHOWN_PROBLEMS = 20


def url_sha256(url: str | None) -> str | None:
    """SHA-256 hex of a URL's normal form (as `scanner url` and clean's removed.parquet give it), or None."""
    try:
        return hashlib.sha256(normalise_url(url).encode("utf-8")).hexdigest() if url else None
    except ValueError:
        return None


@dataclass(slots=True)
class MatchedRow:
    """A matched row of a report as a verdict is checked against it."""

    shard: str
    row: int
    url_sha256: str | None
    key: str | None


@dataclass(slots=True)
class Verdicts:
    """The verdicts recorded beside a report, the last per (shard, row)."""

    latest: dict[tuple[str, int], dict] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # every record, in the order recorded

    @classmethod
    def load(cls, out_dir: str | Path) -> Verdicts:
        path = Path(out_dir) / VERDICTS_FILE
        verdicts = cls()
        if path.is_file():
            for number, record in jsonl.read_lines(path):
                verdicts.latest[_where(record, path, number)] = record
                verdicts.history.append(record)
        return verdicts

    def records(self) -> list[dict]:
        """Every verdict recorded, in order (earlier ones too: the file is the history)."""
        return self.history

    def of(self, shard: str, row: int, url: str | None, key: str | None) -> Verdict:
        """The row's verdict: unreviewed when none is recorded, or when the recorded one is for another row
        (its URL digest or key differs: a mismatch, not applied; `scanner review list` names them)."""
        return self.of_row(MatchedRow(shard, row, url_sha256(url), key))

    def of_row(self, row: MatchedRow) -> Verdict:
        """A matched row's verdict (see `of`)."""
        record = self.latest.get((row.shard, row.row))
        return (
            Verdict(record["verdict"]) if record is not None and agrees(record, row) else Verdict.UNREVIEWED
        )

    def of_record(self, record: dict) -> Verdict:
        """The verdict of a match record's row (see `of`)."""
        return self.of(record["shard"], record["row"], record.get("url"), record.get("key"))


def agrees(record: dict, row: MatchedRow) -> bool:
    """A verdict holds for a row while its URL digest and key are the row's."""
    return record.get("url_sha256") == row.url_sha256 and record.get("key") == row.key


def _where(record: dict, path: Path, number: int) -> tuple[str, int]:
    shard, row, verdict = record.get("shard"), record.get("row"), record.get("verdict")
    if not isinstance(shard, str) or type(row) is not int or verdict not in VERDICTS:
        raise InputError(str(path), "not a verdict record (needs shard, row and a verdict)", number)
    return shard, row


@dataclass(slots=True)
class Imported:
    """What `scanner review import` did: verdicts recorded, and lines refused, each named."""

    recorded: int = 0
    problems: list[str] = field(default_factory=list)
    refused: int = 0

    def refuse(self, where: str, why: str) -> None:
        self.refused += 1
        if len(self.problems) < SHOWN_PROBLEMS:
            self.problems.append(f"{where}: {why}")


def matched_rows(out_dir: str | Path) -> dict[tuple[str, int], MatchedRow]:
    """Every matched row of a report (match, held, suppressed), read batch by batch from outcomes.parquet."""
    path = Path(out_dir) / "outcomes.parquet"
    if not path.is_file():
        raise InputError(str(out_dir), "no outcomes.parquet here; is this a finished scan's directory?")
    rows: dict[tuple[str, int], MatchedRow] = {}
    matched = pa.array(sorted(o.value for o in MATCHED))
    for batch in pq.ParquetFile(path).iter_batches(columns=["shard", "row", "url", "key", "outcome"]):
        for r in batch.filter(pc.is_in(batch["outcome"], value_set=matched)).to_pylist():
            rows[r["shard"], r["row"]] = MatchedRow(r["shard"], r["row"], url_sha256(r["url"]), r["key"])
    return rows


def import_verdicts(out_dir: str | Path, source: str | Path, operator: str) -> Imported:
    """Append the verdicts of a CSV or JSONL file to out_dir/verdicts.jsonl. Each line names its row by
    shard and row (checked against url_sha256 or key when it has them), by url_sha256 or by key; a line
    that names no matched row, or names one ambiguously or wrongly, is refused and counted."""
    if not operator or len(operator) > MAX_OPERATOR:
        raise InputError("--operator", f"give who records these verdicts (at most {MAX_OPERATOR} characters)")
    rows = matched_rows(out_dir)
    by_digest = _index(rows.values(), "url_sha256")
    by_key = _index(rows.values(), "key")
    result, accepted = Imported(), []
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for where, line in read_input(source):
        try:
            row = _resolve(line, rows, by_digest, by_key)
            verdict = _verdict(line.get("verdict"))
            note = str(line.get("note") or "")
            if len(note) > MAX_NOTE:
                raise ValueError(f"a note longer than {MAX_NOTE} characters")
        except ValueError as exc:
            result.refuse(where, str(exc))
            continue
        accepted.append(
            {
                "shard": row.shard,
                "row": row.row,
                "url_sha256": row.url_sha256,
                "key": row.key,
                "verdict": verdict,
                "note": note,
                "operator": operator,
                "recorded_at": now,
            }
        )
    append(out_dir, accepted)
    result.recorded = len(accepted)
    return result


def append(out_dir: str | Path, records: list[dict]) -> None:
    """Append records to verdicts.jsonl: created 0600, opened for appending only, never rewritten."""
    if not records:
        return
    path = Path(out_dir) / VERDICTS_FILE
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "ab") as raw, utf8_text(raw) as handle:
        jsonl.write_records(handle, records)
        handle.flush()
        os.fsync(raw.fileno())


def read_input(source: str | Path) -> Iterator[tuple[str, dict]]:
    """(where, record) for each line of a verdicts file: JSONL when it is named .jsonl or starts with `{`,
    else CSV with a header (shard,row | url_sha256 | key, verdict, note)."""
    with open_regular(source) as handle:
        data = handle.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(str(source), f"larger than {MAX_INPUT_BYTES // 2**20} MiB: split it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(str(source), f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    if str(source).endswith(".jsonl") or text.lstrip().startswith("{"):
        yield from ((f"{source}:{n}", r) for n, r in jsonl.read_lines(source))
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))  # a quoted note keeps its own line ends
    if not reader.fieldnames or "verdict" not in reader.fieldnames:
        raise InputError(str(source), "a CSV of verdicts needs a header with a verdict column", 1)
    for record in reader:
        yield f"{source}:{reader.line_num}", {k: v for k, v in record.items() if k and v not in (None, "")}


def _resolve(
    line: dict,
    rows: dict[tuple[str, int], MatchedRow],
    by_digest: dict[str, list[MatchedRow]],
    by_key: dict[str, list[MatchedRow]],
) -> MatchedRow:
    if "shard" in line and "row" in line:
        row = rows.get((str(line["shard"]), _int(line["row"])))
        if row is None:
            raise ValueError(f"shard {line['shard']} row {line['row']} is no matched row of this report")
        for name in ("url_sha256", "key"):
            if name in line and str(line[name]) != str(getattr(row, name)):
                raise ValueError(f"its {name} is not the row's: a verdict for another dataset (not applied)")
        return row
    for name, index in (("url_sha256", by_digest), ("key", by_key)):
        if name in line:
            found = index.get(str(line[name]), [])
            if len(found) != 1:
                many = f"{len(found)} matched rows" if found else "no matched row"
                raise ValueError(f"{name} {line[name]} names {many}; give shard and row")
            return found[0]
    raise ValueError("names no row: give shard and row, url_sha256 or key")


def _index(rows: Iterable[MatchedRow], name: str) -> dict[str, list[MatchedRow]]:
    index: dict[str, list[MatchedRow]] = {}
    for row in rows:
        value = getattr(row, name)
        if value is not None:
            index.setdefault(str(value), []).append(row)
    return index


def _int(value: object) -> int:
    try:
        if not str(value).strip().isascii():  # int() reads other scripts' digits: "٣" is no row number here
            raise ValueError(value)
        return int(str(value))
    except ValueError:
        raise ValueError(f"row {value!r} is not a row number") from None


def _verdict(value: object) -> Verdict:
    if value not in VERDICTS:
        raise ValueError(f"verdict {value!r} is not one of {', '.join(VERDICTS)}")
    return Verdict(value)


def carry(sources: Iterable[Path], out_dir: Path) -> int:
    """Copy the verdicts recorded beside earlier reports (a rematch's or rescan's stored scans) into out_dir,
    each record once; they apply there as anywhere, while the row's URL digest and key agree."""
    present = {jsonl.dumps(r) for r in Verdicts.load(out_dir).records()}
    carried = []
    for source in sources:
        if Path(source).resolve() == Path(out_dir).resolve():
            continue
        for record in Verdicts.load(source).records():
            if (line := jsonl.dumps(record)) not in present:
                present.add(line)
                carried.append(record)
    append(out_dir, carried)
    return len(carried)

"""Per-unit committed outputs: a killed scan resumes where it stopped, with no row lost or repeated.

A unit's files (outcomes, matches, evidence, hash records, a rescan's changes and counts) are written first;
its done marker, written last, is the commit: it names the unit and records each file's SHA-256. Committed
units are checked against their markers when a run resumes and again as they are merged, so a damaged,
missing or swapped unit file stops the run with its name, never a traceback and never a silent report.

A unit still running commits its finished rows in parts (`pNNNNNN.KKKK.jsonl`: each row's report and its
position in the unit), so a kill loses little of a long unit: a resumed unit is given its parts' rows and
checks only the others, and its done marker, once written, makes its parts obsolete (they are removed).
Parts are never merged: the unit's own files hold every row, as if it had run at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pyarrow.parquet as pq

from scanner.errors import CheckpointError, InputError, ResumeError
from scanner.regularfile import open_regular
from scanner.reports import jsonl
from scanner.reports.files import DIR_MODE, atomic_open, private_dir, sha256_file, write_json, write_jsonl
from scanner.reports.hashes import write_unit_hashes
from scanner.reports.records import UnitReport, from_row_record, outcomes_table, row_record
from scanner.run.mirror import FILE_SCHEME, Mirror, local_dir
from scanner.sources.hub import parse
from scanner.sources.storage import is_remote

UNITS_DIR = ".units"
FINGERPRINT = "fingerprint.json"
COMPLETE = "complete"
DONE_SUFFIX = ".done.json"
OUTCOMES_SUFFIX = ".outcomes.parquet"
MARKER = re.compile(r"u(\d{6})\.done\.json")
PART = re.compile(r"p(\d{6})\.(\d{4,})\.jsonl")
MAX_JSON_BYTES = 256 << 20  # a fingerprint or done marker: far more than any scan writes
RESTART = "run the same command with --restart to start over"
HUB_COMMITS = "hub_commits"  # hf:// input without its revision -> the commit read
SETTINGS_SHOWN = "settings_shown"  # the fingerprint's settings by name (older checkpoints keep only the hash)
MAX_SHOWN = 8  # changed settings a refusal lists


def read_parts(unit_id: int, paths: list[str]) -> dict[int, UnitReport]:
    """The rows a unit's committed parts hold, by position in the unit; a damaged part is a CheckpointError
    naming it."""
    rows: dict[int, UnitReport] = {}
    for path in map(Path, paths):
        try:
            if os.path.islink(path) or path.stat().st_size > MAX_JSON_BYTES:
                raise ValueError("a symbolic link, or larger than any part")
            for record in jsonl.read_records(path):
                position, report = from_row_record(unit_id, record)
                if position in rows:
                    raise ValueError(f"row {position} of the unit twice")
                rows[position] = report
        except (OSError, InputError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{path} is not a part its unit committed ({_why(exc)}); delete it to redo its rows, "
                f"or {RESTART}"
            ) from exc
    return rows


def open_out(
    out: str, fingerprint: dict, restart: bool = False, settle: Callable[[], dict] | None = None
) -> tuple[Path, Checkpoint]:
    """The local report directory for --out and its checkpoint; an fsspec URL is written through a local
    staging directory, pulled from the URL first (scanner.run.mirror)."""
    mirror = Mirror.for_out(out)
    if mirror is not None:
        mirror.pull()
    directory = private_dir(local_dir(out))
    return directory, Checkpoint(directory, fingerprint, restart, mirror, settle)


def may_resume(out: str) -> bool:
    """Whether --out may hold a run to resume: a checkpoint's fingerprint is there, or --out is a URL (what
    it holds is known once pulled)."""
    if is_remote(out) and not out.startswith(FILE_SCHEME):
        return True
    return (local_dir(out) / UNITS_DIR / FINGERPRINT).exists()


def own_dir(path: Path) -> Path:
    """A directory the scanner keeps inside --out: created 0700, or used only when it is a real directory.
    A symbolic link there is refused before anything touches it (its target's mode is left alone)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, DIR_MODE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:  # ELOOP: a symbolic link; ENOTDIR: a file
        raise CheckpointError(
            f"{path} is a symbolic link or a file, not the directory the scanner keeps there: remove it "
            "(the scanner never follows links inside the report directory), or use another --out"
        ) from exc
    try:
        os.fchmod(fd, DIR_MODE)
    finally:
        os.close(fd)
    return path


def finished_summary(out: Path) -> dict:
    """summary.json of a run that completed in out (its checkpoint sealed)."""
    path = out / "summary.json"
    try:
        summary = _load_json(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: the finished run's summary is unreadable ({_why(exc)}); {RESTART}"
        ) from exc
    if not isinstance(summary, dict):
        raise CheckpointError(f"{path}: the finished run's summary is not a JSON object; {RESTART}")
    return summary


class Checkpoint:
    """The units directory inside --out: one committed set of files per finished unit.

    `settle`, for a fresh run whose lists take their digests as they load (lists/deferred.py): the whole
    fingerprint (`fingerprint` holds None for those digests), waiting for those loads. It is written before
    the first commit, so a checkpoint that holds work always holds its whole fingerprint; an earlier run
    found here after all is compared with it whole.
    """

    def __init__(
        self,
        out_dir: Path,
        fingerprint: dict,
        restart: bool = False,
        mirror: Mirror | None = None,
        settle: Callable[[], dict] | None = None,
    ) -> None:
        self.dir = Path(out_dir) / UNITS_DIR
        self.mirror = mirror
        self._settle: Callable[[], dict] | None = None
        if restart:
            self._discard()
        private_dir(out_dir)
        own_dir(self.dir)
        self._adopt(fingerprint, settle)
        self._committed = {unit_id: self._check_unit(unit_id) for unit_id in self._marked()}
        self._parts = self._find_parts()
        self._part_rows = {unit_id: len(self.kept(unit_id)) for unit_id in self._parts}

    def _discard(self) -> None:
        if self.dir.is_symlink():
            own_dir(self.dir)  # refuses it, naming it
        if self.dir.exists():
            shutil.rmtree(self.dir)
        if self.mirror is not None:
            self.mirror.remove(self.dir)

    def _adopt(self, fingerprint: dict, settle: Callable[[], dict] | None) -> None:
        """Refuse to mix units from a scan of other inputs, lists or settings."""
        path = self.dir / FINGERPRINT
        if path.exists() and not self._holds_work():
            path.unlink()  # a run that stopped before it kept anything (a bad list): nothing to mix with
        if path.exists():
            fingerprint = settle() if settle is not None else fingerprint
            previous = self._read_json(path, f"the checkpoint's fingerprint is damaged ({{}}); {RESTART}")
            keys = (fingerprint.keys() | previous.keys()) - {SETTINGS_SHOWN}  # the settings' hash decides
            changed = sorted(k for k in keys if fingerprint.get(k) != previous.get(k))
            if HUB_COMMITS in changed:
                _refuse_moved(self.dir.parent, previous.get(HUB_COMMITS), fingerprint.get(HUB_COMMITS))
            if changed:
                named = [_settings_named(previous, fingerprint) if k == "settings" else k for k in changed]
                raise ResumeError(
                    f"{self.dir.parent} holds a scan with different {', '.join(named)}; "
                    "use a new --out, or --restart to discard it"
                )
        elif self._marked():  # units of unknown inputs and settings: never adopted
            raise CheckpointError(f"{path} is missing, but {self.dir} holds committed units; {RESTART}")
        elif settle is not None:
            self._settle = settle
        else:
            self._write_fingerprint(fingerprint)

    def _write_fingerprint(self, fingerprint: dict) -> None:
        path = self.dir / FINGERPRINT
        write_json(path, fingerprint)
        self._publish([path])

    def _settled(self) -> None:
        """Write the fingerprint left to settle, before the first thing it guards (a load's error is raised
        here, and nothing is written)."""
        if self._settle is not None:
            self._write_fingerprint(self._settle())
            self._settle = None

    def _holds_work(self) -> bool:
        """Whether any unit or part was committed here, or the run finished (its reports stand)."""
        kept = (path.name for path in self.dir.iterdir())
        return bool(self._marked()) or any(name == COMPLETE or PART.fullmatch(name) for name in kept)

    def check_rows(self, expected: dict[int, tuple[str, int, int]]) -> None:
        """Check each committed unit's outcomes hold exactly its own rows: `expected` maps a unit id to its
        (shard, first row, stop). A unit's files copied over another's, marker and all, with digests that
        match, would otherwise merge one unit's rows twice and another's not at all."""
        for unit_id in sorted(self._committed):
            if unit_id not in expected:
                continue  # not a unit of this plan: never merged
            # Its digest was checked when this checkpoint opened, a moment ago: its rows are what is left.
            path = self._checked_file(unit_id, OUTCOMES_SUFFIX, digest=False)
            shard, start, stop = expected[unit_id]
            try:
                columns = pq.read_table(path, columns=["shard", "row"]).to_pydict()
            except (OSError, ValueError, KeyError) as exc:  # ArrowInvalid is a ValueError
                self._damaged(unit_id, path, f"is unreadable ({_why(exc)})")
            if set(columns["shard"]) - {shard} or sorted(columns["row"]) != list(range(start, stop)):
                self._damaged(
                    unit_id, path, f"does not hold its unit's rows ({shard} rows {start} to {stop - 1})"
                )

    def done(self) -> set[int]:
        """Ids of units whose outputs were committed (and found intact when this run started)."""
        return set(self._committed)

    def committed_rows(self, unit_ids: set[int]) -> int:
        """Rows of these units that earlier runs committed, as their done markers count them."""
        return sum(int(self._committed[i].get("rows") or 0) for i in unit_ids if i in self._committed)

    def commit(self, report: UnitReport) -> None:
        """Write a unit's files, then its done marker (the commit) naming the unit and their digests."""
        self._settled()
        stem = self.dir / f"u{report.unit_id:06d}"
        for suffix, records in ((".matches.jsonl", report.matches), (".evidence.jsonl", report.evidence)):
            with atomic_open(f"{stem}{suffix}", "w") as handle:
                write_jsonl(handle, records)
        if report.hashes is not None:
            write_unit_hashes(str(stem), report.hashes)
        for suffix, data in report.side.items():
            if isinstance(data, dict):
                write_json(f"{stem}{suffix}", data)
            else:
                with atomic_open(f"{stem}{suffix}", "w") as handle:
                    write_jsonl(handle, data)
        with atomic_open(f"{stem}{OUTCOMES_SUFFIX}") as handle:
            pq.write_table(outcomes_table(report.outcomes), handle)
        files = self._unit_files(stem.name)
        marker = {
            "unit": report.unit_id,
            "rows": len(report.outcomes),
            "files": {path.name: sha256_file(path) for path in files},
        }
        write_json(f"{stem}{DONE_SUFFIX}", marker)
        self._committed[report.unit_id] = marker
        self._publish([*files, Path(f"{stem}{DONE_SUFFIX}")])
        self._drop_parts(self._parts.pop(report.unit_id, []))
        self._part_rows.pop(report.unit_id, None)

    def commit_part(self, unit_id: int, rows: list[tuple[int, UnitReport]]) -> None:
        """Write finished rows of a unit still running (each row's report, by position) as its next part."""
        if unit_id in self._committed:
            return  # the unit itself was committed: it holds these rows
        self._settled()
        parts = self._parts.setdefault(unit_id, [])
        number = int(parts[-1].name.split(".")[1]) + 1 if parts else 0
        path = self.dir / f"p{unit_id:06d}.{number:04d}.jsonl"
        with atomic_open(path, "w") as handle:
            write_jsonl(handle, [row_record(position, report) for position, report in rows])
        parts.append(path)
        self._part_rows[unit_id] = self._part_rows.get(unit_id, 0) + len(rows)
        self._publish([path])

    def kept(self, unit_id: int) -> dict[int, UnitReport]:
        """The rows of an unfinished unit that its committed parts hold, by position in the unit."""
        return read_parts(unit_id, self.part_paths(unit_id))

    def part_paths(self, unit_id: int) -> list[str]:
        """The files of an unfinished unit's committed parts, in order: what a unit worker reads its kept
        rows from (a unit's rows are megabytes, the paths a line: the pipe carries the paths)."""
        return [str(path) for path in self._parts.get(unit_id, [])]

    def kept_rows(self, unit_ids: set[int]) -> int:
        """Rows of these unfinished units that earlier runs committed in parts."""
        return sum(self._part_rows.get(unit_id, 0) for unit_id in unit_ids)

    def _find_parts(self) -> dict[int, list[Path]]:
        """Each unfinished unit's parts, in order; a committed unit's (left by a kill after its commit) go."""
        found: dict[int, list[tuple[int, Path]]] = {}
        for path in self.dir.iterdir():
            if matched := PART.fullmatch(path.name):
                found.setdefault(int(matched[1]), []).append((int(matched[2]), path))
        for unit_id in found.keys() & self._committed.keys():
            self._drop_parts([path for _, path in found.pop(unit_id)])
        return {unit_id: [path for _, path in sorted(parts)] for unit_id, parts in found.items()}

    def _drop_parts(self, paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)
            if self.mirror is not None:
                self.mirror.remove(path)

    def _publish(self, paths: list[Path]) -> None:
        """Copy committed files to the output URL in order (a unit's done marker last: it is the commit)."""
        if self.mirror is not None:
            for path in paths:
                self.mirror.push(path)

    def outcome_files(self, unit_ids: list[int]) -> Iterator[Path]:
        """Committed outcomes files in unit order, each checked against its unit's marker."""
        return self.side_files(unit_ids, OUTCOMES_SUFFIX)

    def side_files(self, unit_ids: list[int], suffix: str) -> Iterator[Path]:
        """Committed side files (matches, evidence, hash records) in unit order, each checked against its
        unit's marker as it is reached: a file the unit did not write is a path that does not exist."""
        for unit_id in sorted(unit_ids):
            yield self._checked_file(unit_id, suffix)

    def _checked_file(self, unit_id: int, suffix: str, digest: bool = True) -> Path:
        path = self.dir / f"u{unit_id:06d}{suffix}"
        marker = self._committed.get(unit_id)
        if marker is None:
            raise CheckpointError(f"{self.dir}: unit {unit_id} was never committed; {RESTART}")
        expected = marker["files"].get(path.name)
        if expected is None:
            if path.exists() or os.path.islink(path):
                self._damaged(unit_id, path, "is not among the files its unit committed")
            return path
        if digest:
            self._check_digest(unit_id, path, expected)
        return path

    def _marked(self) -> list[int]:
        return sorted(int(found[1]) for p in self.dir.iterdir() if (found := MARKER.fullmatch(p.name)))

    def _check_unit(self, unit_id: int) -> dict:
        """A committed unit's marker, after checking it names this unit and that every file it lists is
        there with the digest it recorded."""
        path = self.dir / f"u{unit_id:06d}{DONE_SUFFIX}"
        marker = self._read_json(path, f"the unit's done marker is damaged ({{}}); {self._redo(unit_id)}")
        files = marker.get("files")
        if (
            marker.get("unit") != unit_id
            or not isinstance(files, dict)
            or not all(isinstance(n, str) and isinstance(d, str) for n, d in files.items())
            or f"u{unit_id:06d}{OUTCOMES_SUFFIX}" not in files
        ):
            self._damaged(unit_id, path, "is not this unit's done marker")
        for name, digest in sorted(files.items()):
            if Path(name).name != name or not name.startswith(f"u{unit_id:06d}."):
                self._damaged(unit_id, path, f"names a file of another unit ({name!r})")
            self._check_digest(unit_id, self.dir / name, digest)
        return marker

    def _check_digest(self, unit_id: int, path: Path, expected: str) -> None:
        if os.path.islink(path):
            self._damaged(unit_id, path, "is a symbolic link, not a file the unit wrote")
        try:  # never through a link, a FIFO (whose open would wait) or a device (whose read never ends)
            actual = sha256_file(path, follow_links=False)
        except FileNotFoundError:
            self._damaged(unit_id, path, "is missing")
        except OSError as exc:
            self._damaged(unit_id, path, f"is unreadable ({_why(exc)})")
        if actual != expected:
            self._damaged(unit_id, path, "is not the file its unit committed (damaged, or another unit's)")

    def _damaged(self, unit_id: int, path: Path, problem: str) -> NoReturn:
        raise CheckpointError(f"{path} {problem}; {self._redo(unit_id)}")

    def _redo(self, unit_id: int) -> str:
        return f"delete {self.dir}/u{unit_id:06d}.* to redo that unit, or {RESTART}"

    def _read_json(self, path: Path, problem: str) -> dict:
        """A checkpoint JSON object; CheckpointError naming path (problem has a {} for the cause)."""
        try:
            data = _load_json(path)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: {problem.format(_why(exc))}") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"{path}: {problem.format('not a JSON object')}")
        return data

    def _unit_files(self, stem: str) -> list[Path]:
        """A unit's files on disk (a job's own side files too: a rescan's changes and counts), outcomes
        last."""
        names = [
            p
            for p in self.dir.iterdir()
            if p.name.startswith(f"{stem}.") and not p.name.endswith(DONE_SUFFIX) and p.is_file()
        ]
        return sorted(names, key=lambda p: (p.name.endswith(OUTCOMES_SUFFIX), p.name))

    @property
    def complete(self) -> bool:
        """Whether this scan already finished and wrote its reports."""
        return (self.dir / COMPLETE).exists()

    def seal(self) -> None:
        """Drop the merged units and mark the scan complete; the fingerprint stays to guard the reports."""
        self._settled()
        merged = [path for path in self.dir.iterdir() if path.name != FINGERPRINT]
        for path in merged:
            path.unlink()
        with atomic_open(self.dir / COMPLETE, "w") as handle:
            handle.write("complete\n")
        if self.mirror is not None:
            self.mirror.push(self.dir / COMPLETE)
            for path in merged:
                self.mirror.remove(path)


def _settings_named(previous: dict, current: dict) -> str:
    """`settings (fetch.total_timeout: 10.0 -> 20.0, ...)`, or plain `settings` when the checkpoint was
    written before fingerprints kept them by name."""
    before, after = previous.get(SETTINGS_SHOWN), current.get(SETTINGS_SHOWN)
    if not isinstance(before, dict) or not isinstance(after, dict):
        return "settings"
    names = sorted(k for k in before.keys() | after.keys() if before.get(k, "unset") != after.get(k, "unset"))
    shown = [f"{k}: {_setting_text(before, k)} -> {_setting_text(after, k)}" for k in names[:MAX_SHOWN]]
    if len(names) > MAX_SHOWN:
        shown.append(f"{len(names) - MAX_SHOWN} more")
    return f"settings ({'; '.join(shown)})" if shown else "settings"


def _refuse_moved(out: Path, before: object, after: object) -> None:
    """Refuse a resume of hf:// inputs whose revision now names another commit: one scan never mixes two
    commits, and silently finishing at the old commit would report on what the revision no longer names."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return
    for key in sorted(before.keys() & after.keys()):
        old, new = before[key], after[key]
        if old != new:
            raise ResumeError(
                f"{out} holds a scan of {key} at commit {old}, but the revision given now names commit "
                f"{new}: one scan never mixes two commits; give {parse(key).url(old)} to finish the scan "
                f"at {old}, or --restart to scan {new}"
            )


def _setting_text(settings: dict, name: str) -> str:
    return json.dumps(settings[name], ensure_ascii=False) if name in settings else "unset"


def _load_json(path: Path) -> object:
    """A JSON file the scanner wrote in --out, never read through a link, a FIFO or a device (a done marker
    linked to /dev/zero filled memory), nor past MAX_JSON_BYTES."""
    with open_regular(path, follow_links=False) as handle:
        raw = handle.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise ValueError(f"over {MAX_JSON_BYTES:,} bytes")
    return json.loads(raw.decode("utf-8"))


def _why(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__

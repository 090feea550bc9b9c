"""Per-unit committed outputs: a killed scan resumes where it stopped, with no row lost or repeated."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from scanner.errors import ResumeError
from scanner.mirror import Mirror, local_dir
from scanner.reports.files import atomic_open, private_dir, write_json, write_jsonl
from scanner.reports.hashes import write_unit_hashes
from scanner.reports.records import UnitReport, outcomes_table

UNITS_DIR = ".units"
FINGERPRINT = "fingerprint.json"
COMPLETE = "complete"


def open_out(out: str, fingerprint: dict, restart: bool = False) -> tuple[Path, Checkpoint]:
    """The local report directory for --out and its checkpoint; an fsspec URL is written through a local
    staging directory, pulled from the URL first (scanner.mirror)."""
    mirror = Mirror.for_out(out)
    if mirror is not None:
        mirror.pull()
    directory = private_dir(local_dir(out))
    return directory, Checkpoint(directory, fingerprint, restart, mirror)


class Checkpoint:
    """The units directory inside --out: one committed outcomes file per finished unit."""

    def __init__(
        self, out_dir: Path, fingerprint: dict, restart: bool = False, mirror: Mirror | None = None
    ) -> None:
        self.dir = Path(out_dir) / UNITS_DIR
        self.mirror = mirror
        if restart and self.dir.exists():
            shutil.rmtree(self.dir)
        if restart and mirror is not None:
            mirror.remove(self.dir)
        private_dir(self.dir)
        self._adopt(fingerprint)

    def _adopt(self, fingerprint: dict) -> None:
        """Refuse to mix units from a scan of other inputs, lists or settings."""
        path = self.dir / FINGERPRINT
        if path.exists():
            previous = json.loads(path.read_text(encoding="utf-8"))
            if previous != fingerprint:
                changed = sorted(
                    k for k in fingerprint.keys() | previous.keys() if fingerprint.get(k) != previous.get(k)
                )
                raise ResumeError(
                    f"{self.dir.parent} holds a scan with different {', '.join(changed)}; "
                    "use a new --out, or --restart to discard it"
                )
        else:
            write_json(path, fingerprint)
            self._publish([path])

    def done(self) -> set[int]:
        """Ids of units whose outputs were committed."""
        return {int(p.name[1:7]) for p in self.dir.glob("u*.outcomes.parquet")}

    def commit(self, report: UnitReport) -> None:
        """Write a unit's side files first and its outcomes last: the outcomes file is the commit."""
        stem = self.dir / f"u{report.unit_id:06d}"
        for suffix, records in ((".matches.jsonl", report.matches), (".evidence.jsonl", report.evidence)):
            with atomic_open(f"{stem}{suffix}", "w") as handle:
                write_jsonl(handle, records)
        if report.hashes is not None:
            write_unit_hashes(str(stem), report.hashes)
        with atomic_open(f"{stem}.outcomes.parquet") as handle:
            pq.write_table(outcomes_table(report.outcomes), handle)
        self._publish(
            sorted(self.dir.glob(f"{stem.name}.*"), key=lambda p: p.name.endswith(".outcomes.parquet"))
        )

    def _publish(self, paths: list[Path]) -> None:
        """Copy committed files to the output URL in order (a unit's outcomes file last: it is the commit)."""
        if self.mirror is not None:
            for path in paths:
                self.mirror.push(path)

    def outcome_files(self, unit_ids: list[int]) -> Iterator[Path]:
        """Committed outcomes files in unit order."""
        return (self.dir / f"u{i:06d}.outcomes.parquet" for i in sorted(unit_ids))

    def side_files(self, unit_ids: list[int], suffix: str) -> Iterator[Path]:
        """Committed side files (matches, evidence, hash records) in unit order."""
        return (self.dir / f"u{i:06d}{suffix}" for i in sorted(unit_ids))

    @property
    def complete(self) -> bool:
        """Whether this scan already finished and wrote its reports."""
        return (self.dir / COMPLETE).exists()

    def seal(self) -> None:
        """Drop the merged units and mark the scan complete; the fingerprint stays to guard the reports."""
        merged = [path for path in self.dir.iterdir() if path.name != FINGERPRINT]
        for path in merged:
            path.unlink()
        with atomic_open(self.dir / COMPLETE, "w") as handle:
            handle.write("complete\n")
        if self.mirror is not None:
            self.mirror.push(self.dir / COMPLETE)
            for path in merged:
                self.mirror.remove(path)

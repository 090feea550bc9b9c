"""Inputs -> deterministic work units (shard x row span), the same for every runner and every resume."""

from __future__ import annotations

from dataclasses import dataclass, field

from scanner.errors import SourceError
from scanner.sources import Source, SourceOptions, Span, open_source


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """One span of one shard: the unit of scheduling, checkpointing and retry."""

    id: int
    shard: str
    span: Span

    @property
    def rows(self) -> int:
        return self.span.rows

    @property
    def where(self) -> str:
        """The unit as an error names it."""
        return f"unit {self.id} ({self.shard} rows {self.span.start}-{self.span.stop})"


@dataclass(slots=True)
class Plan:
    """The units to run, the opened sources they read from, and the shards skipped as bad."""

    units: list[WorkUnit]
    sources: dict[str, Source]
    skipped: dict[str, str] = field(default_factory=dict)


def plan(paths: list[str], options: SourceOptions, on_bad_shard: str = "fail") -> Plan:
    """Open and validate every shard before any fetch; bad shards stop the plan or are skipped by policy."""
    sources: dict[str, Source] = {}
    skipped: dict[str, str] = {}
    units: list[WorkUnit] = []
    for path in paths:
        try:
            source = open_source(path, options)
            spans = source.spans()
        except SourceError as exc:
            if on_bad_shard != "skip":
                raise
            skipped[path] = str(exc)
            continue
        sources[path] = source
        first = len(units)
        units.extend(WorkUnit(first + i, path, span) for i, span in enumerate(spans))
    return Plan(units, sources, skipped)

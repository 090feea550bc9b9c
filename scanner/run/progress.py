"""A tqdm progress bar on stderr: rows/s, units, live rate, dead and invalid by top reasons, matches."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping

from tqdm import tqdm

from scanner.outcomes import Liveness, Outcome, live_rate, liveness
from scanner.pipeline import Progress
from scanner.reports.records import RowResult
from scanner.run.job import Run


def bar_for(run: Run) -> BarProgress:
    """A bar sized to every unit of the run, starting at the rows already committed by a previous run."""
    total = sum(u.rows for u in run.units)
    done = run.kept_rows  # the "resumed: X of Y rows" a resumed run ends with
    return BarProgress(total, done, len(run.units), len(run.done))


class BarProgress(Progress):
    """Progress shown as one tqdm line, refreshed at most a few times a second. Its clock starts at the first
    row: loading the lists and starting the workers would otherwise make the first rates, and so the ETA,
    several times too slow."""

    def __init__(self, total: int, done: int = 0, units: int = 0, units_done: int = 0) -> None:
        self._bar = tqdm(
            total=total, initial=done, unit="row", file=sys.stderr, dynamic_ncols=True, mininterval=0.5
        )
        self._rows = self._live = self._dead = self._matches = 0
        self._units, self._units_done = units, units_done
        self._reasons: dict[str, Counter[str | None]] = {Outcome.DEAD: Counter(), Outcome.INVALID: Counter()}

    def row_done(self, result: RowResult) -> None:
        self._count(result.outcome, result.reason, liveness(result.outcome, result.reason, result.fetched_at))
        self._advance(1)
        if self._rows % 64 == 0:
            self._show()

    def rows_done(self, counts: Mapping[tuple[str, str | None, Liveness], int]) -> None:
        for (outcome, reason, kind), rows in counts.items():
            self._count(outcome, reason, kind, rows)
        self._advance(sum(counts.values()))
        self._show()

    def _count(self, outcome: str, reason: str | None, kind: Liveness, rows: int = 1) -> None:
        self._rows += rows
        self._live += rows if kind == Liveness.LIVE else 0
        self._dead += rows if kind == Liveness.DEAD else 0
        if outcome in self._reasons:
            self._reasons[outcome][reason] += rows

    def _advance(self, rows: int) -> None:
        if self._rows > rows:
            self._bar.update(rows)
            return
        # The first rows: the clock starts now, and they are its baseline, as if resumed: they were done
        # over a time before it (a worker's batch, up to 0.2 s) that would make the first rate too high.
        self._bar.unpause()
        self._bar.initial += rows
        self._bar.n += rows
        self._bar.last_print_n += rows

    def matched(self, rows: int) -> None:
        self._matches += rows
        self._show()

    def unit_done(self) -> None:
        self._units_done += 1
        self._show()

    def _show(self) -> None:
        units = f"units {self._units_done}/{self._units}, " if self._units else ""
        failed = "".join(f", {reasons_text(o, r)}" for o, r in self._reasons.items() if r)
        self._bar.set_postfix_str(
            f"{units}{live_text(self._live, self._dead)}{failed}, matches {self._matches}", refresh=False
        )

    def close(self) -> None:
        self._show()
        self._bar.close()


def reasons_text(outcome: str, reasons: Counter[str | None], top: int = 2) -> str:
    """`dead 31 (dns_timeout 25, http_404 6)`: the rows of an outcome and its most common reasons."""
    named = [(reason, rows) for reason, rows in reasons.most_common() if reason][:top]
    shown = ", ".join(f"{reason} {rows}" for reason, rows in named)
    return f"{outcome} {sum(reasons.values())} ({shown})"


def live_text(live: int, dead: int) -> str:
    """The bar's live rate: live / requested rows, as summary.json's live_rate; none requested yet: n/a."""
    rate = live_rate(live, dead)
    return f"live {100 * rate:.1f}%" if rate is not None else "live n/a"

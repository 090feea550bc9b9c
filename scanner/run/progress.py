"""A tqdm progress bar on stderr: rows/s, live rate and matches so far."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from tqdm import tqdm

from scanner.outcomes import Liveness, live_rate, liveness
from scanner.pipeline import Progress
from scanner.reports.records import RowResult
from scanner.run.job import Run


def bar_for(run: Run) -> BarProgress:
    """A bar sized to every unit of the run, starting at the rows already committed by a previous run."""
    total = sum(u.rows for u in run.units)
    done = sum(u.rows for u in run.units if u.id in run.done)
    return BarProgress(total, done, len(run.units), len(run.done))


class BarProgress(Progress):
    """Progress shown as one tqdm line, refreshed at most a few times a second."""

    def __init__(self, total: int, done: int = 0, units: int = 0, units_done: int = 0) -> None:
        self._bar = tqdm(
            total=total, initial=done, unit="row", file=sys.stderr, dynamic_ncols=True, mininterval=0.5
        )
        self._rows = self._live = self._dead = self._matches = 0
        self._units, self._units_done = units, units_done

    def row_done(self, result: RowResult) -> None:
        self._rows += 1
        kind = liveness(result.outcome, result.reason, result.fetched_at)
        self._live += kind == Liveness.LIVE
        self._dead += kind == Liveness.DEAD
        self._bar.update(1)
        if self._rows % 64 == 0:
            self._show()

    def rows_done(self, counts: Mapping[tuple[str, Liveness], int]) -> None:
        rows = sum(counts.values())
        self._rows += rows
        self._live += sum(n for (_, kind), n in counts.items() if kind == Liveness.LIVE)
        self._dead += sum(n for (_, kind), n in counts.items() if kind == Liveness.DEAD)
        self._bar.update(rows)
        self._show()

    def matched(self, rows: int) -> None:
        self._matches += rows
        self._show()

    def unit_done(self) -> None:
        self._units_done += 1
        self._show()

    def _show(self) -> None:
        units = f"units {self._units_done}/{self._units}, " if self._units else ""
        self._bar.set_postfix_str(
            f"{units}{live_text(self._live, self._dead)}, matches {self._matches}", refresh=False
        )

    def close(self) -> None:
        self._show()
        self._bar.close()


def live_text(live: int, dead: int) -> str:
    """The bar's live rate: live / requested rows, as summary.json's live_rate; none requested yet: n/a."""
    rate = live_rate(live, dead)
    return f"live {100 * rate:.1f}%" if rate is not None else "live n/a"

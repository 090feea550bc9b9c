"""A tqdm progress bar on stderr: rows/s, live rate and matches so far."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from tqdm import tqdm

from scanner.outcomes import LIVE, Outcome
from scanner.pipeline import Progress
from scanner.run.scan import Prepared


def bar_for(prepared: Prepared) -> BarProgress:
    """A bar sized to the whole plan, starting at the rows already committed by a previous run."""
    done = sum(u.span.rows for u in prepared.plan.units if u.id in prepared.done)
    return BarProgress(prepared.plan.total_rows, done, len(prepared.plan.units), len(prepared.done))


class BarProgress(Progress):
    """Progress shown as one tqdm line, refreshed at most a few times a second."""

    def __init__(self, total: int, done: int = 0, units: int = 0, units_done: int = 0) -> None:
        self._bar = tqdm(
            total=total, initial=done, unit="row", file=sys.stderr, dynamic_ncols=True, mininterval=0.5
        )
        self._rows = self._live = self._matches = 0
        self._units, self._units_done = units, units_done

    def row_done(self, outcome: Outcome) -> None:
        self._rows += 1
        self._live += outcome in LIVE
        self._bar.update(1)
        if self._rows % 64 == 0:
            self._show()

    def rows_done(self, outcomes: Mapping[Outcome, int]) -> None:
        rows = sum(outcomes.values())
        self._rows += rows
        self._live += sum(n for outcome, n in outcomes.items() if outcome in LIVE)
        self._bar.update(rows)
        self._show()

    def matched(self, rows: int) -> None:
        self._matches += rows
        self._show()

    def unit_done(self) -> None:
        self._units_done += 1
        self._show()

    def _show(self) -> None:
        live = 100.0 * self._live / self._rows if self._rows else 0.0
        units = f"units {self._units_done}/{self._units}, " if self._units else ""
        self._bar.set_postfix_str(f"{units}live {live:.1f}%, matches {self._matches}", refresh=False)

    def close(self) -> None:
        self._show()
        self._bar.close()

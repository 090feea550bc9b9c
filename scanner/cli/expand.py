"""Command line of `scanner expand`: candidates near the seed rows of a finished scan (see main.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from scanner.cli import outputs
from scanner.cli.common import configured
from scanner.cli.signing import stale_signature_note
from scanner.exitcodes import ExitCode
from scanner.outcomes import SeedSource


def _expand_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("dir", help="a finished scan's report directory holding hashes.parquet (--keep-hashes)")
    sub.add_argument(
        "--from",
        dest="source",
        choices=[str(s) for s in SeedSource],
        default=SeedSource.MATCH.value,
        help="seed rows: every matched row, or the rows a reviewer confirmed (verdicts.jsonl)",
    )
    sub.add_argument("--config", help="TOML config file (its [match] thresholds apply)")
    for name in ("pdq", "phash", "dhash"):
        configured(
            sub.add_argument(f"--{name}-threshold", type=int, help=f"{name} Hamming distance to a seed"),
            f"match.{name}_threshold",
        )
    configured(
        sub.add_argument("--pdq-min-quality", type=int, help="leave out PDQ hashes below this quality"),
        "match.pdq_min_quality",
    )


def cmd_expand(args: argparse.Namespace) -> int:
    from scanner.audits.expand import ExpandSettings, expand
    from scanner.config import load_config
    from scanner.reports.html import write_html_report
    from scanner.reports.writer import refresh_digests
    from scanner.run.reportlock import report_lock  # start-up cost: loaded when the command runs

    outputs.check_dir(args.dir, "DIR", must_exist=True)
    names = ("pdq_threshold", "phash_threshold", "dhash_threshold", "pdq_min_quality")
    config = load_config(args.config, {f"match.{n}": getattr(args, n) for n in names})
    match = config.match
    thresholds = {"pdq": match.pdq_threshold, "phash": match.phash_threshold, "dhash": match.dhash_threshold}
    settings = ExpandSettings(SeedSource(args.source), thresholds, match.pdq_min_quality)
    with report_lock(args.dir, "expand"):  # writes expanded.jsonl, report.html and manifest.json there
        found = expand(args.dir, settings)
        page = write_html_report(args.dir)
        refresh_digests(args.dir, [found.path.name, page.name])
    kinds = ", ".join(f"{name} {found.by_hash_type.get(name, 0)}" for name in thresholds)
    print(f"seeds: {found.seeds} rows ({args.source})" + _missing(found.missing_seeds))
    print(f"candidates: {found.rows} rows near a seed ({kinds}); not matches until reviewed")
    print(f"expanded: {found.path}")
    if note := stale_signature_note(args.dir):
        print(note)
    return ExitCode.OK


def _missing(count: int) -> str:
    return f"; {count} not found in hashes.parquet (or their URL differs)" if count else ""


EXPAND_COMMANDS: list[tuple[str, str, Callable, Callable]] = [
    (
        "expand",
        "find the rows near a scan's matched or confirmed rows by stored hash: candidates for review",
        cmd_expand,
        _expand_args,
    ),
]
"""(name, help, handler, argument builder) of each command, registered by main.py."""

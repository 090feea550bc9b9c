"""Command line of the review loop: `scanner review import|list|negative`, and the scan flags that set
matches aside for review (--negative-list, --hold-floods). See docs/review.md."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from scanner.cli import outputs
from scanner.cli.common import terminal_line
from scanner.cli.signing import stale_signature_note
from scanner.errors import ConfigError
from scanner.exitcodes import ExitCode
from scanner.outcomes import VERDICTS

REVIEW_FLAGS: list[tuple[str, str, dict]] = [
    (
        "--negative-list",
        "review.negative_lists",
        {
            "action": "append",
            "metavar": "PATH",
            "help": "a list of false positives' own hashes (scanner review negative): a row matching a list "
            "and one of these is suppressed, not match; repeatable",
        },
    ),
    (
        "--hold-floods",
        "review.hold_floods",
        {
            "action": "store_true",
            "default": None,
            "help": "rows whose every match is a flood entry (one that matches too many rows): held",
        },
    ),
]
"""Scan flags (appended to main.SCAN_FLAGS), and rematch's."""


def verdict_names(text: str) -> tuple[str, ...]:
    """--verdict's comma-separated verdicts, checked."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(set(names) - set(VERDICTS))
    if unknown:
        raise ConfigError(f"--verdict takes {', '.join(VERDICTS)}; not {', '.join(unknown)}")
    return names


def _review_args(sub: argparse.ArgumentParser) -> None:
    actions = sub.add_subparsers(title="actions", metavar="ACTION", dest="review_action", required=True)
    imported = actions.add_parser(
        "import", help="record the verdicts of a CSV or JSONL file beside a scan's reports"
    )
    imported.add_argument("dir", help="a finished scan's report directory (its --out)")
    imported.add_argument(
        "verdicts", metavar="VERDICTS", help="CSV or JSONL: shard,row | url_sha256 | key, verdict, note"
    )
    imported.add_argument("--operator", required=True, help="who records these verdicts (kept with each)")
    imported.set_defaults(review_handler=cmd_import)
    listed = actions.add_parser("list", help="print each matched row's latest verdict as a JSON line")
    listed.add_argument("dir", help="a finished scan's report directory (its --out)")
    listed.set_defaults(review_handler=cmd_list)
    negative = actions.add_parser(
        "negative", help="write the false positives' own hashes as a negative list (--negative-list)"
    )
    negative.add_argument("dir", help="a finished scan's report directory (its --out)")
    negative.add_argument("--out", required=True, help="the negative list to write (canonical CSV), 0600")
    negative.set_defaults(review_handler=cmd_negative)


def cmd_review(args: argparse.Namespace) -> int:
    return args.review_handler(args)


def cmd_import(args: argparse.Namespace) -> int:
    from scanner.reports.html import write_html_report
    from scanner.reports.verdicts import import_verdicts
    from scanner.reports.writer import refresh_digests
    from scanner.run.reportlock import report_lock  # start-up cost: loaded when the command runs

    outputs.check_dir(args.dir, "DIR", must_exist=True)
    outputs.guard_writes(args.dir)
    with report_lock(args.dir, "review"):  # verdicts.jsonl, report.html and manifest.json: one writer
        result = import_verdicts(args.dir, args.verdicts, args.operator)
        path = write_html_report(args.dir)
        refresh_digests(args.dir, [path.name])
    for problem in result.problems:
        print(f"refused: {problem}")
    print(
        f"{result.recorded} verdicts recorded, {result.refused} lines refused: "
        f"{Path(args.dir) / 'verdicts.jsonl'}"
    )
    print(f"report: {path}")
    if note := stale_signature_note(args.dir):
        print(note)
    return ExitCode.OK if not result.refused else ExitCode.ERROR


def cmd_list(args: argparse.Namespace) -> int:
    from scanner.reports.verdicts import Verdicts, agrees, matched_rows

    outputs.check_dir(args.dir, "DIR", must_exist=True)
    rows, verdicts = matched_rows(args.dir), Verdicts.load(args.dir)
    mismatched = 0
    for where, record in sorted(verdicts.latest.items()):
        row = rows.get(where)
        applies = row is not None and agrees(record, row)
        mismatched += not applies
        shown = {k: record.get(k) for k in ("shard", "row", "verdict", "operator", "recorded_at", "note")}
        print(json.dumps({**shown, "applies": applies}, ensure_ascii=True))
    counts = Counter(verdicts.of_row(row) for row in rows.values())
    shown = ", ".join(f"{name} {counts.get(name, 0)}" for name in VERDICTS)
    print(f"matched rows: {len(rows)} ({shown}); verdicts not applied (another row): {mismatched}")
    return ExitCode.OK


def cmd_negative(args: argparse.Namespace) -> int:
    from scanner.reports.negative import write_negative_list

    outputs.check_dir(args.dir, "DIR", must_exist=True)
    outputs.check_file(args.out, "--out")
    _load_scan_plugins(Path(args.dir))
    written = write_negative_list(args.dir, args.out)
    print(f"{written.entries} negative entries from {written.rows} false-positive rows: {args.out}")
    if written.without_hash:
        print(
            f"{written.without_hash} false-positive rows had no stored hash (a URL match, or an older scan)"
        )
    return ExitCode.OK


def _load_scan_plugins(out: Path) -> None:
    """The scan's own plug-ins, registered: a false positive matched by a plug-in's hash type is written as
    that type's entry, not counted as a row without a stored hash."""
    from scanner.audits.stored import StoredScan
    from scanner.plugins import PluginConfig, load_plugins

    saved = (StoredScan.read_manifest(out).get("config") or {}).get("plugins") or {}
    kinds = {key: tuple(saved.get(key) or ()) for key in ("signal_types", "tx_extensions")}
    try:
        load_plugins(PluginConfig(**kinds))
    except ConfigError as exc:
        # Its false positives are counted as without a stored hash; the rest are written.
        print(
            terminal_line(f"scanner: warning: the scan's plug-ins are not loaded here ({exc})"),
            file=sys.stderr,
        )


REVIEW_COMMANDS: list[tuple[str, str, Callable, Callable]] = [
    (
        "review",
        "record verdicts on matches, list them, turn false positives into a negative list",
        cmd_review,
        _review_args,
    ),
]
"""(name, help, handler, argument builder) of each command, registered by main.py."""

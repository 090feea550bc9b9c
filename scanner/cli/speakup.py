"""What a finished scan, rematch or rescan tells beyond its reports, for runs nobody watches (cron, timers):
--fail-on, an exit status of its own (ExitCode.FOUND) when the run found what the operator asked to hear
of, and --notify, one JSON event to the operator's receiver (scanner.cli.notify).

New matches are the rows that match now and did not in the previous run: for a rescan, changes.jsonl's
`new_match` and `match_back` rows; for a scan, rows absent from `--previous DIR`'s matches.jsonl (every
match when no previous run is named); for a rematch, rows absent from the matches.jsonl beside the stored
records it read. Rows are compared by shard, row and URL.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from scanner.cli import outputs
from scanner.cli.common import terminal_line
from scanner.cli.notify import check_ca_file, check_notify_url, post_event, shown
from scanner.errors import InputError
from scanner.exitcodes import ExitCode
from scanner.outcomes import FailOn, Outcome
from scanner.reports import jsonl

MATCHES = "matches.jsonl"
NEW_KINDS = ("new_match", "match_back")  # changes.jsonl kinds of a row matched now and not in the last run
MAX_EVENT_URLS = 1000  # matched URLs an event carries at most (--notify-urls)
NOTIFY_FAILED = (
    "scanner: warning: --notify to {url} failed: {why}; the run itself finished and its reports stand"
)


def add_speakup_args(sub: argparse.ArgumentParser, previous: bool = False) -> None:
    """--fail-on and --notify (and, for a scan, --previous)."""
    sub.add_argument(
        "--fail-on",
        choices=[str(f) for f in FailOn],
        default=FailOn.NONE.value,
        help=f"exit {int(ExitCode.FOUND)} (not an error) when the run finds a new match (not in the previous "
        "run), any match, or a changed row",
    )
    if previous:
        sub.add_argument(
            "--previous",
            dest="previous_scan",
            metavar="DIR",
            help="an earlier scan's reports: its matches are not new (--fail-on new-match, --notify)",
        )
    sub.add_argument("--notify", metavar="URL", help="POST one JSON event there when the run ends")
    sub.add_argument(
        "--notify-urls",
        action="store_true",
        help="put the new matches' URLs in the event (left out otherwise)",
    )
    sub.add_argument("--notify-timeout", type=float, default=10.0, help="seconds per attempt (one retry)")
    sub.add_argument("--notify-ca", metavar="PEM", help="CA certificates the receiver's TLS is verified with")


def check_speakup_args(args: argparse.Namespace) -> None:
    """Refuse before the run what would only fail after it: a --previous that is not a finished scan, a
    --notify URL that is not http(s), a timeout out of range, a CA file that is not one."""
    previous = getattr(args, "previous_scan", None)
    if previous:
        outputs.check_report_files(previous, "--previous")
        if not (Path(previous) / MATCHES).is_file():
            raise InputError(previous, f"--previous must be a finished scan's reports (no {MATCHES} there)")
    if args.notify:
        check_notify_url(args.notify)
        if not 0 < args.notify_timeout <= 600:
            raise InputError("--notify-timeout", "must be more than 0 and at most 600 seconds")
        if args.notify_ca and not Path(args.notify_ca).is_file():
            raise InputError(args.notify_ca, "--notify-ca must be a file of PEM certificates")
        if args.notify_ca:
            check_ca_file(args.notify_ca)


@dataclass(slots=True)
class News:
    """What a finished run found that was not there before."""

    rows: int = 0  # rows newly matched
    by_list: Counter = field(default_factory=Counter)  # their match records per list
    by_category: Counter = field(default_factory=Counter)
    urls: list[str] = field(default_factory=list)  # the first MAX_EVENT_URLS of their URLs


def speak_up(args: argparse.Namespace, command: str, result, previous: Iterable[Path] = ()) -> ExitCode:
    """After a run: the notice (a failed one is a warning), then the exit status --fail-on asks for."""
    out = Path(result.out)
    news = new_matches(out, command, list(previous))
    fail_on = FailOn(args.fail_on)
    found = found_what(fail_on, result.summary, news)
    if args.notify:
        event = notify_event(command, out, result.summary, news, fail_on, found, args.notify_urls)
        why = post_event(args.notify, event, args.notify_timeout, args.notify_ca)
        if why is not None:
            why = why.replace(args.notify, shown(args.notify))
            print(terminal_line(NOTIFY_FAILED.format(url=shown(args.notify), why=why)), file=sys.stderr)
    if not found:
        return ExitCode.OK
    print(f"--fail-on {fail_on}: found (exit status {int(ExitCode.FOUND)}); new matched rows: {news.rows}")
    return ExitCode.FOUND


def found_what(fail_on: FailOn, summary: dict, news: News) -> bool:
    """Whether the run found what --fail-on names."""
    if fail_on == FailOn.NEW_MATCH:
        return news.rows > 0
    if fail_on == FailOn.MATCH:  # a held row matched too: set aside for review, still to be told
        return summary["matches"]["rows"] > 0 or summary["outcomes"].get(Outcome.HELD, 0) > 0
    if fail_on == FailOn.CHANGED:
        changes = summary.get("changes") or {}
        return summary["outcomes"].get(Outcome.CHANGED, 0) > 0 or changes.get("content_changed", 0) > 0
    return False


def new_matches(out: Path, command: str, previous: list[Path]) -> News:
    """The rows matched in out and not in the previous run, with their match records counted."""
    if command == "rescan":
        changes = out / "changes.jsonl"
        rows = {_row(c) for c in _records(changes) if c.get("change") in NEW_KINDS}
        return _news(r for r in _records(out / MATCHES) if _row(r) in rows)
    before = {_row(r) for path in previous for r in _records(path / MATCHES)}
    return _news(r for r in _records(out / MATCHES) if _row(r) not in before)


def _news(records: Iterable[dict]) -> News:
    news = News()
    seen: set[tuple] = set()
    for record in records:
        news.by_list[str(record.get("list"))] += 1
        news.by_category[str(record.get("category"))] += 1
        if _row(record) not in seen:
            seen.add(_row(record))
            if record.get("url") and len(news.urls) < MAX_EVENT_URLS:
                news.urls.append(record["url"])
    news.rows = len(seen)
    return news


def _records(path: Path) -> Iterable[dict]:
    return jsonl.read_records(path) if path.is_file() else ()


def _row(record: dict) -> tuple:
    return (record.get("shard"), record.get("row"), record.get("url"))


def notify_event(
    command: str, out: Path, summary: dict, news: News, fail_on: FailOn, found: bool, with_urls: bool
) -> dict:
    """The event: counts, new matches by list and category, where the reports are; matched URLs only when
    asked (--notify-urls)."""
    event = {
        "event": "scanner.run_finished",
        "command": command,
        "out": str(out.resolve()),
        "report": str((out / "report.html").resolve()),
        "finished_at": summary.get("finished_at"),
        "rows": summary.get("rows"),
        "outcomes": summary.get("outcomes"),
        "live_rate": summary.get("live_rate"),
        "matches": {"rows": summary["matches"]["rows"], "total": summary["matches"]["total"]},
        "new_matches": {
            "rows": news.rows,
            "by_list": dict(news.by_list),
            "by_category": dict(news.by_category),
        },
        "fail_on": str(fail_on),
        "found": found,
    }
    if "changes" in summary:
        event["changes"] = {k: v for k, v in summary["changes"].items() if k != "previous"}
    if with_urls:
        event["new_matches"]["urls"] = news.urls
    return event


def rematch_previous(hashes: Iterable[str]) -> list[Path]:
    """The report directories of the stored records a rematch read (a hashes.parquet file: its folder)."""
    return [Path(h) if Path(h).is_dir() else Path(h).parent for h in hashes]

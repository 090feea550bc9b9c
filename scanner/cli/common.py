"""What the command modules share (main.py, audit.py, demo.py): a run under the write guard, on the runner
named by run.runner, and the one-screen summary. It imports no command module, so they all import it."""

from __future__ import annotations

import argparse

from scanner.cli import outputs
from scanner.errors import ConfigError
from scanner.outcomes import REQUIRED_OUTCOMES, Liveness
from scanner.reports import safetext

MAX_ERROR_LINE = 2_000  # characters; a hostile argument or file name must not flood the terminal


def run_with_guard(config, restart: bool, quiet: bool, job=None):
    """Run a scan of `config` (or the job given: a rescan) with the write guard on: nothing may be written
    outside the report directory (and, with Ray, outside Ray's own session directory, which it fills while
    joining the cluster, before the guard)."""
    from scanner.run.mirror import local_dir  # start-up cost: a run's modules load when a run runs
    from scanner.run.progress import bar_for

    runner = runner_for(config)
    outputs.check_dir(local_dir(config.out))  # before joining a Ray cluster, which takes a while
    allowed = runner.connect(config.run.ray_address) if config.run.runner == "ray" else []
    outputs.guard_writes(config.out, allowed)
    show = not quiet and config.run.progress
    bar = bar_for if show else None
    return runner.scan(config, restart, bar) if job is None else runner.run(job, restart, bar)


def runner_for(config):
    """The runner module named by run.runner: local, or ray (an optional extra)."""
    if config.run.runner == "local":
        from scanner.runners import local  # start-up cost

        return local
    if config.run.runner == "ray":
        from scanner.runners import ray  # an optional extra (pip install .[ray])

        return ray
    raise ConfigError(f"run.runner must be local or ray, not {config.run.runner!r}")


def print_summary(result) -> None:
    """One screen: what this run did (resumed, or nothing: complete before), where the reports are, the
    outcome counts and the matches by list."""
    s = result.summary
    note = run_line(result)
    if note is not None:
        print(note)
    print(f"scanned {s['rows']} rows in {s['duration_seconds']:.1f}s ({s['rows_per_second']:.0f} rows/s)")
    shown = {k: v for k, v in s["outcomes"].items() if v or k in REQUIRED_OUTCOMES}
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    print(live_line(s))
    matches = s["matches"]
    print(f"matches: {matches['total']} on {matches['rows']} rows")
    for name, counts in matches["by_list"].items():
        print(f"  {name}: {counts['matches']} matches on {counts.get('rows', 0)} rows")
    for flood in s.get("floods", []):
        print(flood_line(flood))
    for line in skipped_entry_lines(s.get("skipped_list_entries", {})):
        print(f"list entries skipped: {line}")
    if s["skipped_shards"]:
        print(f"skipped shards: {len(s['skipped_shards'])} (see summary.json)")
    if s.get("changed_looks"):
        print(changed_line(s["changed_looks"]))
    print(f"reports: {result.out}")


def flood_line(flood: dict) -> str:
    """A flood entry in words: a likely bad list entry, and whether its rows were held."""
    held = "; rows it alone matched are held (held.jsonl)"
    held = held if flood["hold"] else "; --hold-floods holds such rows"
    return f"likely bad list entry: {flood['list']} {flood['entry_id']} matched {flood['rows']} rows{held}"


def skipped_entry_lines(skipped: dict) -> list[str]:
    """One line per list and hash type whose entries were left out (summary.json skipped_list_entries)."""
    return [
        f"{name}: {info['entries']} {type_name} entries skipped ({info['why']})"
        for name, types in skipped.items()
        for type_name, info in types.items()
    ]


def changed_line(looks: dict) -> str:
    """The changed rows and how many of them still look like the dataset's picture."""
    if not looks["compared"]:
        return f"changed: {looks['rows']} rows (no perceptual hash in the dataset to compare them with)"
    return (
        f"changed: {looks['rows']} rows, {looks['within_threshold']} of {looks['compared']} compared "
        "near-identical to the dataset's perceptual hash (other bytes, the same picture)"
    )


def run_line(result) -> str | None:
    """What this run did, unless it simply ran: finished earlier (the summary that follows is that run's),
    or resumed, keeping the rows earlier runs committed."""
    if result.earlier:
        return f"already complete: {result.out} (use --restart to scan again); the earlier result:"
    if result.kept_rows:
        return f"resumed: {result.kept_rows:,} of {result.summary['rows']:,} rows already done"
    return None


def live_line(summary: dict) -> str:
    """The live rate in words, with the counts behind it (summary.json `liveness`; older files lack them)."""
    rate, counts = summary["live_rate"], summary.get("liveness")
    if counts is None:
        return "live rate: not measured" if rate is None else f"live rate: {100 * rate:.1f}%"
    live, dead, apart = (counts[k] for k in Liveness)
    apart_text = f"; {apart} rows not requested (blocked, screened, no usable URL, local or --no-fetch)"
    if rate is None:
        return f"live rate: not measured, no URL was requested{apart_text}"
    return f"live rate: {100 * rate:.1f}% ({live} of {live + dead} requested URLs answered){apart_text}"


def terminal_line(line: str) -> str:
    """One line as a person reads it: hidden characters (bidi controls, line breaks, zero-width) shown as
    <U+XXXX> tokens, so a planted path or URL cannot read as something else or break the line; the middle
    of an overlong line cut, saying how much."""
    line = safetext.reveal(line)
    if len(line) <= MAX_ERROR_LINE:
        return line
    half = MAX_ERROR_LINE // 2
    return f"{line[:half]}...[{len(line) - 2 * half:,} characters cut]...{line[-half:]}"


def configured(action: argparse.Action, key: str) -> None:
    """Mark a flag as setting `key` of the config: its help shows that setting's default (Help)."""
    action.config_key = key  # type: ignore[attr-defined]


class Help(argparse.HelpFormatter):
    """Every flag's help ends with its default: a scan setting's from the config dataclasses, read only
    when help is shown (start-up cost), never a copy of it; any other flag's from argparse."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        key = getattr(action, "config_key", None)
        default = config_default(key) if key else action.default
        if (
            "%(default)" in text
            or default is None
            or default is False
            or default in ("", (), [], argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: {str(default).replace('%', '%%')})"


def config_default(key: str) -> object:
    """The default of a config setting by its dotted name (`out`, `fetch.max_bytes`); for the URL and key
    columns, the names tried in order."""
    from scanner.config import ScanConfig  # start-up cost: only when help is shown
    from scanner.sources.base import KEY_COLUMNS, URL_COLUMNS

    columns = {"source.url_col": URL_COLUMNS, "source.key_col": KEY_COLUMNS}
    if key in columns:
        return "the first of " + ", ".join(columns[key])
    value: object = ScanConfig()
    for name in key.split("."):
        value = getattr(value, name)
    return value

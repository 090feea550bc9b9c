"""Command line of the audits that fetch little or nothing: url, rematch, rescan, clean (see main.py)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from scanner.cli.common import configured, print_summary, run_with_guard, terminal_line
from scanner.cli.outputs import guard_writes
from scanner.cli.plugins import PLUGIN_FLAGS, plugin_overrides
from scanner.cli.review import REVIEW_FLAGS
from scanner.cli.speakup import add_speakup_args, check_speakup_args, rematch_previous, speak_up
from scanner.exitcodes import ExitCode
from scanner.outcomes import Outcome


def _url_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("urls", nargs="+", metavar="URL", help="URLs to normalise (nothing is fetched)")


def cmd_url(args: argparse.Namespace) -> int:
    """One JSON line per URL: its normal form, host and digests, as URL lists must hold them."""
    from scanner.urls.normal import normalise  # start-up cost: loaded when the command runs

    status = ExitCode.OK
    for url in args.urls:
        try:
            normal = normalise(url)
        except ValueError as exc:
            print(terminal_line(f"scanner: error: {exc}"), file=sys.stderr)
            status = ExitCode.ERROR
            continue
        digests = {name: value.hex() for name, value in normal.digests().items()}
        print(json.dumps({"url": url, "normalised": normal.text, "host": normal.host, **digests}))
    return status


def _rematch_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "hashes", nargs="+", metavar="HASHES", help="hashes.parquet files, or scans' report directories"
    )
    sub.add_argument(
        "--hashlist",
        action="append",
        default=[],
        metavar="[NAME=][TYPE:]PATH",
        help="a hash list, repeatable (hashlists/README.md)",
    )
    sub.add_argument("--out", required=True, help="report directory (created 0700)")
    sub.add_argument("--config", help="TOML config file (its [match] and [[hashlist]] apply)")
    configured(
        sub.add_argument("--pdq-threshold", type=int, help="PDQ Hamming distance"), "match.pdq_threshold"
    )
    configured(
        sub.add_argument("--pdq-min-quality", type=int, help="ignore PDQ hashes below this quality"),
        "match.pdq_min_quality",
    )
    sub.add_argument(
        "--pdq-dihedral",
        action="store_true",
        default=None,
        help="match the rotated and flipped PDQ hashes a --pdq-dihedral scan stored (refused without them)",
    )
    for flag, key, options in REVIEW_FLAGS:  # --negative-list, --hold-floods: as for scan
        configured(sub.add_argument(flag, **options), key)
    configured(
        sub.add_argument(
            "--omit-entry-field",
            action="append",
            metavar="COLUMN",
            help="a list's column left out of matches (default: none)",
        ),
        "match.omit_entry_fields",
    )
    for flag, key, options in PLUGIN_FLAGS:
        configured(sub.add_argument(flag, **options), key)
    sub.add_argument("--restart", action="store_true", help="discard a previous rematch in --out")
    sub.add_argument("--quiet", action="store_true", help="no summary: only the line naming the reports")
    add_speakup_args(sub)


def cmd_rematch(args: argparse.Namespace) -> int:
    from scanner.audits.rematch import rematch
    from scanner.config import load_config  # start-up cost: loaded when the command runs

    overrides = {
        "out": args.out,
        "hashlist": args.hashlist or None,
        "match.pdq_threshold": args.pdq_threshold,
        "match.pdq_min_quality": args.pdq_min_quality,
        "match.pdq_dihedral": args.pdq_dihedral,
        "review.negative_lists": args.negative_list,
        "review.hold_floods": args.hold_floods,
        "match.omit_entry_fields": args.omit_entry_field,
        **plugin_overrides(args),
    }
    config = load_config(args.config, overrides)
    check_speakup_args(args)
    guard_writes(config.out)
    result = rematch(args.hashes, config, args.restart)
    _print(result, args.quiet, config.out)
    return speak_up(args, "rematch", result, rematch_previous(args.hashes))


PRIVATE_NETWORKS_DROPPED = (
    "scanner: warning: the previous scan allowed private networks and this rescan does not: their rows "
    "will be blocked (give --allow-private-networks again to reach them)"
)


# A scheduled rescan keeps the previous scan's review rules (see rescan.INHERITED): these flags add to them.
RESCAN_REVIEW_FLAGS = [
    (flag, key, {**options, "help": help_text})
    for (flag, key, options), help_text in zip(
        REVIEW_FLAGS,
        (
            "a negative list (scanner review negative) added to the previous scan's; repeatable",
            "hold floods even if the previous scan did not (default: as the previous scan)",
        ),
        strict=True,
    )
]


def _rescan_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "previous", metavar="PREVIOUS_OUT", help="report directory of a scan run with --keep-hashes"
    )
    sub.add_argument("--out", required=True, help="report directory of the rescan (created 0700)")
    sub.add_argument(
        "--hashlist",
        action="append",
        default=[],
        metavar="[NAME=][TYPE:]PATH",
        help="lists to match, repeatable (hashlists/README.md); none given: the previous scan's",
    )
    sub.add_argument(
        "--allow-private-networks",
        action="store_true",
        default=None,
        help="as for scan; never inherited from the previous scan: give it again to reach private addresses",
    )
    sub.add_argument("--timeout", type=float, help="total seconds per URL, redirects included")
    sub.add_argument("--workers", type=int, help="hashing processes, or Ray actors; 0: one per core")
    sub.add_argument("--runner", choices=["local", "ray"], help="run on this machine or on Ray (local)")
    sub.add_argument(
        "--ray-address", help="Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT (default: start one)"
    )
    for flag, _key, options in RESCAN_REVIEW_FLAGS:
        sub.add_argument(flag, **options)
    sub.add_argument("--restart", action="store_true", help="discard a previous rescan in --out")
    sub.add_argument("--quiet", action="store_true", help="no progress bar or summary: only the reports line")
    add_speakup_args(sub)


def cmd_rescan(args: argparse.Namespace) -> int:
    from scanner import procguard
    from scanner.audits.rescan import RescanJob  # start-up cost: loaded when the command runs

    procguard.harden()  # no core dump, not dumpable, before the previous scan's records are read

    overrides = {
        "fetch.allow_private_networks": args.allow_private_networks,
        "fetch.total_timeout": args.timeout,
        "run.workers": args.workers,
        "run.runner": args.runner,
        "run.ray_address": args.ray_address,
        "review.negative_lists": args.negative_list,
        "review.hold_floods": args.hold_floods,
    }
    check_speakup_args(args)
    job = RescanJob(args.previous, args.out, args.hashlist, overrides)
    if job.private_networks_dropped:
        print(PRIVATE_NETWORKS_DROPPED, file=sys.stderr)
    result = run_with_guard(job.config, args.restart, args.quiet, job)
    _print(result, args.quiet, args.out)
    if not args.quiet:
        changes = {k: v for k, v in result.summary["changes"].items() if k != "previous"}
        print("changes: " + ", ".join(f"{name} {count}" for name, count in changes.items()))
    return speak_up(args, "rescan", result)


def _clean_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("shards", nargs="+", metavar="SHARDS", help="the scanned shards (Parquet, JSONL or TXT)")
    sub.add_argument("--report", required=True, help="report directory of the scan that flagged the rows")
    sub.add_argument(
        "--out", required=True, metavar="CLEAN_DIR", help="where the clean shards go (created 0700)"
    )
    sub.add_argument(
        "--drop",
        default=Outcome.MATCH,
        help="outcomes and verdicts to remove, comma-separated (confirmed,unreviewed: keep false positives)",
    )


def cmd_clean(args: argparse.Namespace) -> int:
    from scanner.audits.clean import clean  # start-up cost: loaded when the command runs

    drop = [name.strip() for name in args.drop.split(",") if name.strip()]
    guard_writes(args.out)
    result = clean(args.shards, args.report, args.out, drop)
    for shard in result.shards:
        print(f"{shard.source}: {shard.rows} rows, {shard.removed} removed -> {shard.output}")
    print(f"removed rows ({result.removed}): {result.removed_file}")
    return ExitCode.OK


def _print(result, quiet: bool, out: str | None = None) -> None:
    if quiet:
        print(f"reports: {result.out}")  # the one line --quiet keeps: where to look
    else:
        print_summary(result)
    if out is not None and Path(out) != Path(result.out):  # written through a staging directory
        print(f"published to: {out}")


AUDIT_COMMANDS: list[tuple[str, str, Callable, Callable]] = [
    ("url", "print the normal form and digests of URLs, as URL lists hold them", cmd_url, _url_args),
    (
        "rematch",
        "match stored hash records against new lists, with no network access",
        cmd_rematch,
        _rematch_args,
    ),
    (
        "rescan",
        "re-check a scan: liveness of matches, conditional requests, what changed",
        cmd_rescan,
        _rescan_args,
    ),
    ("clean", "write shards again without the rows a scan flagged, and list them", cmd_clean, _clean_args),
]
"""(name, help, handler, argument builder) of each command, registered by main.py."""

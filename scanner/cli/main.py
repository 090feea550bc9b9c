"""Command line: parse flags, build the config, call a runner, print a one-screen summary."""

from __future__ import annotations

import argparse
import errno
import json
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from scanner import __version__, textmode
from scanner.cli import outputs
from scanner.cli.audit import AUDIT_COMMANDS
from scanner.cli.common import Help, configured, print_summary, run_with_guard, terminal_line
from scanner.cli.expand import EXPAND_COMMANDS
from scanner.cli.plugins import PLUGIN_FLAGS
from scanner.cli.review import REVIEW_COMMANDS, REVIEW_FLAGS, verdict_names
from scanner.cli.signing import SIGNING_COMMANDS, add_verify_args, stale_signature_note, verify_lines
from scanner.cli.speakup import add_speakup_args, check_speakup_args, speak_up
from scanner.crashlog import internal_error_line
from scanner.errors import ScannerError
from scanner.exitcodes import ExitCode
from scanner.regularfile import files_under

DESCRIPTION = """\
Find the images in a dataset that match hash lists of known abusive images, and see which of its URLs
still answer. scanner reads URL lists (Parquet, CSV, TSV, JSONL, TXT) or downloaded shards (WebDataset
tars, Parquet with image bytes, image folders), fetches and hashes every image in memory (MD5, SHA-1,
SHA-256, PDQ, pHash, dHash; no image is ever written to disk), matches them against your hash lists, and
writes reports you can hand on: outcomes.parquet (one outcome per row), matches.jsonl, summary.json and
a self-contained report.html.

Try it offline:  scanner demo
Then:            scanner scan SHARDS... --hashlist LIST --out DIR   (lists: hashlists/README.md)

Exit status: 0 done; 1 an input or setting refused (one line on stderr); 2 a command line that does not
parse (the command's usage is shown); 3 done, and --fail-on found what it names; 70 an internal error;
130 interrupted (run it again to resume)."""

SCAN_FLAGS: list[tuple[str, str, dict]] = [
    ("--url-col", "source.url_col", {"help": "URL column"}),
    (
        "--key-col",
        "source.key_col",
        {"help": "key column carried into reports"},
    ),
    ("--image-col", "source.image_col", {"help": "image-bytes column of Parquet shards (default: detect)"}),
    (
        "--max-member-bytes",
        "source.max_member_bytes",
        {"type": int, "help": "largest image read from a tar, Parquet cell or file, in bytes"},
    ),
    ("--rows-per-unit", "source.rows_per_unit", {"type": int, "help": "rows per resumable work unit"}),
    ("--max-in-flight", "fetch.max_in_flight", {"type": int, "help": "requests in flight overall"}),
    ("--per-host", "fetch.max_per_host", {"type": int, "help": "requests in flight per host"}),
    (
        "--timeout",
        "fetch.total_timeout",
        {"type": float, "help": "total seconds per URL, redirects included"},
    ),
    ("--max-bytes", "fetch.max_bytes", {"type": int, "help": "body cap in bytes; larger bodies are invalid"}),
    ("--contact", "fetch.contact", {"help": "contact URL put in the User-Agent"}),
    ("--client", "fetch.client", {"choices": ["aiohttp", "httpx"], "help": "HTTP client"}),
    ("--pdq-threshold", "match.pdq_threshold", {"type": int, "help": "PDQ Hamming distance that matches"}),
    (
        "--pdq-min-quality",
        "match.pdq_min_quality",
        {"type": int, "help": "ignore PDQ hashes below this quality"},
    ),
    (
        "--decode-timeout",
        "hashing.decode_timeout",
        {"type": float, "help": "CPU seconds to decode one body before its row is decode_timeout"},
    ),
    (
        "--workers",
        "run.workers",
        {"type": int, "help": "hashing processes, or Ray actors; 0: one per core"},
    ),
    (
        "--runner",
        "run.runner",
        {"choices": ["local", "ray"], "help": "run on this machine or on Ray"},
    ),
    (
        "--ray-address",
        "run.ray_address",
        {"help": "Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT; none given: start a local one"},
    ),
    (
        "--on-bad-shard",
        "run.on_bad_shard",
        {"choices": ["fail", "skip"], "help": "stop on a bad shard, or skip it"},
    ),
    (
        "--match-column",
        "audit.match_columns",
        {"action": "append", "metavar": "COLUMN=TYPE", "help": "match a dataset hash column, unfetched"},
    ),
    (
        "--no-fetch",
        "audit.no_fetch",
        {
            "action": "store_true",
            "default": None,
            "help": "fetch nothing: match URL lists and hash columns only (the live rate is not measured)",
        },
    ),
    (
        "--keep-hashes",
        "audit.keep_hashes",
        {"action": "store_true", "default": None, "help": "write hashes.parquet (for rematch and rescan)"},
    ),
    *REVIEW_FLAGS,
    (
        "--omit-entry-field",
        "match.omit_entry_fields",
        {"action": "append", "metavar": "COLUMN", "help": "a list column matches leave out (default: none)"},
    ),
    *PLUGIN_FLAGS,
]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `scanner` command: whatever happens, at most one line on stderr and an ExitCode."""
    if argv is None:  # the command itself, not a caller's process
        textmode.ensure_utf8_mode()
        warnings.showwarning = _warning_line
    textmode.tolerant_streams()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # an unknown flag: the command's own usage, not the top level's (exit 2, ExitCode.USAGE)
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "handler", None):
        parser.print_help()
        return ExitCode.USAGE
    status = _run(args)
    if status != ExitCode.OK:
        outputs.discard_unused()
    return status


def _warning_line(message: Warning | str, *_where: object, file: TextIO | None = None, **_: object) -> None:
    """A warning (a list's repeated hashes, a library's notice) as one line, without the source line that
    Python's default display adds."""
    print(terminal_line(f"scanner: warning: {message}"), file=file or sys.stderr)


def _run(args: argparse.Namespace) -> ExitCode:
    try:
        _check_report_dirs(args)
        return ExitCode(args.handler(args))
    except ScannerError as exc:
        return _fail(f"scanner: error: {exc}", ExitCode.ERROR)
    except KeyboardInterrupt:
        return _fail("scanner: interrupted; run the same command again to resume", ExitCode.INTERRUPTED)
    except OSError as exc:
        if exc.filename is None or args.debug:
            return _internal(exc, args.debug)
        return _fail(f"scanner: error: {os_error_line(exc)}", ExitCode.ERROR)
    except Exception as exc:
        return _internal(exc, args.debug)


def _check_report_dirs(args: argparse.Namespace) -> None:
    """The report directories a command reads (report, export, verify, sign: DIR; rescan: PREVIOUS_OUT;
    clean: --report; rematch: HASHES) hold only regular report files: a FIFO or device is refused up front."""
    for setting, name in (("DIR", "dir"), ("PREVIOUS_OUT", "previous"), ("--report", "report")):
        value = getattr(args, name, None)
        if isinstance(value, str):
            outputs.check_report_files(value, setting)
    for value in getattr(args, "hashes", None) or ():
        if isinstance(value, str):
            outputs.check_report_files(value, "HASHES")


def _internal(exc: BaseException, debug: bool) -> ExitCode:
    """Anything not anticipated: the stack with --debug, else one line and the stack in a private log."""
    if debug:
        traceback.print_exception(exc)
        return ExitCode.INTERNAL
    return _fail(internal_error_line(exc, outputs.report_dir()), ExitCode.INTERNAL)


def _fail(line: str, status: ExitCode) -> ExitCode:
    print(terminal_line(line), file=sys.stderr)
    return status


def os_error_line(exc: OSError) -> str:
    """An OSError the scanner did not wrap, with the file it concerns: the file, the system's reason, and
    for a full disk, a quota or a read-only file system that the same command resumes once there is room."""
    text = f"{exc.filename}: {exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        text += "; make room (or fix the file system), then run the same command again to resume"
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scanner", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"scanner {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="on an internal error, print the stack instead of logging it"
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add(
        commands,
        "scan",
        "scan URL lists or downloaded corpora and match the images against hash lists",
        cmd_scan,
        _scan_args,
    )
    _add(
        commands, "demo", "offline demo: generated images served on 127.0.0.1, scanned", cmd_demo, _demo_args
    )
    _add(
        commands,
        "hash",
        "print the hashes of image files, exactly as a scan computes them",
        cmd_hash,
        _hash_args,
    )
    _add(commands, "report", "write again a scan's self-contained report.html", cmd_report, _report_args)
    _add(commands, "export", "write a referral file of a scan's matched rows", cmd_export, _export_args)
    _add(
        commands,
        "verify",
        "check a scan's files against its manifest and schema (and its signature, with --public-key)",
        cmd_verify,
        add_verify_args,
    )
    for name, help_text, handler, add_args in [
        *AUDIT_COMMANDS,
        *SIGNING_COMMANDS,
        *REVIEW_COMMANDS,
        *EXPAND_COMMANDS,
    ]:
        _add(commands, name, help_text, handler, add_args)
    return parser


def _add(commands, name: str, help_text: str, handler: Callable, add_args: Callable) -> None:
    sub = commands.add_parser(name, help=help_text, description=help_text, formatter_class=Help)
    add_args(sub)
    sub.set_defaults(handler=handler, command_parser=sub)


def _scan_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "inputs", nargs="+", help="shards: Parquet, CSV, TSV, JSONL or TXT files, directories or globs"
    )
    sub.add_argument(
        "--hashlist",
        action="append",
        default=[],
        metavar="[NAME=][TYPE:]PATH",
        help="a hash list to match against, repeatable; specs and formats: hashlists/README.md",
    )
    configured(sub.add_argument("--out", help="report directory, created 0700, relative to here"), "out")
    sub.add_argument("--config", help="TOML config file (flags override it)")
    sub.add_argument(
        "--allow-private-networks",
        action="store_true",
        default=None,
        help="allow URLs that resolve to private, loopback or reserved addresses",
    )
    sub.add_argument(
        "--pdq-dihedral", action="store_true", default=None, help="also match rotations and flips"
    )
    sub.add_argument(
        "--restart", action="store_true", help="discard a previous scan (partial or complete) in --out"
    )
    sub.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar or summary: only the line naming the report directory",
    )
    for flag, key, options in SCAN_FLAGS:
        configured(sub.add_argument(flag, **options), key)
    add_speakup_args(sub, previous=True)


def scan_overrides(args: argparse.Namespace) -> dict:
    """Map parsed flags onto config keys; None means not given."""
    overrides = {key: getattr(args, flag[2:].replace("-", "_")) for flag, key, _ in SCAN_FLAGS}
    overrides.update(
        {
            "inputs": args.inputs,
            "out": args.out,
            "fetch.allow_private_networks": args.allow_private_networks,
            "match.pdq_dihedral": args.pdq_dihedral,
        }
    )
    if args.hashlist:
        overrides["hashlist"] = args.hashlist
    return overrides


def cmd_scan(args: argparse.Namespace) -> int:
    from scanner.config import load_config  # start-up cost: loaded when the command runs

    config = load_config(args.config, scan_overrides(args))
    check_speakup_args(args)
    result = run_with_guard(config, args.restart, args.quiet)
    if args.quiet:
        print(f"reports: {result.out}")  # the one line --quiet keeps: where to look
    else:
        print_summary(result)
    if str(result.out) != config.out:
        print(f"published to: {config.out}")
    previous = [Path(args.previous_scan)] if args.previous_scan else []
    return speak_up(args, "scan", result, previous)


def _demo_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--out", default="reports/demo", help="report directory")
    sub.add_argument("--images", type=int, default=60, help="how many images the demo serves")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_demo(args: argparse.Namespace) -> int:
    from scanner.cli.demo import run_demo  # start-up cost: loaded when the command runs

    result = run_demo(args.out, images=args.images, quiet=args.quiet)
    print_summary(result)
    return ExitCode.OK


def _hash_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "files",
        nargs="+",
        metavar="PATH",
        help="image files, or directories (every file under them, by name)",
    )


def cmd_hash(args: argparse.Namespace) -> int:
    """One JSON line per file; a file that cannot be hashed is one line on stderr and the others go on."""
    from scanner import procguard
    from scanner.hashing import hash_file_record  # start-up cost: loaded when the command runs

    procguard.harden()  # no core dump, not dumpable, before any image file is read
    failed = 0

    def report(line: str) -> None:
        nonlocal failed
        failed += 1
        print(terminal_line(f"scanner: error: {line}"), file=sys.stderr)

    for named in args.files:
        for path in files_under(named, lambda exc: report(os_error_line(exc))):
            try:
                record = hash_file_record(path)
            except ScannerError as exc:
                report(str(exc))
                continue
            print(json.dumps(record, sort_keys=False), flush=True)
    return ExitCode.ERROR if failed else ExitCode.OK


def _dir_arg(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("dir", help="a finished scan's report directory (its --out)")


def _report_args(sub: argparse.ArgumentParser) -> None:
    _dir_arg(sub)
    sub.add_argument("--show-urls", action="store_true", help="list matched URLs (the file may travel far)")


def cmd_report(args: argparse.Namespace) -> int:
    from scanner.reports.html import write_html_report
    from scanner.reports.writer import refresh_digests
    from scanner.run.reportlock import report_lock  # start-up cost: loaded when the command runs

    outputs.check_dir(args.dir, "DIR", must_exist=True)
    with report_lock(args.dir, "report"):  # rewrites report.html and manifest.json: no other writer there
        path = write_html_report(args.dir, show_urls=args.show_urls)
        refresh_digests(args.dir, [path.name])
    print(f"report: {path}")
    if note := stale_signature_note(args.dir):
        print(note)
    return ExitCode.OK


def _export_args(sub: argparse.ArgumentParser) -> None:
    _dir_arg(sub)
    sub.add_argument(
        "--format",
        choices=["csv", "jsonl", "cybertip-draft"],
        default="csv",
        help="file format; cybertip-draft: one draft per confirmed row, never sent (docs/review.md)",
    )
    sub.add_argument(
        "--verdict",
        default="",
        metavar="VERDICT[,VERDICT]",
        help="only rows with these verdicts: confirmed, false_positive, unreviewed (default: all rows)",
    )
    sub.add_argument("--with-captions", action="store_true", help="add each row's caption (Parquet shards)")
    sub.add_argument("--output", help="file to write (default DIR/referrals.csv or .jsonl), created 0600")


def cmd_export(args: argparse.Namespace) -> int:
    from scanner.reports.export import write_referrals
    from scanner.run.reportlock import lock_if_writing_into  # start-up cost: loaded when the command runs

    if args.output:
        outputs.check_file(args.output, "--output")
    else:
        outputs.check_dir(args.dir, "DIR", must_exist=True)
    with lock_if_writing_into(args.dir, args.output or None, "export"):
        path, count = write_referrals(
            args.dir,
            args.format,
            with_captions=args.with_captions,
            output=args.output,
            verdicts=verdict_names(args.verdict),
        )
    print(f"{count} {'drafts' if args.format == 'cybertip-draft' else 'referral rows'}: {path}")
    return ExitCode.OK


def cmd_verify(args: argparse.Namespace) -> int:
    lines, ok = verify_lines(args)
    for line in lines:
        print(line)
    return ExitCode.OK if ok else ExitCode.ERROR

"""The exit status of every scanner command, in one place (scripts and CI branch on them)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a `scanner` command's exit status means."""

    OK = 0  # done; verify: every check passed
    ERROR = 1  # a clear error was printed (bad input, bad setting, full disk, failed check)
    USAGE = 2  # the command line itself is wrong (argparse's own status)
    FOUND = 3  # done, and --fail-on's condition held (a new match, any match, a changed row): not an error
    INTERNAL = 70  # a bug: one line on stderr, the traceback in a log file (sysexits' EX_SOFTWARE)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); the same command resumes

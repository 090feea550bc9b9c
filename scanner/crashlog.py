"""The last resort: an exception nobody anticipated becomes one line on stderr and a private log file.

The log holds the traceback (file names, line numbers, source lines and the exception's message, never a
frame's local variables) with every line cut to LINE_LIMIT characters, so it cannot carry a body. It goes to
the run's report directory when there is one (the only place the write guard lets a scan write), otherwise
to a 0700 directory in the user's cache.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Iterable
from pathlib import Path

from scanner.errors import ScannerError

LINE_LIMIT = 500
LOG_MODE = 0o600
DIR_MODE = 0o700


def cache_log_dir() -> Path:
    """~/.cache/scanner/logs, or under $XDG_CACHE_HOME."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "scanner" / "logs"


def internal_error_line(exc: BaseException, report_dir: Path | None) -> str:
    """Write the log (report_dir first, else the cache) and return the one line the user sees."""
    what = exception_line(exc)
    candidates = [d for d in (report_dir, cache_log_dir()) if d is not None]
    path, problem = write_log(exc, candidates)
    where = f"details in {path}" if path else f"no log written ({problem}); run with --debug to see the stack"
    return f"scanner: internal error: {what}; {where}"


def write_log(exc: BaseException, directories: Iterable[Path]) -> tuple[Path | None, str]:
    """The traceback in a new 0600 file in the first directory that takes it; (path, '') or (None, why)."""
    text = "\n".join(_cut(line) for line in "".join(traceback.format_exception(exc)).splitlines()) + "\n"
    name = f"internal-error-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.log"
    problem = "no directory to write to"
    for directory in directories:
        try:
            return _write_private(directory, name, text), ""
        except (OSError, ScannerError) as error:  # ScannerError: the write guard refused the directory
            problem = f"{directory}: {error}"
    return None, problem


def _write_private(directory: Path, name: str, text: str) -> Path:
    if not directory.is_dir():
        directory.mkdir(mode=DIR_MODE, parents=True)
        os.chmod(directory, DIR_MODE)
    path = directory.absolute() / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, LOG_MODE)
    with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as handle:
        handle.write(text)
    return path


def exception_line(exc: BaseException) -> str:
    """`TypeName: first line of the message`, cut to 200 characters; "(no message)" when it has none (an
    empty message has no first line to index)."""
    return f"{type(exc).__name__}: {_first_line(str(exc))}"


def _first_line(message: str) -> str:
    lines = message.strip().splitlines()
    return _cut(lines[0], 200) if lines else "(no message)"


def _cut(line: str, limit: int = LINE_LIMIT) -> str:
    return line if len(line) <= limit else f"{line[:limit]}... ({len(line) - limit} characters cut)"

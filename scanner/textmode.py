"""The command line speaks UTF-8 whatever the locale, and never fails to print.

Reports are UTF-8, and so are the file names, URLs and keys they hold. In an ASCII locale (LC_ALL=C with
Python's UTF-8 mode off, PYTHONUTF8=0) Python decodes argv and file names as ASCII, so a shard or --out named
`données` arrives as lone surrogates no report can hold, and print() of a non-ASCII URL raises; a Latin-1
locale turns the same names into mojibake silently. The command re-executes itself once in UTF-8 mode
(`-X utf8`: argv, file names, open() and the standard streams all UTF-8; PEP 540), with the same process id.
Whatever the streams' encoding then is (PYTHONIOENCODING=ascii, a pipe), a character they cannot carry is
printed as a backslash escape instead of raising.
"""

from __future__ import annotations

import codecs
import os
import sys


def ensure_utf8_mode() -> None:
    """Re-execute this command in UTF-8 mode when the file system encoding is not UTF-8 (POSIX only: Windows
    file names are Unicode already). Returns when nothing needs doing or the exec fails."""
    if sys.flags.utf8_mode or os.name != "posix" or _is_utf8(sys.getfilesystemencoding()):
        return
    # orig_argv holds the interpreter's own options and `-m scanner` or the script; exec encodes each
    # argument back to the bytes it came from (surrogateescape), so nothing is lost in the round trip.
    command = [sys.executable, "-X", "utf8", *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, command)
    except OSError:
        return


def tolerant_streams() -> None:
    """stdout and stderr escape what their encoding cannot carry (backslashreplace) instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # absent on a replaced stream (tests, pythonw)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"

"""Fail closed on any file write outside the report directory, so image content can never land on disk.

The one exception is numba's cache of compiled kernels (kernelcache.py): only its own files, in its own
directory, and they hold machine code, not data.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from scanner import kernelcache
from scanner.errors import ContentAtRestError

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# Device files (stdout, /dev/null) may be written; these /dev directories are file systems that keep what is
# written after the process exits, so they are refused like any other directory.
FILE_SYSTEMS_IN_DEV = ("/dev/shm/", "/dev/mqueue/")
_allowed: tuple[str, ...] = ()
_installed = False
_refused = 0  # writes refused so far: a plug-in that catches the error is still caught writing


def is_write(mode: object, flags: object) -> bool:
    """Tell whether an audited open() call can create or modify a file."""
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & WRITE_FLAGS)


def is_allowed(path: str) -> bool:
    """Writes may go to the report directory, to device files (stdout, /dev/null) and to numba's kernel
    cache, nowhere else."""
    real = os.path.realpath(path)
    device = real.startswith("/dev/") and not real.startswith(FILE_SYSTEMS_IN_DEV)
    if device or any(real == root or real.startswith(root + os.sep) for root in _allowed):
        return True
    return kernelcache.is_cache_write(real)


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event != "open" or len(args) < 3:
        return
    path, mode, flags = args[0], args[1], args[2]
    if isinstance(path, int) or not is_write(mode, flags):
        return
    name = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    if not is_allowed(name):
        global _refused
        _refused += 1
        raise ContentAtRestError(f"refused to write {name!r}: a scan writes only inside its report directory")


def refused() -> int:
    """How many writes this process's guard has refused, whether or not the writer caught the error."""
    return _refused


def install(allowed_dirs: Iterable[str]) -> None:
    """Install the write guard for this process; a later call replaces the allowed directories."""
    global _allowed, _installed
    _allowed = tuple(os.path.realpath(d) for d in allowed_dirs)
    sys.dont_write_bytecode = True
    if not _installed:
        sys.addaudithook(_audit)
        _installed = True

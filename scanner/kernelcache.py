"""Where numba keeps compiled kernels between runs: one dedicated directory that holds compiled code only.

Compiling the PDQ and hash-list kernels costs a few CPU seconds in every process that uses them; numba's
on-disk cache makes that about half a second after the first run. Its files hold machine code and type
signatures, never data a kernel was called with, so no image content. The write guard (nostore.py) lets a
process write there, and only numba's own cache files.

The directory: $SCANNER_KERNEL_CACHE, else $NUMBA_CACHE_DIR, else $XDG_CACHE_HOME/scanner/kernels
(~/.cache/scanner/kernels). SCANNER_KERNEL_CACHE=off, or a directory that is not private to this user,
turns the cache off: kernels are then compiled in each process, as numba does by default.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from pathlib import Path

DISABLE = "off"
# numba's index and data files, the temporary names it writes them under, and the names tempfile gives
# the probe file numba creates (and removes) to check that the directory is writable.
_CACHE_FILE = re.compile(r"[^/]+\.nb[ic](\.tmp\.[0-9a-f]{16})?|tmp[a-z0-9_]{8}")


@functools.cache
def cache_dir() -> Path | None:
    """The kernel cache directory, created private (0700) on first use; None when caching is off."""
    chosen = os.environ.get("SCANNER_KERNEL_CACHE") or os.environ.get("NUMBA_CACHE_DIR")
    if chosen == DISABLE:
        return None
    if not chosen:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        chosen = os.path.join(base, "scanner", "kernels")
    try:
        os.makedirs(chosen, mode=0o700, exist_ok=True)
        info = os.stat(chosen)
    except OSError:
        return None
    # numba loads what it finds there as code: a directory others can write to must not be used.
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    return Path(os.path.realpath(chosen))


def enabled() -> bool:
    """What a kernel module passes as numba's `cache=`: True after pointing numba (and the worker processes
    this one starts) at the cache directory, False when caching is off."""
    directory = cache_dir()
    if directory is None:
        return False
    import numba

    os.environ["NUMBA_CACHE_DIR"] = str(directory)
    numba.config.CACHE_DIR = str(directory)
    return True


def is_cache_write(real_path: str) -> bool:
    """Whether a write to this resolved path is numba writing its cache: a file of numba's inside the cache
    directory, or a directory there (where numba's writability probe opens an unnamed temporary file)."""
    directory = cache_dir()
    if directory is None:
        return False
    root = str(directory)
    if real_path != root and not real_path.startswith(root + os.sep):
        return False
    return os.path.isdir(real_path) or _CACHE_FILE.fullmatch(os.path.basename(real_path)) is not None

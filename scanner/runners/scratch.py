"""A scan's scratch directory: where its unit workers' hashing templates put their sockets' directories
(runners/hashfork.py), removed with the scan, and by a later scan when this one was killed.

A unit worker that is killed (SIGKILL, the OOM killer, a `kill -9` of the scan, which takes its unit
workers with it) cannot remove its template's socket directory, and multiprocessing would leave one in $TMPDIR
for every such death. Under one directory per scan, the coordinator removes them all when the scan ends; a
coordinator killed too leaves that one directory, which the next scan on the machine removes: it holds an
advisory lock on it while it lives (flock on the directory itself, no file written), so a directory whose lock
is free belongs to no live scan. A sweep removes sockets and directories only: a directory of that name that
holds anything else (a file of the user's own) is left as it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
import tempfile
import time

PREFIX = "scanner-"
_UNNAMED = ".scanner-new-"  # one being made, not yet locked
_NAME = re.compile(r"^(?:scanner-|\.scanner-new-)[a-z0-9_]{8}$")  # what tempfile.mkdtemp adds: 8 characters
UNNAMED_SECONDS = 60.0
# A socket's path is at most 107 bytes (AF_UNIX); multiprocessing's, under the scratch, adds
# "/pymp-XXXXXXXX/listener-XXXXXXXX" (32). Where the scratch would leave too little room, there is none
# (the template's socket goes where it went before).
SOCKET_PATH_MAX = 107
_SOCKET_TAIL = 32


class Scratch:
    """One scan's scratch directory (0700), locked for as long as this object is open."""

    def __init__(self, base: str) -> None:
        sweep(base)
        # Locked before it takes the name a sweep looks for: another scan's sweep never finds it unlocked.
        unnamed = tempfile.mkdtemp(prefix=_UNNAMED, dir=base)
        self._lock: int | None = None
        try:
            self._lock = os.open(unnamed, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            self.path = os.path.join(base, PREFIX + os.path.basename(unnamed).removeprefix(_UNNAMED))
            os.rename(unnamed, self.path)
        except OSError:
            if self._lock is not None:
                os.close(self._lock)
            shutil.rmtree(unnamed, ignore_errors=True)
            raise

    def close(self) -> None:
        """Remove the directory and what the scan's processes left in it, then let its lock go."""
        if self._lock is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock)
        self._lock = None


def open_scratch(base: str | None) -> Scratch | None:
    """A fresh scratch directory under `base`, stale ones there removed first; None where there is to be no
    scratch: no temporary directory is writable, a socket's path would be too long under it, or it
    cannot be made (a file system without flock)."""
    if base is None or len(os.path.join(base, PREFIX + "x" * 8)) + _SOCKET_TAIL > SOCKET_PATH_MAX:
        return None
    try:
        return Scratch(base)
    except OSError:
        return None


def sweep(base: str) -> list[str]:
    """Remove the scratch directories under `base` that are this user's, locked by no live scan and hold
    sockets and directories only; return them."""
    stale: list[str] = []
    with contextlib.suppress(OSError), os.scandir(base) as entries:
        stale = [entry.path for entry in entries if _stale_candidate(entry)]
    return [path for path in stale if _unlocked(path) and _remove_sockets(path)]


def _stale_candidate(entry: os.DirEntry) -> bool:
    """A directory of this user's with a scratch name, or one being made that a killed scan left (unlocked
    for an instant while it lives: only one older than UNNAMED_SECONDS)."""
    if not _NAME.match(entry.name):
        return False
    try:
        status = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    young = entry.name.startswith(_UNNAMED) and time.time() - status.st_mtime < UNNAMED_SECONDS
    return stat.S_ISDIR(status.st_mode) and status.st_uid == os.getuid() and not young


def _unlocked(path: str) -> bool:
    """Whether no process holds the directory's lock (tried without waiting, let go at once)."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(handle)
    return True


def _remove_sockets(path: str) -> bool:
    """Remove a tree of directories and sockets; False, touching nothing, when it holds anything else."""
    sockets, folders = [], []
    try:
        for root, inner, names in os.walk(path, topdown=False):
            if any(os.path.islink(os.path.join(root, name)) for name in inner):
                return False
            for name in names:
                where = os.path.join(root, name)
                if not stat.S_ISSOCK(os.lstat(where).st_mode):
                    return False
                sockets.append(where)
            folders.append(root)
        for where in sockets:
            os.unlink(where)
        for where in folders:
            os.rmdir(where)
    except OSError:  # changed meanwhile, or unreadable: left
        return False
    return True


def temporary_base() -> str | None:
    """The directory tempfile would choose, found without the file tempfile writes there to test it (a write
    outside the report directory, however brief)."""
    names = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")] + ["/tmp", "/var/tmp", "/usr/tmp"]
    for name in filter(None, names):
        if os.path.isdir(name) and os.access(name, os.W_OK | os.X_OK):
            return os.path.abspath(name)
    return None

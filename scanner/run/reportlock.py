"""One command at a time in a report directory: an advisory lock held for a scan's, rematch's, rescan's or
clean's whole life, and while report, sign or export (into the directory) write there.

The lock is flock(2) on a file inside the directory (for an fsspec --out, inside its local staging
directory), so the kernel releases it when the holder dies however it dies: a SIGKILLed scan leaves at most a
stale, unlocked file, which the next command simply takes. The holder writes its pid and command line into
the file, so a second command can say who holds the directory. The file is removed on release while still
locked; whoever opened it in the meantime sees that the name no longer leads to the file it locked and tries
again, so two holders can never lock two different files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

from scanner.errors import OutputError, ReportDirLockedError
from scanner.reports.files import private_dir
from scanner.run.checkpoint import UNITS_DIR
from scanner.run.mirror import LOCK_FILE, local_dir

PARTIAL_SUFFIX = ".partial"
_MAX_HOLDER_BYTES = 64 * 1024
_held: set[str] = set()  # report directories this process holds (a second flock here would refuse itself)


@contextlib.contextmanager
def report_lock(out: str | Path, command: str) -> Iterator[Path]:
    """Hold the lock of out's local report directory (created 0700) while the block runs; yields the
    directory. ReportDirLockedError, at once, when another process holds it; re-entrant in one process."""
    directory = private_dir(local_dir(str(out)))
    key = os.path.realpath(directory)
    if key in _held:  # this process holds it already (a runner locks before starting its workers)
        yield directory
        return
    path = directory / LOCK_FILE
    fd = _acquire(path, command)
    _held.add(key)
    try:
        _remove_stale_partials(directory)
        yield directory
    finally:
        _held.discard(key)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def lock_if_writing_into(
    directory: str | Path, target: str | Path | None, command: str
) -> contextlib.AbstractContextManager[Path]:
    """report_lock(directory) when `target` (a file the command writes; None: its default, inside the
    directory) is in the report directory or below it, links resolved; else a context that holds nothing
    (a command that only reads the reports and writes elsewhere takes no lock)."""
    if target is not None:
        folder = Path(target).absolute().parent.resolve()
        if not folder.is_relative_to(Path(directory).resolve()):
            return contextlib.nullcontext(Path(directory))
    return report_lock(directory, command)


def _acquire(path: Path, command: str) -> int:
    while True:
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise ReportDirLockedError(
                f"{path.parent} is in use by {holder}; wait for it to finish (or stop it), "
                "or use another --out"
            ) from None
        if _same_file(fd, path):
            _write_holder(fd, command)
            return fd
        os.close(fd)  # released and removed by its holder after we opened it: lock the new one


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # ELOOP: a symbolic link planted there (never followed)
        raise OutputError(
            f"{path}: cannot open the report directory's lock file ({exc.strerror}); "
            "remove it if it is a link or not a file, or use another --out"
        ) from exc


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _write_holder(fd: int, command: str) -> None:
    holder = {"pid": os.getpid(), "command": command, "argv": sys.argv}
    # Who holds the lock is only for a second command's message: on a full disk the lock is held all the
    # same, and the command's own first write says what is full and what to do.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("ascii"), 0)


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says (it may not have written it yet)."""
    try:
        holder = json.loads(os.pread(fd, _MAX_HOLDER_BYTES, 0) or b"null")
        pid, argv = int(holder["pid"]), [str(arg) for arg in holder["argv"]]
    except (OSError, ValueError, TypeError, KeyError):
        return "another scanner process"
    shown = shlex.join(argv).encode("ascii", "backslashreplace").decode("ascii")
    return f"another scanner process (pid {pid}: {shown})"


def _remove_stale_partials(directory: Path) -> None:
    """Temporary files a killed process left (only a lock holder writes here, so none is in use)."""
    for folder in (directory, directory / UNITS_DIR):
        if folder.is_symlink():
            continue  # refused by the checkpoint; nothing behind a link is touched
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(folder):
                if (
                    entry.name.startswith(".")
                    and entry.name.endswith(PARTIAL_SUFFIX)
                    and entry.is_file(follow_symlinks=False)
                ):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)

"""Where a command writes: its report directory (--out) or file (--output), checked before any work starts,
and a report directory this run created removed again if the run fails before writing anything.

Each check names the path and what to do in one line; the kernel's own errors (FileExistsError,
NotADirectoryError, FileNotFoundError under /proc) never reach the user.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from scanner.errors import OutputError
from scanner.regularfile import file_kind

KERNEL_FILE_SYSTEMS = ("/proc", "/sys", "/dev")
DIR_MODE = 0o700
_created: list[Path] = []  # the topmost directory each prepare_dir call created, in order
_prepared: list[Path] = []  # every report directory prepared by this process, in order


def check_dir(path: str | Path, setting: str = "--out", must_exist: bool = False) -> Path:
    """Refuse a report directory the command could not write into: a file, a path under a file, a kernel
    file system, a read-only or unwritable place; or, with must_exist, a missing one. Creates nothing."""
    directory = Path(path)
    _refuse_kernel_file_system(directory, setting)
    if os.path.lexists(directory):
        if not directory.is_dir():
            raise OutputError(f"{setting} {path}: {_kind(directory)}, not a directory; give a directory")
        _refuse_unwritable(directory, path, setting)
        return directory
    if must_exist:
        raise OutputError(f"{setting} {path}: no such directory; give a finished scan's report directory")
    _refuse_unwritable(_existing_ancestor(directory, path, setting), path, setting)
    return directory


def check_file(path: str | Path, setting: str = "--output") -> Path:
    """Refuse an output file the command could not write: a directory or special file, one whose folder is
    missing or is a file, a kernel file system, a read-only or unwritable folder."""
    target = Path(path)
    _refuse_kernel_file_system(target, setting)
    if os.path.lexists(target) and (target.is_dir() or not target.is_file()):
        raise OutputError(f"{setting} {path}: {_kind(target)}, not a file; give a file name to write")
    folder = target.absolute().parent
    if not os.path.lexists(folder):
        _existing_ancestor(folder, path, setting)  # a file above it is the clearer thing to say
        raise OutputError(f"{setting} {path}: the folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise OutputError(
            f"{setting} {path}: {folder} is {_kind(folder)}, so nothing can be written under it"
        )
    _refuse_unwritable(folder, path, setting)
    return target


def prepare_dir(path: str | Path, setting: str = "--out") -> Path:
    """Check a report directory, then create it (0700) if missing; remembered so that a failed run can
    remove what it created (discard_unused)."""
    directory = check_dir(path, setting)
    first_new = _first_missing(directory)
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{setting} {path}: cannot create it ({exc.strerror}); choose another path"
        ) from exc
    if first_new is not None:
        _created.append(first_new)
    _prepared.append(directory)
    return directory


def guard_writes(out: str, also: Iterable[str] = ()) -> Path:
    """Prepare out's local report directory (for an fsspec URL, its staging directory), then install the
    write guard: from here on this process writes nothing outside it (and outside `also`)."""
    from scanner import nostore
    from scanner.run.mirror import local_dir  # start-up cost: every command imports this module

    directory = prepare_dir(local_dir(out))
    nostore.install([str(directory), *also])
    return directory


def report_dir() -> Path | None:
    """The report directory this process prepared last, if it still exists."""
    return next((d for d in reversed(_prepared) if d.is_dir()), None)


def discard_unused() -> list[Path]:
    """Remove each directory this run created that holds nothing but directories and empty files (a failed
    start); never one it did not create, never one holding data. Returns what was removed."""
    removed = []
    while _created:
        top = _created.pop()
        if top.is_dir() and not top.is_symlink() and not _holds_data(top):
            shutil.rmtree(top, ignore_errors=True)
            removed.append(top)
    return removed


def _holds_data(directory: Path) -> bool:
    for root, _dirs, files in os.walk(directory):
        for name in files:
            info = os.lstat(os.path.join(root, name))
            if not stat.S_ISREG(info.st_mode) or info.st_size:
                return True
    return False


def _first_missing(directory: Path) -> Path | None:
    missing = None
    for candidate in (directory.absolute(), *directory.absolute().parents):
        if os.path.lexists(candidate):
            return missing
        missing = candidate
    return missing


def _existing_ancestor(directory: Path, path: str | Path, setting: str) -> Path:
    """The nearest ancestor that exists; it must be a directory for anything to be created under it."""
    for ancestor in directory.absolute().parents:
        if os.path.lexists(ancestor):
            if not ancestor.is_dir():
                raise OutputError(
                    f"{setting} {path}: {ancestor} is {_kind(ancestor)}, so nothing can be created under it; "
                    "choose another path"
                )
            return ancestor
    return Path(directory.absolute().anchor)


def _refuse_kernel_file_system(path: Path, setting: str) -> None:
    real = os.path.realpath(path)
    for root in KERNEL_FILE_SYSTEMS:
        if real == root or real.startswith(root + os.sep):
            raise OutputError(
                f"{setting} {path}: {root} is a kernel file system, not storage; choose a directory on disk"
            )


def _refuse_unwritable(directory: Path, path: str | Path, setting: str) -> None:
    if os.access(directory, os.W_OK | os.X_OK):
        return
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    why = "is on a read-only file system" if read_only else "is not writable by this user"
    raise OutputError(f"{setting} {path}: {directory} {why}; choose a writable directory")


# Every file a command reads from a report directory (scanner's own names; a rescan's changes too).
REPORT_FILES = (
    "outcomes.parquet",
    "matches.jsonl",
    "evidence.jsonl",
    "summary.json",
    "manifest.json",
    "manifest.json.sig",
    "hashes.parquet",
    "changes.jsonl",
    "report.html",
    "verdicts.jsonl",
    "held.jsonl",
    "suppressed.jsonl",
)


def check_report_files(directory: str | Path, setting: str = "DIR") -> None:
    """Refuse a report directory whose report files are not regular files, before any is read: a FIFO there
    would hang report, verify or rescan forever, and a link to /dev/zero would be read until memory ran out.
    A directory that is not there (or not a directory) is left to the command's own check."""
    folder = Path(directory)
    if not folder.is_dir():
        return
    for name in REPORT_FILES:
        path = folder / name
        if os.path.lexists(path) and (not os.path.exists(path) or not stat.S_ISREG(os.stat(path).st_mode)):
            kind = file_kind(os.stat(path).st_mode) if os.path.exists(path) else "a broken symbolic link"
            raise OutputError(
                f"{path}: not a regular file ({kind}): {setting} {directory} is not a scan's report directory"
                " as the scanner left it"
            )


def _kind(path: Path) -> str:
    if not os.path.exists(path):
        return "a broken symbolic link"
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a file"
    return "a special file (device, pipe or socket)"

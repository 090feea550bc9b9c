"""Opening local input files safely: only regular files are read, judged on the opened descriptor.

Every file a scan reads that a user or a dataset names (shards, folder images and sidecars, hash lists,
configs, `scanner hash` files) goes through open_regular: a FIFO would block the open forever, and a
device such as /dev/zero, whose stat size is 0, never ends.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

# A FIFO opens at once instead of waiting for a writer; a terminal never becomes ours.
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_SAFE_OPEN = os.O_RDONLY | _NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFileError(OSError):
    """A path that names something other than a regular file (FIFO, device, socket, directory)."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file ({kind})", path)
        self.kind = kind


def file_kind(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "not a file")


def open_regular(path: str | os.PathLike[str], *, follow_links: bool = True) -> BinaryIO:
    """Open a local file for reading only if it is a regular file, judged on the opened descriptor (no race
    between a check and the open). A FIFO would block the open and a device or socket never ends: all are
    NotRegularFileError, before any read. Symlinks are followed (what they point at is what is judged), or
    with follow_links=False are NotRegularFileError themselves (the scanner's own files in --out)."""
    nofollow = 0 if follow_links else getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, _SAFE_OPEN | nofollow)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a Unix socket, or a device with no driver behind it
            raise NotRegularFileError(str(path), "a socket or device") from exc
        if nofollow and exc.errno == errno.ELOOP and os.path.islink(path):
            raise NotRegularFileError(str(path), "a symbolic link") from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(str(path), file_kind(mode))
        # The descriptor stays non-blocking: storage ignores it, and a pseudo-file that is regular by stat
        # but waits on a read (/proc/kmsg, tracefs trace_pipe) is an error, not a scan hung forever.
        raw = _NoWaitFile(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
    return io.BufferedReader(raw)


class _NoWaitFile(io.FileIO):
    """A FileIO whose read that would wait raises BlockingIOError (an OSError) instead of returning None."""

    def readinto(self, buffer: Any) -> int:
        count = super().readinto(buffer)
        if count is None:
            raise BlockingIOError(errno.EAGAIN, "reading it would wait: not a file on storage", self.name)
        return count

    def readall(self) -> bytes:
        data = super().readall()
        if data is None:
            raise BlockingIOError(errno.EAGAIN, "reading it would wait: not a file on storage", self.name)
        return data


def files_under(path: str, on_error: Callable[[OSError], None]) -> Iterator[str]:
    """`path` itself, or every entry under it that is not a directory when it is one, in a stable order (by
    name, depth first). Links to directories are not followed (a link loop would never end); anything else
    is yielded for open_regular to judge, so a FIFO or device in the tree is named, never read. A directory
    that cannot be listed goes to on_error and the walk goes on."""
    if not os.path.isdir(path):
        yield path
        return
    for top, dirs, files in os.walk(path, onerror=on_error):
        dirs.sort()
        linked = [name for name in dirs if os.path.islink(os.path.join(top, name))]
        for name in linked:
            dirs.remove(name)
        yield from (os.path.join(top, name) for name in sorted(files))


def read_capped(handle: BinaryIO, cap: int) -> bytes | None:
    """At most `cap` bytes of an opened regular file, or None when it holds more. The stat size only sizes
    the first read: a file may grow, and /proc files say 0 whatever they hold."""
    size = os.fstat(handle.fileno()).st_size
    if size > cap:
        return None
    body = handle.read(size + 1)
    if len(body) > size:
        body += handle.read(cap + 1 - len(body))
    return None if len(body) > cap else body

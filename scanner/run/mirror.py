"""Reports on object storage (s3://, gs://, memory://, ...): the scan writes its usual report directory in a
private local staging directory and copies every committed file to the URL at once, so the URL holds the
committed units (a resumed scan, on any machine, pulls them back first) and, at the end, the reports."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scanner.errors import ConfigError, OutputError
from scanner.reports.files import private_dir
from scanner.sources.storage import is_remote

PARTIAL = ".partial"
LOCK_FILE = ".scanner.lock"  # the report directory's lock (scanner.run.reportlock)
FILE_SCHEME = "file://"


def local_dir(out: str) -> Path:
    """Where the scan writes: out itself (a file:// URL is a local path), or for any other URL a staging
    directory that is the same on every run."""
    if out.startswith(FILE_SCHEME):
        return Path(out.removeprefix(FILE_SCHEME))
    if not is_remote(out):
        return Path(out)
    name = hashlib.sha256(out.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "scanner-staging" / name


class Mirror:
    """The remote copy of a staging directory; a file appears at the URL whole or not at all."""

    def __init__(self, url: str, local: Path) -> None:
        self.url = url
        self.local = local
        self._fs, self._root = _filesystem(url)

    @classmethod
    def for_out(cls, out: str) -> Mirror | None:
        """A mirror when out is a URL, else None (a local --out is written in place, as always)."""
        return cls(out, local_dir(out)) if is_remote(out) and not out.startswith(FILE_SCHEME) else None

    def pull(self) -> None:
        """Make the staging directory a copy of what the URL holds (the URL is the truth, across machines)."""
        _empty(private_dir(self.local))
        with self._remote("read what is there"):
            if not self._fs.exists(self._root):
                return
            for remote in sorted(self._fs.find(self._root)):
                relative = os.path.relpath(remote, self._root)
                if relative.endswith(PARTIAL):
                    continue
                target = self.local / relative
                private_dir(target.parent)
                self._fs.get_file(remote, str(target))
                os.chmod(target, 0o600)

    @contextlib.contextmanager
    def _remote(self, action: str) -> Iterator[None]:
        """A storage error (unreachable, refused, no such bucket, no permission) named in one line."""
        try:
            yield
        except OSError as exc:
            raise OutputError(
                f"{self.url}: cannot {action} ({exc.strerror or exc}); check the URL, the network and the "
                "credentials, then run the same command again (it resumes from the last unit it wrote there)"
            ) from exc

    def push(self, path: Path) -> None:
        """Copy one staging file to the same place under the URL, whole (copy, then rename)."""
        remote = f"{self._root}/{path.relative_to(self.local).as_posix()}"
        with self._remote(f"write {path.name}"):
            self._fs.makedirs(os.path.dirname(remote), exist_ok=True)
            partial = f"{remote}.{secrets.token_hex(8)}{PARTIAL}"  # unique: never another writer's
            self._fs.put_file(str(path), partial)
            self._fs.mv(partial, remote)

    def push_reports(self) -> None:
        """Copy every report file (the top level of the staging directory)."""
        for path in sorted(self.local.iterdir()):
            if path.is_file() and not path.name.endswith(PARTIAL) and path.name != LOCK_FILE:
                self.push(path)

    def remove(self, path: Path) -> None:
        """Delete the URL's copy of a staging file or directory, if there is one."""
        remote = f"{self._root}/{path.relative_to(self.local).as_posix()}"
        with self._remote(f"remove {path.name}"):
            if self._fs.exists(remote):
                self._fs.rm(remote, recursive=True)


def _empty(directory: Path) -> None:
    """Remove everything in the staging directory but the lock its owner holds there (reportlock.py)."""
    for path in directory.iterdir():
        if path.name == LOCK_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError as exc:
        raise ConfigError(
            f"{url}: install fsspec (and its backend, e.g. s3fs) to write reports there"
        ) from exc
    try:
        filesystem, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{url}: cannot write reports there ({exc})") from exc
    except OSError as exc:  # a file system that connects when made (ftp, sftp): refused, unreachable
        raise OutputError(
            f"{url}: cannot reach it ({exc.strerror or exc}); check the URL and the network, then run the "
            "same command again"
        ) from exc
    return filesystem, root.rstrip("/")

"""The scanner's exception tree: every error a user can cause is a ScannerError with a clear message."""

from __future__ import annotations


class ScannerError(Exception):
    """Base of every error the scanner raises on purpose."""


class ConfigError(ScannerError):
    """A configuration file or flag is invalid."""


class InputError(ScannerError):
    """An input file is unreadable or malformed; the message names the file and, where known, the line."""

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple:
        """Rebuild from the constructor's arguments, so the error survives a trip between processes."""
        return type(self), (self.path, self.message, self.line)


class SourceError(InputError):
    """A dataset shard is malformed (bad Parquet, missing URL column, undecodable text)."""


class HashListError(InputError):
    """A hash list is malformed (bad length, non-hex, unknown type, duplicate id, empty)."""


class ResumeError(ScannerError):
    """An output directory holds a scan of different inputs, lists or settings."""


class ContentAtRestError(ScannerError):
    """Something tried to write a file outside the report directory during a scan."""


class HashingWorkersError(ScannerError):
    """The hashing worker processes die whatever they hash (memory limits, a broken decoder install)."""


class ReportDirLockedError(ScannerError):
    """Another scanner process is writing into the same report directory."""


class CheckpointError(ScannerError):
    """A committed unit or the checkpoint's own files are damaged, missing or not what was committed."""


class OutputError(ScannerError):
    """A report directory (--out) or output file (--output) cannot be written: the message says why."""


class WriteError(ScannerError):
    """Writing a report file failed in the file system (disk full, quota, read-only); the message names the
    file and says that the same command resumes once there is room."""

    def __init__(self, path: str, strerror: str) -> None:
        self.path = path
        self.strerror = strerror
        super().__init__(
            f"cannot write {path}: {strerror}; make room (or fix the file system), then run the same command "
            "again (a scan, rematch or rescan resumes from its last finished unit)"
        )

    def __reduce__(self) -> tuple:
        return type(self), (self.path, self.strerror)

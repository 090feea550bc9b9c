"""The scanner's exception tree: every error a user can cause is a ScannerError with a clear message.

The CLI (`cli/main.py`, `_run`) prints any ScannerError as one line, `scanner: error: <message>`, and exits 1
(`ExitCode.ERROR`); anything else is an internal error (70, the traceback in a private log). Every subclass
in the package is drawn below, each with when it is raised and what the user sees or does. Classes defined
elsewhere name their module: they are per-row failures kept as results, never shown as errors.
tests/test_errors.py checks this drawing against the real class hierarchy: a new error class goes here.

    ScannerError: raised on purpose: one line `scanner: error: ...`, exit 1 (also a Ray unit's last failure)
        ConfigError: a setting (TOML, flag, --hashlist spec, fetch.*) is invalid; the line names it: fix it
        InputError: an input is unreadable or malformed: `path[:line]: message`; fix or replace that file
            SourceError: a dataset shard is malformed (bad Parquet, no URL column, undecodable text)
            HashListError: a hash list entry is malformed (length, hex, type, duplicate id), or none at all
        ResumeError: --out holds a scan of other inputs, lists or settings: use another --out, or --restart
        ContentAtRestError: nostore refused a write outside the report directory: the scan stops; report it
        HashingWorkersError: hashing workers die whatever they hash (memory limit, broken decoder install)
        ReportDirLockedError: another scanner writes into this --out; the line names its pid and command
        CheckpointError: a committed unit's file is damaged or missing: delete that unit's files, or --restart
        OutputError: --out or --output cannot be made or used (a file, not empty, unreachable): says why
        WriteError: the file system refused a report write (disk full, quota): make room, run again (resumes)
        KeyFileError: keygen, sign, verify --public-key: a key file is unusable (not Ed25519 PEM, too open)
        SignatureError: verify --public-key prints `FAILED: <why>` (missing, other key, manifest changed)
        DecodeError (hashing/decode.py): a body is no usable image: the row is `invalid`, its reason kept
            PluginError (hashing/hashers.py): a signal-type plug-in failed on a body: `invalid`, its reason
        FetchFailure (fetch/base.py): a URL gave no usable response: the row is dead, invalid or blocked
"""

from __future__ import annotations

from pathlib import Path


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


class KeyFileError(ScannerError):
    """A key file is missing, unreadable, not PEM, not Ed25519, too open, or the wrong half of the pair."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(f"{path}: {message}")


class SignatureError(ScannerError):
    """A report's signature is missing, malformed, by another key, or does not match its manifest."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(f"{path}: {message}")

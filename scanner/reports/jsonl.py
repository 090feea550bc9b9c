"""JSON as the reports hold it: UTF-8, one object a line in JSON Lines files, lines split on "\\n" only.

Report strings come from hostile inputs (URLs, keys, member and shard names, list entries, header values).
They stay readable UTF-8, but every character a reader or a terminal could take for something else is
written as a \\uXXXX escape: every character safetext calls hidden, the one rule the exports and report.html
follow too (safetext.is_hidden): what str.splitlines() splits on (\\x0b \\x0c \\x1c-\\x1e \\x85 U+2028
U+2029), the other C0 and C1 controls and DEL, bidi controls, zero-width and other format characters (the
byte order mark, tag characters), spaces other than U+0020, invisible fillers, and lone surrogates (no UTF-8
can carry them). json.loads reads the escapes back to the same strings, so values are unchanged, and files
written before this (raw separators, raw format characters) still read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from scanner.errors import InputError
from scanner.regularfile import NotRegularFileError, open_regular
from scanner.reports import safetext

_BLANK = b" \t\r\n"


def escape(text: str) -> str:
    """JSON text with every hidden character (safetext.is_hidden) written as a \\uXXXX escape (valid only
    inside JSON output: outside strings JSON is ASCII, so every hidden character is inside a string)."""
    return safetext.escape_json(text)


def dumps(value: object, *, sort_keys: bool = True, separators: tuple[str, str] = (",", ":")) -> str:
    """One JSON line (no newline), compact and key-sorted unless told otherwise, hidden characters escaped."""
    return escape(json.dumps(value, sort_keys=sort_keys, ensure_ascii=False, separators=separators))


def write_records(handle: IO[str], records: Iterable[dict]) -> int:
    """Append records, one a line; returns how many."""
    count = 0
    for record in records:
        handle.write(dumps(record) + "\n")
        count += 1
    return count


def read_lines(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON Lines file, split on "\\n" only (never on
    U+2028 or the other characters str.splitlines() splits on); InputError with the line for anything else,
    and InputError for a path that is no regular file (regularfile.open_regular)."""
    try:
        handle = open_regular(path)  # a FIFO would hang a plain open, a link to /dev/zero never end
    except NotRegularFileError as exc:
        raise InputError(str(path), exc.strerror) from exc
    with handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip(_BLANK):
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                reason = f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
                raise InputError(str(path), reason, number) from exc
            except ValueError as exc:
                raise InputError(str(path), f"not JSON ({exc})", number) from exc
            except RecursionError:  # [[[[...: the C parser recurses once per level
                raise InputError(str(path), "not JSON (nested too deeply)", number) from None
            if not isinstance(record, dict):
                raise InputError(str(path), "not a JSON object", number)
            yield number, record


def read_records(path: str | Path) -> Iterator[dict]:
    """The objects of a JSON Lines file (see read_lines)."""
    return (record for _number, record in read_lines(path))

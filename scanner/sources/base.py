"""What every source yields: rows with a URL and an optional key, grouped in deterministic units."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from scanner.outcomes import SourceReason

URL_COLUMNS = ("URL", "url", "image_url", "img_url", "link")
KEY_COLUMNS = ("SAMPLE_ID", "uid", "key", "id")
URL_COL_HINT = "name the URL column with --url-col (source.url_col)"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(slots=True)
class Row:
    """One input row: where it came from, its URL and key, extra columns asked for, and for already-downloaded
    corpora the image bytes (held in memory only) and the member path inside the shard. A source that already
    knows the row is unusable (a damaged tar member) sets `error` to the reason instead of a body."""

    shard: str
    row: int
    url: str | None
    key: str | None
    columns: dict[str, object] = field(default_factory=dict)
    body: bytes | None = field(default=None, repr=False)  # image content never goes into a repr or a log
    member: str | None = None
    error: SourceReason | None = None


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """How to read shards: column names (None = detect), the unit size for resumable work, and the largest
    image member an already-downloaded corpus may hold (a bigger one is reported, never read)."""

    url_col: str | None = None
    key_col: str | None = None
    extra_cols: tuple[str, ...] = ()
    rows_per_unit: int = 500
    image_col: str | None = None
    max_member_bytes: int = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Span:
    """A contiguous range of rows in one shard: the unit of work, checkpointing and distribution."""

    start: int
    stop: int
    row_groups: tuple[int, ...] = ()
    offset: int = 0
    members: tuple[str, ...] = ()  # a folder's files for these rows, as its plan listed them

    @property
    def rows(self) -> int:
        return self.stop - self.start


class Source(Protocol):
    """A shard that can split itself into spans and read any span back as rows."""

    path: str
    kind: str

    def spans(self) -> list[Span]: ...

    def read(self, span: Span) -> Iterator[list[Row]]: ...


def pick_column(columns: list[str], wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    """Return the wanted column if present, else the first candidate present, else None."""
    if wanted is not None:
        return wanted if wanted in columns else None
    return next((c for c in candidates if c in columns), None)


def cell_to_str(value: object) -> str | None:
    """Turn a cell into a stripped string; empty and null cells become None."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    text = text.strip()
    return text or None


def parse_json(text: str | bytes) -> object:
    """json.loads for untrusted text: any failure is a ValueError saying why, and a string no UTF-8 report
    could hold (an escaped lone surrogate such as "\\ud800", which the parser lets through) is one too."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(exc.msg) from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except ValueError:  # int() refuses a number of more than sys.get_int_max_str_digits() digits
        raise ValueError("a number too long to convert") from None
    if isinstance(text, str):
        escaped = _SURROGATE_ESCAPE.search(text)
    else:
        escaped = _SURROGATE_ESCAPE_BYTES.search(text)
    if escaped:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds an unpaired surrogate (\\ud800-\\udfff)") from None
        except RecursionError:
            raise ValueError("nested too deeply") from None
    return value

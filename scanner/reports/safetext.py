"""Hostile strings made safe to show: what a reader cannot see becomes a visible token, <U+202E>.

URLs, keys, member and shard names, list entries and header values come from whoever planted them. A bidi
control (U+202E turns `gpj.exe` into what reads as `exe.jpg`), a zero-width or other format character, a
C0/C1 control, a line or paragraph separator, a non-ASCII space or an invisible filler can make a value read
differently from what it is. Every such character is "hidden"; report.html and the CSV export show each
one as the token `<U+XXXX>` (styled apart in HTML), and JSON output writes it as a \\uXXXX escape, which reads
back to the exact value. Hidden: every character Python's str.isprintable() rejects (categories Cc, Cf, Cs,
Co, Cn, Zl, Zp, and Zs other than the ASCII space) plus the printable ones that render as nothing (INVISIBLE).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator

# Printable by Python's definition but drawn as nothing (or as a blank letter): fillers, joiners, selectors.
INVISIBLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u2800\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]"
)
# Cells a spreadsheet runs as a formula (CSV injection), ASCII and full-width.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20", "\ufe62", "\ufe63")


def is_hidden(char: str) -> bool:
    """Whether one character would not show as itself."""
    return not char.isprintable() or INVISIBLE.match(char) is not None


def has_hidden(text: str) -> bool:
    return not text.isprintable() or INVISIBLE.search(text) is not None


def token(char: str) -> str:
    """The visible stand-in for a hidden character: <U+202E>."""
    return f"<U+{ord(char):04X}>"


def runs(text: str) -> Iterator[tuple[str, bool]]:
    """The text in runs of (characters, hidden?)."""
    for hidden, group in itertools.groupby(text, is_hidden):
        yield "".join(group), hidden


def reveal(text: str, shown: Callable[[str], str] = token, plain: Callable[[str], str] = str) -> str:
    """The text with each hidden character replaced by shown(char) and every other run passed through plain
    (html.escape for a page). Strings with nothing hidden, nearly all, take the C-speed check only."""
    if not has_hidden(text):
        return plain(text)
    return "".join(
        "".join(shown(c) for c in chars) if hidden else plain(chars) for chars, hidden in runs(text)
    )


def csv_cell(value: object) -> object:
    """A CSV cell that shows what it holds: hidden characters as tokens, and a leading formula character
    quoted with ' so a spreadsheet shows the text instead of running it."""
    if not isinstance(value, str):
        return value
    shown = reveal(value)
    return "'" + shown if shown.startswith(FORMULA_STARTS) else shown


def escape_json(text: str) -> str:
    """JSON text (from json.dumps(..., ensure_ascii=False)) with every hidden character written as a \\uXXXX
    escape (a surrogate pair above U+FFFF). JSON outside strings is ASCII, with "\\n" only as indentation
    (inside strings json.dumps escapes it), so every other hidden character is inside a string."""
    if not has_hidden(text.replace("\n", "")):
        return text
    return "".join(_json_escape(c) if c != "\n" and is_hidden(c) else c for c in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"

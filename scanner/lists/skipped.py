"""List entries left out of a list, by hash type, with why: a list as delivered may carry fingerprints
the scanner cannot compute (PhotoDNA, video fingerprints) beside the ones it can, and those must not
reject the whole list, nor vanish without a word in the reports."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from scanner.outcomes import StrEnum


class SkipReason(StrEnum):
    """Why a list's entries of one type were left out (manifest and summary.json `reason`)."""

    NO_HASHER = "no_hasher"  # a type no registered hash type (built-in or plug-in) computes
    NOT_IN_LIST = "value_not_in_list"  # the list names the fingerprint but holds no value (NCMEC large ones)


@dataclass(frozen=True, slots=True)
class SkippedType:
    """How many entries of one type a list left out, why, and the line of the first."""

    entries: int
    reason: SkipReason
    first_line: int | None = None
    page: str | None = None  # in a folder of saved pages, the one first_line is a line of

    def why(self, type_name: str) -> str:
        """The reason in words, naming what to do about it."""
        if self.reason == SkipReason.NO_HASHER:
            return f"no hasher for {type_name}: install a plug-in"
        return f"{type_name} values are not in the list file: large fingerprints are served apart"

    def stats(self, type_name: str) -> dict[str, object]:
        """JSON-ready, for the manifest and summary.json."""
        return {
            "entries": self.entries,
            "reason": str(self.reason),
            "why": self.why(type_name),
            "first_line": self.first_line,
            **({"page": self.page} if self.page is not None else {}),
        }


def merged(*parts: Mapping[str, SkippedType]) -> dict[str, SkippedType]:
    """Skipped counts of several parts of one list, added up by type (the first line kept)."""
    total: dict[str, SkippedType] = {}
    for part in parts:
        for name, skipped in part.items():
            earlier = total.get(name)
            if earlier is None:
                total[name] = skipped
            else:
                entries = earlier.entries + skipped.entries
                total[name] = dataclasses.replace(earlier, entries=entries)
    return dict(sorted(total.items()))

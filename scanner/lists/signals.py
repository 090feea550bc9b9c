"""A signal-type plug-in's own matching: its index (get_index_cls) over one list's signal strings, each
candidate confirmed by its own compare (compare_hash, or matches_str) where it has one.

How fast this is, is the plug-in's: pytx's linear indexes (TrivialLinearSearchHashIndex, ...MatchIndex)
compare every query with every entry, so a large list costs entries x queries compares; docs/plugins.md
says so. The built index is never pickled: every process that matches builds its own from the strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scanner.errors import ConfigError
from scanner.hashtypes import HashType


class SignalIndex:
    """One list's signal strings of one plug-in type, indexed by the plug-in's own index class."""

    def __init__(self, hash_type: HashType, signals: Sequence[str]) -> None:
        self.hash_type = hash_type
        self.signals = list(signals)
        self._index: Any = None
        self._built()  # a plug-in whose index cannot be built is refused before the scan starts

    def __len__(self) -> int:
        return len(self.signals)

    def __getstate__(self) -> dict[str, object]:
        return {"hash_type": self.hash_type, "signals": self.signals}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.hash_type, self.signals, self._index = state["hash_type"], state["signals"], None

    def _built(self) -> Any:
        if self._index is None:
            signal_type = self.hash_type.signal_class()
            index_cls = signal_type.get_index_cls()
            try:
                self._index = index_cls.build((signal, entry) for entry, signal in enumerate(self.signals))
            except Exception as exc:  # the plug-in's own index: whatever it raises is a setup problem
                raise ConfigError(
                    f"signal type {self.hash_type.name}: its index {index_cls.__name__} could not be built "
                    f"({type(exc).__name__}: {exc})"
                ) from None
        return self._index

    def search(self, queries: Sequence[str | None]) -> list[tuple[int, int, int]]:
        """(query, entry, distance) for every entry the plug-in matches to a query, by query then entry."""
        index, confirm = self._built(), _confirmer(self.hash_type.signal_class())
        found = []
        for q, query in enumerate(queries):
            if query is None:
                continue
            for match in index.query(query):
                entry = int(match.metadata)
                if confirm is None or confirm(self.signals[entry], query):
                    found.append((q, entry, _distance(match.similarity_info)))
        return sorted(set(found))


def _confirmer(signal_type: Any) -> Any:
    """The plug-in's own compare of (entry, query), where it has one: an index may return near misses."""
    for method in ("compare_hash", "matches_str"):
        compare = getattr(signal_type, method, None)
        if callable(compare):
            return lambda entry, query, compare=compare: bool(compare(entry, query).match)
    return None


def _distance(info: object) -> int:
    """A match's distance where the plug-in gives a whole number, else 0 (match or no match only)."""
    distance = getattr(info, "distance", 0)
    return distance if isinstance(distance, int) and not isinstance(distance, bool) else 0

"""Hash lists: file formats, in-memory indexes, and matching hashes against every loaded list."""

from scanner.lists.hashlist import DuplicateHashWarning, HashEntries, HashList, ListSpec, load_hashlist
from scanner.lists.hashtypes import LIST_TYPE_NAMES, ListKeys, list_keys
from scanner.lists.matcher import DIHEDRAL_TRANSFORMS, Match, MatchConfig, Matcher, Query

__all__ = [
    "DIHEDRAL_TRANSFORMS",
    "LIST_TYPE_NAMES",
    "DuplicateHashWarning",
    "HashEntries",
    "HashList",
    "ListKeys",
    "ListSpec",
    "Match",
    "MatchConfig",
    "Matcher",
    "Query",
    "list_keys",
    "load_hashlist",
]

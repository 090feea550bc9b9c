"""Hash lists: file formats, in-memory indexes, and matching hashes against every loaded list."""

from scanner.lists.hashlist import DuplicateHashWarning, HashEntries, HashList, ListSpec, load_hashlist
from scanner.lists.hashtypes import HASH_TYPES, HashType
from scanner.lists.matcher import DIHEDRAL_TRANSFORMS, Match, MatchConfig, Matcher, Query

__all__ = [
    "DIHEDRAL_TRANSFORMS",
    "HASH_TYPES",
    "DuplicateHashWarning",
    "HashEntries",
    "HashList",
    "HashType",
    "ListSpec",
    "Match",
    "MatchConfig",
    "Matcher",
    "Query",
    "load_hashlist",
]

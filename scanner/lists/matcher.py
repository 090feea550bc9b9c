"""Matching image and URL hashes against loaded lists: every entry of every list, in a stable order."""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from scanner.errors import ConfigError
from scanner.hashtypes import DIHEDRAL_TRANSFORMS, IMAGE, REGISTRY
from scanner.lists.deferred import DeferredList
from scanner.lists.hashlist import HashEntries, HashList
from scanner.lists.hashtypes import ListKeys
from scanner.lists.index import ExactIndex, HammingIndex
from scanner.lists.signals import SignalIndex


@dataclass(frozen=True, slots=True)
class Match:
    """One list entry that a query matched."""

    list: str
    entry_id: str
    category: str | None
    hash_type: str
    distance: int  # 0 for exact types
    quality: int | None  # the query's PDQ quality, for pdq matches
    transform: str | None = None  # the dihedral transform that matched, when not the original image
    value: str | None = None  # the query's own hash (hex) that matched: negative lists, referral drafts
    entry: tuple[tuple[str, str], ...] = ()  # the entry's own columns beyond id and category (NCMEC member)


@dataclass(frozen=True, slots=True)
class Query:
    """The hashes of one image or URL. pdq_dihedral holds all 8 dihedral PDQ hashes (original first)."""

    hashes: Mapping[str, bytes]
    pdq_quality: int | None = None
    pdq_dihedral: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class MatchConfig:
    """Match thresholds (Hamming distance, inclusive) and the PDQ quality gate.

    The defaults are the registry's (scanner.hashtypes); a type without a field here matches within its
    registry threshold. PDQ: Meta's recommendation, distance <= 31 of 256 bits, ignoring hashes of quality
    below 50.
    pHash/dHash default to 8 of 64 bits: the same 1/8 of the bits as PDQ's 31/256. Two unrelated random
    64-bit hashes come that close with probability 2.8e-10 (at 10 bits, 1e-8), so against a 1M-entry
    list about one query in 3,600 matches by chance (one in 100 at 10 bits). Real images' bits are
    correlated, which makes it worse: treat these matches as leads to review, and PDQ and exact digests
    as the evidence.
    """

    pdq_threshold: int = REGISTRY["pdq"].threshold
    pdq_min_quality: int = 50
    phash_threshold: int = REGISTRY["phash"].threshold
    dhash_threshold: int = REGISTRY["dhash"].threshold
    pdq_dihedral: bool = False
    list_thresholds: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # list -> type -> bits
    omit_entry_fields: tuple[str, ...] = ()  # list columns left out of matches (and out of memory)

    def __post_init__(self) -> None:
        for name, bits, limit in (
            ("pdq_threshold", self.pdq_threshold, REGISTRY["pdq"].bits),
            ("pdq_min_quality", self.pdq_min_quality, 100),
            ("phash_threshold", self.phash_threshold, REGISTRY["phash"].bits),
            ("dhash_threshold", self.dhash_threshold, REGISTRY["dhash"].bits),
        ):
            if not 0 <= bits <= limit:
                raise ConfigError(f"{name} must be within 0..{limit}, got {bits}")

    def threshold(self, list_name: str, hash_type: str) -> int:
        """The Hamming threshold for one list's hashes of one type (0 for exact types): the list's own, else
        this config's `<type>_threshold`, else the registry's default."""
        own = self.list_thresholds.get(list_name, {}).get(hash_type)
        if own is not None:
            return own
        known = REGISTRY.get(hash_type)
        return getattr(self, f"{hash_type}_threshold", known.threshold if known is not None else 0)


Index = ExactIndex | HammingIndex | SignalIndex


class _Searchable:
    """One list's entries of one hash type, indexed; the entries and index may still be loading and building
    in a thread (the coordinator's), or be on their way from the coordinator (a placeholder, in a worker)."""

    def __init__(
        self,
        list_name: str,
        hash_type: ListKeys,
        entries: HashEntries | Future[HashEntries],
        index: Index | Future[Index],
        threshold: int,
        origin: HashList | DeferredList | None = None,
    ):
        self.list_name = list_name
        self.hash_type = hash_type
        self.threshold = threshold
        self._entries = entries
        self._index = index
        self._placeholder = False
        # The list the entries came from (from_lists): hold() points it at the held entries too, so that this
        # process keeps no copy of them. Never pickled: a worker has its own lists, or none.
        self._origin = origin
        self.background = isinstance(index, Future)  # built by the thread (or sent later, to a worker)

    @property
    def entries(self) -> HashEntries:
        """The entries, waiting for their load if it is not done (a load error is raised here)."""
        if isinstance(self._entries, Future):
            self._entries = self._entries.result()
        return self._entries

    @property
    def index(self) -> Index:
        """The index, waiting for its build if it is not done (a build error is raised here)."""
        if isinstance(self._index, Future):
            self._index = self._index.result()
        return self._index

    def placeholder(self) -> _Searchable:
        """A copy with neither entries nor index, which fill() completes in the process it is sent to."""
        copy = _Searchable(self.list_name, self.hash_type, Future(), Future(), self.threshold)
        copy._placeholder = True
        return copy

    def fill(self, entries: HashEntries, index: Index) -> None:
        if not self._placeholder or not isinstance(self._index, Future) or self._index.done():
            raise RuntimeError(f"{self.list_name}/{self.hash_type.name} is not waiting for its entries")
        assert isinstance(self._entries, Future)
        self._entries.set_result(entries)
        self._index.set_result(index)

    def hold(self, entries: HashEntries, index: Index) -> None:
        """Use these entries and index, equal to the built ones, from now on (see Matcher.hold), and so does
        the list they came from (its counts stay: the same entries, less omitted fields)."""
        if self._placeholder or (isinstance(self._index, Future) and not self._index.done()):
            raise RuntimeError(f"{self.list_name}/{self.hash_type.name} is not built")
        self._entries, self._index = entries, index
        origin = self._origin.result() if isinstance(self._origin, DeferredList) else self._origin
        if origin is not None and isinstance(origin.entries, dict):
            origin.entries[self.hash_type.name] = entries

    def give_up(self) -> None:
        for future in (self._entries, self._index):
            if isinstance(future, Future) and self._placeholder and not future.done():
                future.set_exception(RuntimeError("the run stopped before the lists were sent"))

    def __getstate__(self) -> dict[str, object]:
        if self._placeholder:  # only what it is; its entries follow
            return {**self.__dict__, "_entries": None, "_index": None, "_origin": None}
        return {**self.__dict__, "_entries": self.entries, "_index": self.index, "_origin": None}  # no build

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        if self._placeholder:
            self._entries, self._index = Future(), Future()


@dataclass(frozen=True, slots=True)
class _Probes:
    """The keys to look up for a batch: for each, the query it came from and its dihedral transform."""

    keys: np.ndarray
    query: np.ndarray
    transform: np.ndarray  # index into DIHEDRAL_TRANSFORMS; 0 (original) for everything else


class Matcher:
    """All the loaded lists, indexed per list and hash type, ready to match batches of queries.

    URL and domain indexes are built at once; image-hash lists (a DeferredList: loading a 10M-entry PDQ
    list takes seconds) are loaded and their indexes built (seconds more) in a background thread, so a
    scan fetches and hashes meanwhile and its first match waits only for the rest: a query of a type whose
    lists are not all ready waits in match_batch, never matched against part of them.
    """

    def __init__(
        self, searchables: Sequence[_Searchable], config: MatchConfig, negative: Collection[str] = ()
    ) -> None:
        self._searchables = tuple(searchables)
        self.config = config
        self.negative = frozenset(negative)  # negative lists: they only ever suppress another list's match
        types = {s.hash_type.name for s in self._searchables}
        dihedral = {"pdq_dihedral"} if config.pdq_dihedral and "pdq" in types else set()
        self.needed_hash_types: frozenset[str] = frozenset(types | dihedral)

    @classmethod
    def from_lists(
        cls,
        lists: Sequence[HashList | DeferredList],
        config: MatchConfig | None = None,
        negative: Collection[str] = (),
    ) -> Matcher:
        """Index every list's entries; refuses duplicate list names and overrides for unknown lists.
        `negative` names lists whose entries matter only beside another list's match (negative lists)."""
        config = config or MatchConfig()
        names = [hash_list.name for hash_list in lists]
        if len(set(names)) != len(names):
            raise ConfigError(f"two hash lists share a name: {sorted(names)}; name them as NAME=PATH")
        _check_overrides(config, lists)
        searchables, builds = [], []
        for hash_list in lists:
            for hash_type, source in _sources(hash_list, config.omit_entry_fields):
                threshold = config.threshold(hash_list.name, hash_type.name)
                index: Index | Future[Index] = Future()
                entries: HashEntries | Future[HashEntries] = Future()
                if hash_type.type.computed_from == IMAGE:
                    builds.append((source, entries, index, threshold))
                else:  # URL screening needs it before the first request
                    assert isinstance(source, HashEntries)
                    entries, index = source, _index(source, threshold)
                searchables.append(
                    _Searchable(hash_list.name, hash_type, entries, index, threshold, hash_list)
                )
        if builds:
            threading.Thread(
                target=_build_all, args=(builds, config.omit_entry_fields), name="index-build", daemon=True
            ).start()
        return cls(searchables, config, negative)

    def ready_part(self) -> Matcher:
        """This matcher with placeholders for the lists still loading or building in the background: what a
        worker can start with (its URL screen is whole); fill() completes it with rest()."""
        searchables = [s.placeholder() if s.background else s for s in self._searchables]
        return Matcher(searchables, self.config, self.negative)

    @property
    def has_background(self) -> bool:
        return any(s.background for s in self._searchables)

    def rest(self) -> list[tuple[HashEntries, Index]]:
        """The entries and index of each list ready_part() left out, in order, once all are built."""
        return [(s.entries, s.index) for s in self._searchables if s.background]

    def fill(self, rest: Sequence[tuple[HashEntries, Index]]) -> None:
        """Complete the placeholders of a ready_part() with the coordinator's rest()."""
        waiting = [s for s in self._searchables if s.background]
        if len(waiting) != len(rest):
            raise RuntimeError(f"{len(rest)} lists sent for {len(waiting)} placeholders")
        for searchable, (entries, index) in zip(waiting, rest, strict=True):
            searchable.fill(entries, index)

    def hold(self, rest: Sequence[tuple[HashEntries, Index]]) -> None:
        """Hold the lists rest() gave as `rest` instead: the same entries and indexes, in other memory (the
        coordinator's copy in shared memory, mapped), so that this process's own can go."""
        built = [s for s in self._searchables if s.background]
        if len(built) != len(rest):
            raise RuntimeError(f"{len(rest)} lists held for {len(built)} built in the background")
        for searchable, (entries, index) in zip(built, rest, strict=True):
            searchable.hold(entries, index)

    def hold_shared(self, shared: Matcher) -> None:
        """Hold what `shared` (this matcher or its ready_part(), unpickled over shared memory) has whole,
        instead of this process's own copies: the lists ready at once, or all of them."""
        if len(shared._searchables) != len(self._searchables):
            raise RuntimeError("hold_shared needs this matcher's own lists")
        for mine, theirs in zip(self._searchables, shared._searchables, strict=True):
            if not theirs._placeholder:
                mine.hold(theirs.entries, theirs.index)

    def give_up(self) -> None:
        """End every match still waiting for a placeholder's lists: they will not come (the run stops)."""
        for searchable in self._searchables:
            searchable.give_up()

    def match_batch(self, queries: Sequence[Query]) -> list[list[Match]]:
        """Every match of every query, each query's sorted by list, hash type, distance and entry id."""
        results: list[list[Match]] = [[] for _ in queries]
        probes_by_type: dict[str, _Probes] = {}
        for searchable in self._searchables:
            hash_type = searchable.hash_type
            if hash_type.type.signal is not None:
                for q, entry, distance in _signal_matches(searchable, queries):
                    results[q].append(self._match(searchable, queries[q], entry, distance, 0))
                continue
            if hash_type.name not in probes_by_type:
                probes_by_type[hash_type.name] = self._probes(queries, hash_type)
            probes = probes_by_type[hash_type.name]
            if len(probes.query) == 0:
                continue
            for q, entry, distance, transform in _best_per_entry(searchable, probes):
                results[q].append(self._match(searchable, queries[q], entry, distance, transform))
        for matches in results:
            matches.sort(key=lambda m: (m.list, m.hash_type, m.distance, m.entry_id))
            if self.negative and all(m.list in self.negative for m in matches):
                matches.clear()  # a negative entry alone is no match: the row is what it was
        return results

    def _probes(self, queries: Sequence[Query], hash_type: ListKeys) -> _Probes:
        keys: list[bytes] = []
        owners: list[int] = []
        transforms: list[int] = []
        for q, query in enumerate(queries):
            value = query.hashes.get(hash_type.name)
            if value is None or not self._passes_quality(hash_type.name, query):
                continue
            for transform, variant in self._variants(hash_type.name, value, query):
                for key in hash_type.query_keys(variant):
                    keys.append(key)
                    owners.append(q)
                    transforms.append(transform)
        array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), hash_type.nbytes)
        return _Probes(array, np.array(owners, dtype=np.int64), np.array(transforms, dtype=np.int64))

    def _passes_quality(self, type_name: str, query: Query) -> bool:
        """PDQ hashes of too little quality (flat or tiny images) match too much to be evidence."""
        if type_name != "pdq" or query.pdq_quality is None:
            return True
        return query.pdq_quality >= self.config.pdq_min_quality

    def _variants(self, type_name: str, value: bytes, query: Query) -> list[tuple[int, bytes]]:
        """The query's value, and for PDQ with dihedral matching on, its 7 rotated and flipped hashes."""
        if type_name != "pdq" or not self.config.pdq_dihedral or not query.pdq_dihedral:
            return [(0, value)]
        if len(query.pdq_dihedral) != len(DIHEDRAL_TRANSFORMS):
            raise ValueError(f"pdq_dihedral needs 8 hashes, got {len(query.pdq_dihedral)}")
        return [(0, value), *((t, query.pdq_dihedral[t]) for t in range(1, len(DIHEDRAL_TRANSFORMS)))]

    @staticmethod
    def _match(searchable: _Searchable, query: Query, entry: int, distance: int, transform: int) -> Match:
        entries = searchable.entries
        is_pdq = entries.hash_type.name == "pdq"
        value = query.pdq_dihedral[transform] if transform else query.hashes.get(entries.hash_type.name)
        kind = entries.hash_type.type
        return Match(
            list=searchable.list_name,
            entry_id=entries.entry_id(entry),
            category=entries.category(entry),
            hash_type=entries.hash_type.name,
            distance=distance,
            quality=query.pdq_quality if is_pdq else None,
            transform=DIHEDRAL_TRANSFORMS[transform] if transform else None,
            value=None if value is None or kind.text else kind.to_hex(value),
            entry=entries.fields(entry),
        )


def _index(entries: HashEntries, threshold: int) -> Index:
    """The index for one list's entries of one type: Hamming search, exact lookup, or a plug-in's own."""
    if entries.hash_type.type.signal is not None:
        return SignalIndex(entries.hash_type.type, entries.texts.to_pylist() if entries.texts else [])
    return HammingIndex(entries.keys, threshold) if entries.hash_type.hamming else ExactIndex(entries.keys)


def _signal_matches(searchable: _Searchable, queries: Sequence[Query]) -> list[tuple[int, int, int]]:
    """(query, entry, distance) by the plug-in's own index: query values are its signal strings' UTF-8."""
    name = searchable.hash_type.name
    values = [query.hashes.get(name) for query in queries]
    index = searchable.index
    assert isinstance(index, SignalIndex)
    return index.search([None if value is None else value.decode("utf-8") for value in values])


def _build_all(
    builds: list[tuple[HashEntries | DeferredList, Future, Future, int]], omit: tuple[str, ...]
) -> None:
    """Load the deferred lists and build the image-hash indexes in turn while the scan starts fetching;
    their kernels release the GIL. A daemon thread: a scan stopped meanwhile does not wait for a build
    nobody will use."""
    for source, entries, index, threshold in builds:
        try:
            loaded = source if isinstance(source, HashEntries) else _load(source).without_fields(omit)
            entries.set_result(loaded)
            index.set_result(_index(loaded, threshold))
        except BaseException as error:  # every waiting match sees the load's or build's own error
            for future in (entries, index):
                if not future.done():
                    future.set_exception(error)


def _load(deferred: DeferredList) -> HashEntries:
    return deferred.load().entries[deferred.hash_type.name]


def _sources(
    hash_list: HashList | DeferredList, omit: Collection[str]
) -> list[tuple[ListKeys, HashEntries | DeferredList]]:
    """Each hash type of a list and where its entries come from: loaded (less the omitted entry fields), or
    a list still to load."""
    if isinstance(hash_list, DeferredList):
        return [(hash_list.hash_type, hash_list)]
    return [(entries.hash_type, entries.without_fields(omit)) for entries in hash_list.entries.values()]


def _best_per_entry(searchable: _Searchable, probes: _Probes) -> list[tuple[int, int, int, int]]:
    """(query, entry, distance, transform) with one row per query and entry: the closest probe wins,
    the original image before any transform."""
    probe, entry, distance = searchable.index.search(probes.keys, searchable.threshold)
    query, transform = probes.query[probe], probes.transform[probe]
    order = np.lexsort((transform, distance, entry, query))
    query, entry, distance, transform = query[order], entry[order], distance[order], transform[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (query[1:] != query[:-1]) | (entry[1:] != entry[:-1])
    rows = zip(query[first], entry[first], distance[first], transform[first], strict=True)
    return [(int(q), int(e), int(d), int(t)) for q, e, d, t in rows]


def _check_overrides(config: MatchConfig, lists: Sequence[HashList | DeferredList]) -> None:
    """Per-list thresholds must name a loaded list and a Hamming type it holds, within the hash's bits."""
    by_name = {hash_list.name: dict(_sources(hash_list, ())) for hash_list in lists}
    for list_name, overrides in config.list_thresholds.items():
        if list_name not in by_name:
            raise ConfigError(f"threshold override for unknown hash list {list_name!r}")
        types = {hash_type.name: hash_type for hash_type in by_name[list_name]}
        for type_name, bits in overrides.items():
            hash_type = types.get(type_name)
            if hash_type is None or not hash_type.hamming:
                raise ConfigError(f"list {list_name!r} has no {type_name} hashes to override a threshold for")
            n_bits = 8 * hash_type.nbytes
            if not 0 <= bits <= n_bits:
                raise ConfigError(f"threshold {bits} for {list_name}/{type_name} is outside 0..{n_bits}")

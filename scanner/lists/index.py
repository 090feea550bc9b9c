"""In-memory indexes over fixed-width hashes: exact lookup and Hamming-radius search with exact recall."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, partial
from itertools import combinations
from math import comb
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scanner.lists import _kernels
# The functions that run a kernel import scanner.lists._kernels themselves: numba costs a fifth of a second
# of CPU to import, and a process that never searches a Hamming index (a unit worker starting up) skips it.

SearchResult = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(query_idx, entry_idx, distance): one row per (query, entry) pair found, grouped by query."""

_MIX = np.uint64(0x9E3779B97F4A7C15)


def as_words(keys: np.ndarray) -> np.ndarray:
    """View (N, nbytes) uint8 hashes as (N, nbytes // 8) native uint64 words without copying."""
    keys = np.ascontiguousarray(keys, dtype=np.uint8)
    if keys.ndim != 2 or keys.shape[1] % 8:
        raise ValueError(f"expected an (N, 8k) uint8 array, got shape {keys.shape}")
    return keys.view(np.uint64)


def aligned_empty(shape: tuple[int, int], alignment: int = 64) -> np.ndarray:
    """An uninitialised uint8 array starting on a cache-line boundary, so that 32-byte rows never straddle."""
    size = shape[0] * shape[1]
    raw = np.empty(size + alignment, dtype=np.uint8)
    skip = -raw.ctypes.data % alignment
    return raw[skip : skip + size].reshape(shape)


def row_hash(keys: np.ndarray) -> np.ndarray:
    """A well-mixed uint64 per row of a (N, nbytes) uint8 array: equal rows, equal values."""
    n, width = keys.shape
    padded = keys if width % 8 == 0 else np.pad(keys, ((0, 0), (0, 8 - width % 8)))
    words = np.ascontiguousarray(padded).view(np.uint64)
    h = np.full(n, width, dtype=np.uint64)
    for column in words.T:
        h = (h ^ column) * _MIX
        h ^= h >> np.uint64(29)
    return h


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """Boolean mask of rows that are the first of their value (later exact repeats are False)."""
    keep = np.ones(len(keys), dtype=bool)
    mixed = row_hash(keys)
    ordered = np.sort(mixed)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if len(repeated) == 0:
        return keep
    # Only rows whose mix repeats can be repeats; compare those exactly (this also settles mix collisions).
    rows = np.flatnonzero(np.isin(mixed, repeated))
    _, first = np.unique(keys[rows], axis=0, return_index=True)
    keep[rows] = False
    keep[rows[first]] = True
    return keep


class ExactIndex:
    """Exact lookup of fixed-width hashes: a sorted uint64 mix of each row, then a full-bytes check."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.ascontiguousarray(keys, dtype=np.uint8)
        h = row_hash(self.keys)
        index_type = np.int32 if len(h) < 2**31 else np.int64
        self._order = np.argsort(h).astype(index_type)
        self._sorted = h[self._order]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        """Bytes held beyond the keys themselves."""
        return self._order.nbytes + self._sorted.nbytes

    def search(self, queries: np.ndarray, threshold: int = 0) -> SearchResult:
        """Every (query, entry) pair with equal bytes; distance is always 0."""
        queries = np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, self.keys.shape[1])
        h = row_hash(queries)
        lo = np.searchsorted(self._sorted, h, side="left")
        hi = np.searchsorted(self._sorted, h, side="right")
        counts = hi - lo
        query_idx = np.repeat(np.arange(len(queries)), counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        entry_idx = self._order[np.repeat(lo, counts) + within].astype(np.int64)
        equal = (self.keys[entry_idx] == queries[query_idx]).all(axis=1)
        query_idx, entry_idx = query_idx[equal], entry_idx[equal]
        return query_idx, entry_idx, np.zeros(len(query_idx), dtype=np.int32)


@dataclass(frozen=True, slots=True)
class ChunkLayout:
    """How the bits of a hash are cut: chunk c covers bits [starts[c], starts[c] + widths[c])."""

    starts: tuple[int, ...]
    widths: tuple[int, ...]

    @classmethod
    def even(cls, n_bits: int, n_chunks: int) -> ChunkLayout:
        """n_chunks contiguous chunks whose widths differ by at most one bit, widest first."""
        base, extra = divmod(n_bits, n_chunks)
        widths = tuple(base + 1 if c < extra else base for c in range(n_chunks))
        starts = tuple(int(s) for s in np.cumsum((0, *widths[:-1])))
        return cls(starts, widths)

    def offsets_size(self) -> int:
        """Entries in all chunks' offset tables together."""
        return sum(2**w + 1 for w in self.widths)


@dataclass(frozen=True, slots=True)
class SearchCost:
    """Relative costs of the reads of a search, in units of one cache miss."""

    check: float  # testing a probed bucket in the occupancy bitmap
    probe: float  # reading an occupied bucket's offsets and first postings
    scan: float  # reading one more posting of a bucket, in sequence
    candidate: float  # reading one candidate's entry number and key, or its embedded key
    filter_bits: int  # bits of the next chunk that filter postings before candidates are read (0: none)

    @classmethod
    def of_layout(cls, layout: ChunkLayout, n_entries: int, key_bytes: int, embedded: bool) -> SearchCost:
        """Costs for a layout's array sizes: reads from arrays that fit in cache are cheap. Embedded keys
        (in the postings) are read in sequence, which is cheap at any size."""
        from scanner.lists import _kernels

        offsets = layout.offsets_size()
        postings = posting_bytes(n_entries, embedded) * len(layout.widths) * n_entries
        return cls(
            check=_read_cost(offsets / 8),
            probe=_read_cost(2 * offsets) + _read_cost(postings),
            scan=0.1 if embedded else 0.03,
            candidate=0.0 if embedded else 2 * _read_cost(key_bytes * n_entries),
            filter_bits=0 if embedded else min(_kernels.INLINE_BITS, min(layout.widths)),
        )

    def of(self, width: int, radius: int, n_entries: int) -> float:
        """Cost of probing one chunk of this width to this radius."""
        probes = sum(comb(width, k) for k in range(radius + 1))
        per_bucket = n_entries / 2**width
        per_posting = self.scan + self.candidate * self.passing(radius)
        return probes * (self.check + min(1.0, per_bucket) * self.probe + per_bucket * per_posting)

    def passing(self, radius: int) -> float:
        """Share of probed postings that pass the next-chunk filter, taking the next chunk's radius as
        this one's and the probe as differing in all radius bits (the most common probe)."""
        if not self.filter_bits:
            return 1.0
        return sum(comb(self.filter_bits, k) for k in range(radius + 2)) / 2**self.filter_bits


def posting_bytes(n_entries: int, embedded: bool) -> int:
    """Bytes per posting: entry number and embedded key, or entry number (3 bytes below 2**24 entries)
    and the next chunk's low bits."""
    if embedded:
        return 4 + 8
    return 2 + (1 if n_entries <= 2**24 else 2) + 2


def _read_cost(array_bytes: float) -> float:
    """Relative cost of a random read from an array of this size."""
    return 0.25 if array_bytes <= _CACHED_BYTES else 1.0


_CACHED_BYTES = 16 * 2**20  # about what stays in this core's share of cache while other work runs
# Memory bound on offsets + postings: 80 bytes per entry plus 64 MB. A 10M-entry PDQ index then stays
# near 1.1 GB with its 320 MB of keys, and a 1M-entry one near 120 MB.
_INDEX_BYTES_PER_ENTRY = 80
_INDEX_BYTES_ALLOWANCE = 2**26
_MAX_CHUNK_BITS = 28


def chunk_radii(widths: tuple[int, ...], threshold: int, n_entries: int, cost: SearchCost) -> tuple[int, ...]:
    """Per-chunk probe radii that sum to threshold - chunks + 1, spent where probing costs least.

    Generalised pigeonhole: if every chunk c differed from the query in more than radii[c] bits, the hash
    would differ in at least sum(radii) + chunks = threshold + 1 bits. So every entry within threshold is
    within radii[c] of the query in some chunk c, and probing each chunk to its radius finds every match.
    A radius of -1 skips the chunk.
    """
    of = cache(partial(cost.of, n_entries=n_entries))  # even chunks: a width or two, many times
    radii = [-1] * len(widths)
    for _ in range(threshold + 1):
        extra = [of(w, r + 1) - of(w, r) for w, r in zip(widths, radii, strict=True)]
        radii[int(np.argmin(extra))] += 1
    return tuple(radii)


def index_bytes(layout: ChunkLayout, n_entries: int, embedded: bool) -> int:
    """Memory of the offsets and postings of a layout, beyond the keys themselves."""
    return 2 * layout.offsets_size() + posting_bytes(n_entries, embedded) * len(layout.widths) * n_entries


def choose_layout(n_bits: int, n_entries: int, threshold: int, embedded: bool) -> ChunkLayout:
    """The even chunking with the lowest modelled search cost that fits the memory bound."""
    limit = _INDEX_BYTES_PER_ENTRY * n_entries + _INDEX_BYTES_ALLOWANCE
    layouts = [ChunkLayout.even(n_bits, m) for m in range(1, n_bits // 4 + 1)]
    fitting = [layout for layout in layouts if index_bytes(layout, n_entries, embedded) <= limit]

    def search_cost(layout: ChunkLayout) -> float:
        cost = SearchCost.of_layout(layout, n_entries, n_bits // 8, embedded)
        radii = chunk_radii(layout.widths, threshold, n_entries, cost)
        return sum(cost.of(w, r, n_entries) for w, r in zip(layout.widths, radii, strict=True) if r >= 0)

    return min(fitting, key=search_cost)


def _probe_masks(width: int, radius: int) -> np.ndarray:
    """Every width-bit mask with at most radius bits set, fewest bits first (none for radius -1)."""
    masks = [0] if radius >= 0 else []
    for k in range(1, radius + 1):
        masks.extend(sum(1 << b for b in bits) for bits in combinations(range(width), k))
    return np.array(masks, dtype=np.uint64)


def aligned_copy(keys: np.ndarray) -> np.ndarray:
    """A copy of (N, nbytes) uint8 keys starting on a cache-line boundary."""
    copy = aligned_empty(keys.shape)
    copy[:] = keys
    return copy


class HammingIndex:
    """Multi-index hashing over fixed-width binary hashes: every entry within a Hamming radius, exactly.

    Each hash is cut into chunks; each chunk has a CSR posting list (entry numbers sorted by chunk value,
    and an offsets table of 2**width + 1). A search probes every chunk value within that chunk's radius of
    the query's (see chunk_radii). Postings of wide hashes carry the low bits of the next chunk, a
    pigeonring filter that spares most candidates' random reads (see _kernels.mih_search); single-word
    (64-bit) hashes are copied into the postings whole, so candidates are checked without a random read.
    """

    def __init__(self, keys: np.ndarray, threshold: int, layout: ChunkLayout | None = None) -> None:
        if keys.ctypes.data % 64 or not keys.flags.c_contiguous:
            keys = aligned_copy(keys)
        self.keys = keys
        self.threshold = threshold
        self.embedded = keys.shape[1] == 8
        n_bits = 8 * keys.shape[1]
        self.layout = layout or choose_layout(n_bits, len(keys), threshold, self.embedded)
        if max(self.layout.widths) > _MAX_CHUNK_BITS or sum(self.layout.widths) != n_bits:
            raise ValueError(f"chunks must cover the {n_bits} bits, each at most {_MAX_CHUNK_BITS} wide")
        self.cost = SearchCost.of_layout(self.layout, len(keys), keys.shape[1], self.embedded)
        self._starts = np.array(self.layout.starts, dtype=np.int64)
        self._widths = np.array(self.layout.widths, dtype=np.int64)
        self._offset_base = np.cumsum([0, *(2**w + 1 for w in self.layout.widths)], dtype=np.int64)
        self._offsets, self._postings = self._build()
        self._probe_plans: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _build(self) -> tuple[_kernels.Offsets, tuple[np.ndarray, ...]]:
        """Sort entries by each chunk in turn, keeping one chunk's order in memory at a time."""
        from scanner.lists import _kernels

        n, n_chunks = len(self.keys), len(self.layout.widths)
        index_type = np.int32 if n_chunks * n < 2**31 else np.int64
        offsets = np.empty(self._offset_base[-1], dtype=index_type)
        postings = self._empty_postings(n * n_chunks)
        values = np.empty(n, dtype=np.uint32)
        order = np.empty(n, dtype=index_type)
        for c, (start, width) in enumerate(zip(self.layout.starts, self.layout.widths, strict=True)):
            _kernels.chunk_values(self.words, start, width, values)
            bucket_offsets = offsets[self._offset_base[c] : self._offset_base[c + 1]]
            _kernels.sort_by_value(values, c * n, bucket_offsets, order)
            self._fill_postings(postings, slice(c * n, (c + 1) * n), order, (c + 1) % n_chunks, values)
        return _kernels.pack_offsets(offsets), postings

    def _empty_postings(self, size: int) -> tuple[np.ndarray, ...]:
        if self.embedded:
            return np.empty(size, dtype=np.int32), np.empty(size, dtype=np.uint64)
        high = np.uint8 if len(self.keys) <= 2**24 else np.uint16
        return np.empty(size, np.uint16), np.empty(size, high), np.empty(size, np.uint16)

    def _fill_postings(
        self, postings: tuple[np.ndarray, ...], part: slice, order: np.ndarray, after: int, values: np.ndarray
    ) -> None:
        """One chunk's postings in order: entry numbers plus the embedded key or the next chunk's low bits."""
        from scanner.lists import _kernels

        if self.embedded:
            entries, posted_keys = postings
            entries[part] = order
            posted_keys[part] = self.words[order, 0]
            return
        low, high, inline = postings
        low[part] = order
        high[part] = order >> 16
        width = min(self.layout.widths[after], _kernels.INLINE_BITS)
        _kernels.chunk_values(self.words, self.layout.starts[after], width, values)
        inline[part] = values[order]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def words(self) -> np.ndarray:
        """The keys as uint64 words: a view, derived rather than stored so a pickle holds the keys once."""
        return as_words(self.keys)

    @property
    def nbytes(self) -> int:
        """Bytes held beyond the keys themselves."""
        return sum(part.nbytes for part in (*self._offsets, *self._postings))

    def search(self, queries: np.ndarray, threshold: int | None = None) -> SearchResult:
        """Every (query, entry) pair within threshold bits (default: the build threshold) and its distance."""
        from scanner.lists import _kernels

        threshold = self.threshold if threshold is None else threshold
        queries = as_words(np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, self.keys.shape[1]))
        radii, masks, mask_ptr = self._probes(threshold)
        if self.embedded:
            kernel, keys = _kernels.mih_search_embedded, self._postings[1]
            postings = self._postings[:1]
        else:
            kernel, keys, postings = _kernels.mih_search, self.words, self._postings
        return _kernels.collect(
            kernel,
            queries,
            keys,
            self._offsets,
            *postings,
            self._offset_base,
            self._starts,
            self._widths,
            radii,
            masks,
            mask_ptr,
            threshold,
        )

    def _probes(self, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-chunk radii and the probe masks they give, worked out once per threshold."""
        if threshold not in self._probe_plans:
            radii = chunk_radii(self.layout.widths, threshold, len(self.keys), self.cost)
            masks = [_probe_masks(w, r) for w, r in zip(self.layout.widths, radii, strict=True)]
            mask_ptr = np.cumsum([0, *(len(m) for m in masks)], dtype=np.int64)
            self._probe_plans[threshold] = (np.array(radii, dtype=np.int64), np.concatenate(masks), mask_ptr)
        return self._probe_plans[threshold]


def brute_force_compiled(keys: np.ndarray, queries: np.ndarray, threshold: int) -> SearchResult:
    """Reference search by full popcount of every pair, compiled with numba: brute force at machine speed."""
    from scanner.lists import _kernels

    keys = aligned_copy(keys) if keys.ctypes.data % 64 or not keys.flags.c_contiguous else keys
    queries = as_words(np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, keys.shape[1]))
    return _kernels.collect(_kernels.brute_force_search, queries, as_words(keys), threshold)


_POPCOUNT = np.array([bin(byte).count("1") for byte in range(256)], dtype=np.uint8)
_BRUTE_FORCE_BYTES = 1 << 24  # bytes of XOR compared at a time


def brute_force(keys: np.ndarray, queries: np.ndarray, threshold: int) -> SearchResult:
    """Reference search by full popcount of every pair in numpy: the test oracle and a benchmark baseline."""
    keys = np.ascontiguousarray(keys, dtype=np.uint8)
    queries = np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, keys.shape[1])
    block = max(1, _BRUTE_FORCE_BYTES // max(1, keys.size))
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [
        (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32))
    ]
    for first in range(0, len(queries), block):
        xor = np.bitwise_xor(queries[first : first + block, None, :], keys[None, :, :])
        distance = _POPCOUNT[xor].sum(axis=2, dtype=np.int32)
        q, e = np.nonzero(distance <= threshold)
        found.append((q + first, e, distance[q, e]))
    q, e, d = (np.concatenate(column) for column in zip(*found, strict=True))
    return q.astype(np.int64), e.astype(np.int64), d.astype(np.int32)

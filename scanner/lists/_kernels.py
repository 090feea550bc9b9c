"""Numba kernels for hash lists: line packing, posting-list construction and multi-index search.

Compiled code is kept in numba's disk cache when scanner/kernelcache.py allows it (compiling costs about
3 s in each process otherwise).
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from scanner import kernelcache

CACHE = kernelcache.enabled()


@intrinsic
def popcount(typingctx, x):  # type: ignore[no-untyped-def]
    """Number of set bits of a uint64, as the CPU's popcnt instruction."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        ctpop = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(ctpop, args)

    return types.int64(types.uint64), codegen


@numba.njit(inline="always")
def chunk_value(row: np.ndarray, start: int, width: int) -> np.uint64:
    """Bits [start, start + width) of a row of uint64 words, bit 0 being the lowest bit of word 0."""
    word = start >> 6
    shift = start & 63
    value = row[word] >> np.uint64(shift)
    if shift + width > 64:
        value |= row[word + 1] << np.uint64(64 - shift)
    return value & ((np.uint64(1) << np.uint64(width)) - np.uint64(1))


@numba.njit(nogil=True, cache=CACHE)
def pack_ranges(buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray, out: np.ndarray) -> None:
    """Copy buffer[starts[i]:ends[i]] for every i, one after another, into out."""
    position = 0
    for i in range(len(starts)):
        for j in range(starts[i], ends[i]):
            out[position] = buffer[j]
            position += 1


@numba.njit(nogil=True, cache=CACHE)
def chunk_values(words: np.ndarray, start: int, width: int, out: np.ndarray) -> None:
    """out[i] = bits [start, start + width) of entry i."""
    for i in range(words.shape[0]):
        out[i] = chunk_value(words[i], start, width)


@numba.njit(nogil=True, cache=CACHE)
def sort_by_value(values: np.ndarray, first: int, offsets: np.ndarray, order: np.ndarray) -> None:
    """Counting sort of entry numbers by value into order, with offsets (len 2**width + 1) such that
    value v's entries are order[offsets[v] - first: offsets[v + 1] - first]. Offsets start at first so
    that several chunks' offsets can rise across one table."""
    offsets[0] = first
    offsets[1:] = 0
    for i in range(len(values)):
        offsets[1 + np.int64(values[i])] += 1
    for v in range(1, len(offsets)):
        offsets[v] += offsets[v - 1]
    fill = offsets[:-1] - first
    for i in range(len(values)):
        v = np.int64(values[i])
        order[fill[v]] = i
        fill[v] += 1


@intrinsic
def prefetch(typingctx, array, index):  # type: ignore[no-untyped-def]
    """Hint the CPU to start loading array.flat[index]: lets independent cache misses overlap."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
        llvm_prefetch = builder.module.declare_intrinsic("llvm.prefetch", [byte_pointer], function_type)
        address = builder.bitcast(builder.gep(data, [args[1]]), byte_pointer)
        # read access, keep in all cache levels, data (not instruction) cache
        builder.call(llvm_prefetch, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(array, types.int64), codegen


BLOCK_BITS = 8
"""Offsets are stored as one int64 per block of 2**BLOCK_BITS buckets plus a small delta per bucket."""

Offsets = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A packed offsets table: (block starts, deltas, occupied): see pack_offsets."""


@numba.njit(inline="always")
def _offset(offsets: Offsets, i: int) -> int:
    """Entry i of a packed offsets table."""
    block_starts, deltas, _ = offsets
    return block_starts[i >> BLOCK_BITS] + np.int64(deltas[i])


@numba.njit(inline="always")
def _occupied(offsets: Offsets, bucket: int) -> bool:
    """Whether a bucket has postings: a bitmap small enough to stay in cache, unlike the deltas."""
    return (offsets[2][bucket >> 6] >> np.uint64(bucket & 63)) & np.uint64(1) != 0


def pack_offsets(offsets: np.ndarray) -> Offsets:
    """Block starts, per-bucket deltas (uint16 where every block spans fewer than 65,536 postings), and a
    bitmap of the buckets that have postings."""
    block_starts = offsets[:: 1 << BLOCK_BITS].astype(np.int64)
    block_ends = offsets[np.minimum(np.arange(1, len(block_starts) + 1) << BLOCK_BITS, len(offsets)) - 1]
    narrow = np.uint16 if (block_ends - block_starts).max() < 2**16 else np.uint32
    deltas = np.empty(len(offsets), dtype=narrow)
    _fill_deltas(offsets, block_starts, deltas)
    occupied = np.packbits(offsets[1:] > offsets[:-1], bitorder="little")
    occupied = np.pad(occupied, (0, -len(occupied) % 8)).view(np.uint64)
    return block_starts, deltas, occupied


@numba.njit(nogil=True, cache=CACHE)
def _fill_deltas(offsets: np.ndarray, block_starts: np.ndarray, deltas: np.ndarray) -> None:
    for i in range(len(offsets)):
        deltas[i] = offsets[i] - block_starts[i >> BLOCK_BITS]


@numba.njit(inline="always")
def _gather_buckets(
    query: np.ndarray,
    offsets: Offsets,
    offset_base: np.ndarray,
    starts: np.ndarray,
    widths: np.ndarray,
    masks: np.ndarray,
    mask_ptr: np.ndarray,
    buckets: np.ndarray,
    ahead: np.ndarray,
) -> tuple[int, int]:
    """Fill buckets (rows lo, hi, chunk, bits the probe differs in) with the non-empty posting ranges a
    query probes, and load ahead[lo] and ahead[hi - 1] for each (what the scan reads): (bucket count, total
    postings). Three passes, each of independent reads that the CPU overlaps (offsets, then posting ranges):
    measured 1.5x faster than one pass of dependent reads (a software prefetch of the ranges instead of loads
    did not help)."""
    count = 0
    for c in range(len(starts)):
        value = chunk_value(query, starts[c], widths[c])
        for m in range(mask_ptr[c], mask_ptr[c + 1]):
            probe = offset_base[c] + np.int64(value ^ masks[m])
            if _occupied(offsets, probe):
                buckets[count, 0] = probe
                buckets[count, 2] = c
                buckets[count, 3] = popcount(masks[m])
                count += 1
                prefetch(offsets[1], probe)
    total = 0
    for b in range(count):
        probe = buckets[b, 0]
        buckets[b, 0] = _offset(offsets, probe)
        buckets[b, 1] = _offset(offsets, probe + 1)
        total += buckets[b, 1] - buckets[b, 0]
    loaded = 0
    for b in range(count):  # apart from the offsets, so that these reads do not wait on them one by one
        if buckets[b, 1] > buckets[b, 0]:
            loaded ^= np.int64(ahead[buckets[b, 0]]) ^ np.int64(ahead[buckets[b, 1] - 1])
    buckets[count, 0] = loaded
    return count, total


@numba.njit(inline="always")
def _found_earlier(
    xor: np.ndarray, c: int, starts: np.ndarray, widths: np.ndarray, radii: np.ndarray
) -> bool:
    """Whether a chunk before c is within its radius, so that chunk already reported this entry."""
    for earlier in range(c):
        if popcount(chunk_value(xor, starts[earlier], widths[earlier])) <= radii[earlier]:
            return True
    return False


INLINE_BITS = 16
"""Bits of the next chunk stored beside each posting (its lowest bits): the filter of mih_search."""


@numba.njit(inline="always")
def _next_chunk(c: int, n_chunks: int) -> int:
    return c + 1 if c + 1 < n_chunks else 0


@numba.njit(inline="always")
def _inline_value(row: np.ndarray, starts: np.ndarray, widths: np.ndarray, c: int) -> np.uint64:
    """The lowest INLINE_BITS bits (or all, if fewer) of chunk c of a row."""
    return chunk_value(row, starts[c], min(widths[c], INLINE_BITS))


@numba.njit(inline="always")
def _ring_start(xor: np.ndarray, c: int, starts: np.ndarray, widths: np.ndarray, radii: np.ndarray) -> bool:
    """Whether chunk c passes mih_search's two tests for an entry differing from the query in xor."""
    differ = popcount(chunk_value(xor, starts[c], widths[c]))
    if differ > radii[c]:
        return False
    after = _next_chunk(c, len(starts))
    return differ + popcount(_inline_value(xor, starts, widths, after)) <= radii[c] + radii[after] + 1


@numba.njit(inline="always")
def _ring_found_earlier(
    xor: np.ndarray, c: int, starts: np.ndarray, widths: np.ndarray, radii: np.ndarray
) -> bool:
    """Whether a chunk before c passes both tests, so that chunk already reported this entry."""
    earlier = 0
    while earlier < c and not _ring_start(xor, earlier, starts, widths, radii):
        earlier += 1
    return earlier < c


@numba.njit(inline="always")
def _emit(
    out_query: np.ndarray,
    out_entry: np.ndarray,
    out_distance: np.ndarray,
    row: int,
    query: int,
    entry: int,
    distance: int,
) -> bool:
    """Write one result row; False, writing nothing, when the output is full."""
    if row == len(out_query):
        return False
    out_query[row] = query
    out_entry[row] = entry
    out_distance[row] = distance
    return True


@numba.njit(inline="always")
def _filter_postings(
    buckets: np.ndarray,
    count: int,
    query_next: np.ndarray,
    inline: np.ndarray,
    ids_low: np.ndarray,
    ids_high: np.ndarray,
    radii: np.ndarray,
    candidates: np.ndarray,
) -> int:
    """Fill candidates (rows entry, chunk) with the postings of the buckets that pass the next-chunk test."""
    n_chunks = len(radii)
    found = 0
    for b in range(count):
        c = buckets[b, 2]
        bound = radii[c] + radii[_next_chunk(c, n_chunks)] + 1 - buckets[b, 3]
        next_value = query_next[c]
        passing = 0
        for p in range(buckets[b, 0], buckets[b, 1]):  # branch-free, so it vectorises
            passing += popcount(next_value ^ np.uint64(inline[p])) <= bound
        if passing == 0:
            continue
        for p in range(buckets[b, 0], buckets[b, 1]):
            if popcount(next_value ^ np.uint64(inline[p])) <= bound:
                candidates[found, 0] = p
                candidates[found, 1] = c
                found += 1
    for i in range(found):  # apart from the scan, so these random reads overlap
        p = candidates[i, 0]
        candidates[i, 0] = np.int64(ids_low[p]) | (np.int64(ids_high[p]) << 16)
    return found


@numba.njit(nogil=True, cache=CACHE)
def mih_search(
    queries: np.ndarray,
    first_query: int,
    out_query: np.ndarray,
    out_entry: np.ndarray,
    out_distance: np.ndarray,
    words: np.ndarray,
    offsets: Offsets,
    ids_low: np.ndarray,
    ids_high: np.ndarray,
    inline: np.ndarray,
    offset_base: np.ndarray,
    starts: np.ndarray,
    widths: np.ndarray,
    radii: np.ndarray,
    masks: np.ndarray,
    mask_ptr: np.ndarray,
    threshold: int,
) -> tuple[int, int]:
    """Search queries from first_query on until the output is full: (next query, rows written).

    Pigeonring filter: with radii summing to threshold - chunks + 1, an entry within threshold has a chunk
    c within radii[c] of the query whose next chunk (cyclically) keeps the pair within radii[c] +
    radii[c + 1] + 1 (cycle lemma on d[c] - radii[c] - 1, whose sum is negative). Chunk c's postings carry
    the low bits of the next chunk (inline), so probed buckets are scanned in sequence and only about one
    posting in a hundred is read at random (entry number, then key) and verified. Each match is written
    once, by the first chunk passing both tests; a query's rows are written whole or not at all, so the
    caller can grow the output and resume at the returned query.
    """
    n_words = words.shape[1]
    n_chunks = len(starts)
    written = 0
    buckets = np.empty((len(masks) + 1, 4), dtype=np.int64)
    query_next = np.empty(n_chunks, dtype=np.uint64)
    candidates = np.empty((1024, 2), dtype=np.int64)
    xor = np.empty(n_words, dtype=np.uint64)
    for q in range(first_query, queries.shape[0]):
        for c in range(n_chunks):
            query_next[c] = _inline_value(queries[q], starts, widths, _next_chunk(c, n_chunks))
        count, total = _gather_buckets(
            queries[q], offsets, offset_base, starts, widths, masks, mask_ptr, buckets, inline
        )
        if total > len(candidates):
            candidates = np.empty((total, 2), dtype=np.int64)
        found = _filter_postings(buckets, count, query_next, inline, ids_low, ids_high, radii, candidates)
        query = queries[q]
        query_start = written
        for i in range(found):
            entry = candidates[i, 0]
            distance = 0
            for w in range(n_words):
                xor[w] = query[w] ^ words[entry, w]
                distance += popcount(xor[w])
            if distance > threshold or _ring_found_earlier(xor, candidates[i, 1], starts, widths, radii):
                continue
            if not _emit(out_query, out_entry, out_distance, written, q, entry, distance):
                return q, query_start
            written += 1
    return queries.shape[0], written


@numba.njit(nogil=True, cache=CACHE)
def mih_search_embedded(
    queries: np.ndarray,
    first_query: int,
    out_query: np.ndarray,
    out_entry: np.ndarray,
    out_distance: np.ndarray,
    posted_keys: np.ndarray,
    offsets: Offsets,
    postings: np.ndarray,
    offset_base: np.ndarray,
    starts: np.ndarray,
    widths: np.ndarray,
    radii: np.ndarray,
    masks: np.ndarray,
    mask_ptr: np.ndarray,
    threshold: int,
) -> tuple[int, int]:
    """As mih_search, for 64-bit hashes whose postings carry each entry's key (posted_keys[p]) beside
    its number: candidates are verified where they lie, in sequence, with no random read of the key."""
    written = 0
    buckets = np.empty((len(masks) + 1, 4), dtype=np.int64)
    xor = np.empty(1, dtype=np.uint64)
    for q in range(first_query, queries.shape[0]):
        query = queries[q]
        key = query[0]
        count, _ = _gather_buckets(
            query, offsets, offset_base, starts, widths, masks, mask_ptr, buckets, posted_keys
        )
        query_start = written
        for b in range(count):
            for p in range(buckets[b, 0], buckets[b, 1]):
                distance = popcount(key ^ posted_keys[p])
                if distance > threshold:
                    continue
                xor[0] = key ^ posted_keys[p]
                if _found_earlier(xor, buckets[b, 2], starts, widths, radii):
                    continue
                if not _emit(out_query, out_entry, out_distance, written, q, postings[p], distance):
                    return q, query_start
                written += 1
    return queries.shape[0], written


@numba.njit(nogil=True, cache=CACHE)
def brute_force_search(
    queries: np.ndarray,
    first_query: int,
    out_query: np.ndarray,
    out_entry: np.ndarray,
    out_distance: np.ndarray,
    words: np.ndarray,
    threshold: int,
) -> tuple[int, int]:
    """Every entry's full distance to every query, compiled: a second oracle and a benchmark baseline.
    Resumable like mih_search."""
    n, n_words = words.shape
    written = 0
    for q in range(first_query, queries.shape[0]):
        query = queries[q]
        query_start = written
        for entry in range(n):
            distance = 0
            for w in range(n_words):
                distance += popcount(query[w] ^ words[entry, w])
            if distance > threshold:
                continue
            if not _emit(out_query, out_entry, out_distance, written, q, entry, distance):
                return q, query_start
            written += 1
    return queries.shape[0], written


def collect(
    kernel: Callable[..., tuple[int, int]], queries: np.ndarray, *args: object
) -> tuple[np.ndarray, ...]:
    """Run a resumable search kernel over all queries, growing the output buffers until everything fits."""
    capacity = max(1024, 4 * len(queries))
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    first = 0
    while True:
        out = (np.empty(capacity, np.int64), np.empty(capacity, np.int64), np.empty(capacity, np.int32))
        first, written = kernel(queries, first, *out, *args)
        parts.append(tuple(a[:written] for a in out))
        if first == len(queries):
            break
        if written == 0:
            capacity *= 4
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))

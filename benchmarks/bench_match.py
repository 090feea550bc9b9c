"""Hamming search benchmark: the scanner's MIH index against brute force, faiss and pytx's faiss setup.

Random lists of PDQ (256-bit, threshold 31) and 64-bit (pHash/dHash, threshold 10) hashes, queried with
planted near-duplicates at every distance 0..threshold and with random hashes. One core: numba and faiss
are held to one thread. Slow baselines run on a prefix of the queries (the "queries" column) until a time
budget is spent; their q/s is measured on that prefix.

    python benchmarks/bench_match.py                      # the full table: PDQ 1M, 10M; 64-bit, md5 10M
    python benchmarks/bench_match.py --sizes 1000000      # PDQ, 64-bit and md5 at 1M only

Columns: build s; resident MB (RSS growth while building, plus the keys for methods that search the
caller's array in place); q/s; recall (planted pairs found / planted); chance (pairs within the threshold
that were not planted: real near-duplicates in random data); false (pairs returned beyond the threshold).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import faiss
import numba
import numpy as np

from scanner.lists.index import (
    ExactIndex,
    HammingIndex,
    aligned_empty,
    brute_force,
    brute_force_compiled,
    choose_layout,
)

Search = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
T = TypeVar("T")


@dataclass(frozen=True)
class Case:
    n_bits: int
    n_entries: int
    threshold: int

    @property
    def label(self) -> str:
        kind = "PDQ" if self.n_bits == 256 else f"{self.n_bits}-bit"
        return f"{kind} {self.n_entries:,} t={self.threshold}"


@dataclass(frozen=True)
class Workload:
    keys: np.ndarray
    queries: np.ndarray
    planted: set[tuple[int, int]]  # (query, entry) pairs made by flipping bits of that entry


@dataclass(frozen=True)
class Row:
    method: str
    build_s: float
    resident_mb: float
    queries: int
    qps: float
    recall: float
    chance: int
    false: int
    note: str = ""


def rss_bytes() -> int:
    """Resident memory of this process."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_workload(case: Case, per_distance: int, random_queries: int, seed: int) -> Workload:
    """Random keys, planted queries at each distance 0..threshold, random queries; shuffled together."""
    rng = np.random.default_rng(seed)
    n_bytes = case.n_bits // 8
    keys = aligned_empty((case.n_entries, n_bytes))
    for first in range(0, case.n_entries, 1 << 22):
        block = keys[first : first + (1 << 22)]
        block[:] = rng.integers(0, 256, block.shape, dtype=np.uint8)
    planted_rows = []
    sources = rng.choice(case.n_entries, (case.threshold + 1) * per_distance, replace=False)
    for i, entry in enumerate(sources):
        bits = np.unpackbits(keys[entry])
        flips = rng.choice(case.n_bits, i // per_distance, replace=False)
        bits[flips] ^= 1
        planted_rows.append(np.packbits(bits))
    randoms = rng.integers(0, 256, (random_queries, n_bytes), dtype=np.uint8)
    queries = np.vstack([*planted_rows, randoms])
    order = rng.permutation(len(queries))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    planted = {(int(position[i]), int(entry)) for i, entry in enumerate(sources)}
    return Workload(keys, np.ascontiguousarray(queries[order]), planted)


def run(
    method: str,
    workload: Workload,
    case: Case,
    build: Callable[[Workload, Case], Search],
    shares_keys: bool,
    budget: float,
) -> Row:
    """Build one method, search in batches until done or over budget, and score what it returned."""
    before = rss_bytes()
    started = time.perf_counter()
    search = build(workload, case)
    build_s = time.perf_counter() - started
    resident = rss_bytes() - before + (workload.keys.nbytes if shares_keys else 0)
    search(workload.queries[:2])  # compile and warm up outside the timing
    done, elapsed, found = 0, 0.0, []
    batch = 10
    while done < len(workload.queries) and elapsed < budget:
        chunk = workload.queries[done : done + batch]
        started = time.perf_counter()
        q, e, d = search(chunk)
        elapsed += time.perf_counter() - started
        found.append((q + done, e, d))
        done += len(chunk)
        batch = min(batch * 2, 4096)
    q, e, d = (np.concatenate(column) for column in zip(*found, strict=True))
    return score(method, workload, case, build_s, resident, done, elapsed, q, e, d)


def score(
    method: str,
    workload: Workload,
    case: Case,
    build_s: float,
    resident: int,
    done: int,
    elapsed: float,
    q: np.ndarray,
    e: np.ndarray,
    d: np.ndarray,
) -> Row:
    pairs = set(zip(q.tolist(), e.tolist(), strict=True))
    planted = {pair for pair in workload.planted if pair[0] < done}
    true_distance = np.unpackbits(workload.queries[q] ^ workload.keys[e], axis=1).sum(axis=1)
    false = int(np.count_nonzero((true_distance > case.threshold) | (true_distance != d)))
    recall = len(planted & pairs) / len(planted) if planted else float("nan")
    chance = len(pairs - planted) - false
    note = "" if done == len(workload.queries) else f"prefix of {len(workload.queries)}"
    return Row(method, build_s, resident / 2**20, done, done / elapsed, recall, chance, false, note)


def ours(workload: Workload, case: Case) -> Search:
    index = HammingIndex(workload.keys, case.threshold)
    return index.search


def numpy_brute_force(workload: Workload, case: Case) -> Search:
    return lambda queries: brute_force(workload.keys, queries, case.threshold)


def numba_brute_force(workload: Workload, case: Case) -> Search:
    return lambda queries: brute_force_compiled(workload.keys, queries, case.threshold)


def faiss_results(lims: np.ndarray, distances: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    query = np.repeat(np.arange(len(lims) - 1), np.diff(lims).astype(np.int64))
    return query, labels.astype(np.int64), distances.astype(np.int32)


def faiss_flat(workload: Workload, case: Case) -> Search:
    index = faiss.IndexBinaryFlat(case.n_bits)
    index.add(workload.keys)
    return lambda queries: faiss_results(*index.range_search(queries, case.threshold + 1))


def pytx_multihash(workload: Workload, case: Case) -> Search:
    """python-threatexchange's PDQ index: 16 sub-hashes, nflip = threshold // 16, range search."""
    index = faiss.IndexBinaryMultiHash(case.n_bits, 16, case.n_bits // 16)
    index.nflip = case.threshold // 16
    index.add(workload.keys)
    return lambda queries: faiss_results(*index.range_search(queries, case.threshold + 1))


METHODS: tuple[tuple[str, Callable[[Workload, Case], Search], bool], ...] = (
    ("scanner MIH", ours, True),
    ("numpy brute force", numpy_brute_force, True),
    ("numba brute force", numba_brute_force, True),
    ("faiss IndexBinaryFlat", faiss_flat, False),
    ("pytx faiss MultiHash", pytx_multihash, False),
)


def print_table(case: Case, rows: list[Row]) -> None:
    layout = choose_layout(case.n_bits, case.n_entries, case.threshold, embedded=case.n_bits == 64)
    chunks = f"{len(layout.widths)} chunks of {min(layout.widths)}-{max(layout.widths)} bits"
    print(
        f"\n{case.label}   (keys {case.n_entries * case.n_bits // 8 / 2**20:,.0f} MB; scanner MIH: {chunks})"
    )
    header = f"{'method':<22} {'build s':>8} {'resident MB':>12} {'queries':>8} {'q/s':>10} {'recall':>7}"
    print(header + f" {'chance':>7} {'false':>6}  note")
    for r in rows:
        print(
            f"{r.method:<22} {r.build_s:>8.1f} {r.resident_mb:>12,.0f} {r.queries:>8}"
            f" {r.qps:>10,.{int(r.qps < 10)}f}"
            f" {r.recall:>7.3f} {r.chance:>7} {r.false:>6}  {r.note}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], help="list sizes for both kinds"
    )
    parser.add_argument("--per-distance", type=int, default=32, help="planted queries per distance")
    parser.add_argument("--random-queries", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of searching per slow baseline")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    numba.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    pdq_sizes = args.sizes or [1_000_000, 10_000_000]
    short_sizes = args.sizes or [10_000_000]
    cases = [Case(256, n, 31) for n in pdq_sizes] + [Case(64, n, 10) for n in short_sizes]
    print(f"one thread; {args.per_distance} planted queries per distance + {args.random_queries} random")
    started = time.perf_counter()
    for n_bytes in (32, 8):  # compile the numba kernels once, outside every timing
        keys, query = np.zeros((64, n_bytes), np.uint8), np.zeros((1, n_bytes), np.uint8)
        HammingIndex(keys, 10).search(query)
        brute_force_compiled(keys, query, 10)
    compile_s = time.perf_counter() - started
    print(f"scanner MIH: numba compiles in {compile_s:.1f} s, once per process (not in build s)")
    global _JOB
    for case in cases:
        _JOB = (make_workload(case, args.per_distance, args.random_queries, args.seed), case)
        print_table(case, [in_fresh_process(run_method, i, args.budget) for i in range(len(METHODS))])
        _JOB = None
        gc.collect()
    for n_entries in short_sizes:
        print(in_fresh_process(exact_md5, n_entries, args.seed))


_JOB: tuple[Workload, Case] | None = None
"""The workload being measured: set before forking, so each method's process inherits it unpickled."""


def in_fresh_process(function: Callable[..., T], *args: object) -> T:
    """Call a function in a forked process: its memory growth is its own, and is all given back after."""
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(function, args)


def run_method(index: int, budget: float) -> Row:
    assert _JOB is not None
    faiss.omp_set_num_threads(1)
    name, build, shares_keys = METHODS[index]
    return run(name, *_JOB, build, shares_keys, budget)


def exact_md5(n_entries: int, seed: int, n_queries: int = 100_000) -> str:
    """The exact index on md5-sized keys: half the queries are list entries, half are not."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 256, (n_entries, 16), dtype=np.uint8)
    queries = np.vstack(
        [
            keys[rng.choice(n_entries, n_queries // 2)],
            rng.integers(0, 256, (n_queries // 2, 16), dtype=np.uint8),
        ]
    )
    before = rss_bytes()
    started = time.perf_counter()
    index = ExactIndex(keys)
    build_s = time.perf_counter() - started
    resident = (rss_bytes() - before + keys.nbytes) / 2**20
    started = time.perf_counter()
    q, _, _ = index.search(queries)
    qps = n_queries / (time.perf_counter() - started)
    return (
        f"\nmd5 exact {n_entries:,}   (keys {keys.nbytes / 2**20:,.0f} MB)\n"
        f"{'method':<22} {'build s':>8} {'resident MB':>12} {'queries':>8} {'q/s':>10}"
        f" {'found':>7} expected\n"
        f"{'scanner ExactIndex':<22} {build_s:>8.1f} {resident:>12,.0f} {n_queries:>8} {qps:>10,.0f}"
        f" {len(q):>7} {n_queries // 2}"
    )


if __name__ == "__main__":
    main()

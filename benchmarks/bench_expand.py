"""`scanner expand` at scale: a synthetic hashes.parquet of random PDQ, pHash and dHash hashes with planted
near-duplicates of the seed rows, expanded by the real command in a child process.

    python benchmarks/bench_expand.py                           # 10M stored rows, 1,000 seeds
    python benchmarks/bench_expand.py --rows 1000000 --seeds 100

Each seed (a row of matches.jsonl) gets --neighbours planted rows per hash type, at random distances from 0
to the threshold (the threshold itself included), at rows that are neither seeds nor other plants. Prints
the time of the expansion (`scanner.audits.expand.expand`: reading hashes.parquet, the three self-joins,
writing expanded.jsonl), its peak RSS (the child's ru_maxrss), and the recall of the planted neighbours:
each must be found at no more than its planted distance (1.0, or the benchmark fails). Chance pairs
(random rows within the threshold of a seed, found too) are counted apart. The data is written to a
temporary directory (about 1.3 GB for 10M rows) and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scanner.reports.hashes import ROW_GROUP_ROWS, hashes_schema

THRESHOLDS = {"pdq": 31, "phash": 8, "dhash": 8}
WIDTHS = {"pdq": 32, "phash": 8, "dhash": 8}
SHARD_ROWS = 1_000_000
WRITE_ROWS = 1 << 20
# The child: expand() itself (the command adds report.html, which needs a real scan's other reports).
CHILD = """
import sys
from scanner.audits.expand import ExpandSettings, expand
from scanner.outcomes import SeedSource
found = expand(sys.argv[1], ExpandSettings(SeedSource.MATCH, {"pdq": 31, "phash": 8, "dhash": 8}))
print(f"seeds {found.seeds}, candidate rows {found.rows}, records {found.records}")
"""
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)


def hex_array(keys: np.ndarray) -> pa.Array:
    """(N, nbytes) uint8 as an Arrow string array of lower-case hex, built from buffers."""
    n, nbytes = keys.shape
    text = np.empty((n, 2 * nbytes), np.uint8)
    text[:, 0::2] = _HEX_DIGITS[keys >> 4]
    text[:, 1::2] = _HEX_DIGITS[keys & 15]
    offsets = np.arange(0, 2 * nbytes * (n + 1), 2 * nbytes, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])


def flip(key: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of key with exactly `bits` bits flipped."""
    copy = key.copy()
    for bit in rng.choice(8 * len(key), bits, replace=False):
        copy[bit // 8] ^= np.uint8(1 << (bit % 8))
    return copy


def plant(keys: dict[str, np.ndarray], seeds: np.ndarray, neighbours: int, rng: np.random.Generator) -> dict:
    """Plant near-duplicates of each seed in each type: (type, row) -> (seed row, planted distance)."""
    taken = np.zeros(len(keys["pdq"]), bool)
    taken[seeds] = True
    free = np.flatnonzero(~taken)
    rows = rng.choice(free, len(seeds) * neighbours * len(keys), replace=False)
    planted, at = {}, 0
    for name, array in keys.items():
        for seed in seeds.tolist():
            for _ in range(neighbours):
                distance = int(rng.integers(0, THRESHOLDS[name] + 1))
                array[rows[at]] = flip(array[seed], distance, rng)
                planted[(name, int(rows[at]))] = (seed, distance)
                at += 1
    return planted


def write_hashes(path: Path, keys: dict[str, np.ndarray]) -> None:
    """A hashes.parquet of the real schema: shards of SHARD_ROWS rows, the three perceptual types set."""
    schema = hashes_schema()
    n = len(keys["pdq"])
    with pq.ParquetWriter(path, schema) as writer:
        for first in range(0, n, WRITE_ROWS):
            stop = min(n, first + WRITE_ROWS)
            index = np.arange(first, stop, dtype=np.int64)
            shard = pc.binary_join_element_wise(
                "shard-", pc.cast(pa.array(index // SHARD_ROWS), pa.string()), ""
            )
            columns = {name: pa.nulls(stop - first, schema.field(name).type) for name in schema.names}
            columns["shard"] = shard
            columns["row"] = pa.array(index % SHARD_ROWS)
            columns["url"] = pc.binary_join_element_wise(
                "http://example.invalid/", pc.cast(pa.array(index), pa.string()), ".jpg", ""
            )
            columns["key"] = pc.cast(pa.array(index), pa.string())
            for name, array in keys.items():
                columns[name] = hex_array(array[first:stop])
            columns["pdq_quality"] = pa.array(np.full(stop - first, 100, np.int32))
            table = pa.table([columns[name] for name in schema.names], schema=schema)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)


def build(out: Path, rows: int, seeds: int, neighbours: int, seed: int) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = {name: rng.integers(0, 256, (rows, width), dtype=np.uint8) for name, width in WIDTHS.items()}
    seed_rows = np.sort(rng.choice(rows, seeds, replace=False))
    planted = plant(keys, seed_rows, neighbours, rng)
    write_hashes(out / "hashes.parquet", keys)
    with open(out / "matches.jsonl", "w", encoding="utf-8") as handle:
        for row in seed_rows.tolist():
            record = {"shard": f"shard-{row // SHARD_ROWS}", "row": row % SHARD_ROWS, "list": "bench"}
            handle.write(json.dumps(record) + "\n")
    return planted, seed_rows


def recall(out: Path, planted: dict) -> tuple[float, int]:
    """Share of planted (type, row) found at no more than the planted distance; other records found."""
    found = {}
    with open(out / "expanded.jsonl", encoding="utf-8") as handle:
        for line in handle:
            r = json.loads(line)
            position = int(r["shard"].removeprefix("shard-")) * SHARD_ROWS + r["row"]
            found[(r["hash_type"], position)] = r["distance"]
    hits = sum(1 for key, (_, d) in planted.items() if key in found and found[key] <= d)
    return hits / len(planted), len(found) - hits


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--neighbours", type=int, default=3, help="planted rows per seed and hash type")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--dir", default=None, help="where the synthetic scan goes (default: a temporary dir)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        out = Path(tmp) / "scan"
        out.mkdir(mode=0o700)
        started = time.perf_counter()
        planted, _ = build(out, args.rows, args.seeds, args.neighbours, args.seed)
        built = time.perf_counter() - started
        print(f"built {args.rows:,} rows, {args.seeds:,} seeds, {len(planted):,} planted in {built:.1f} s")
        started = time.perf_counter()
        command = [sys.executable, "-c", CHILD, str(out)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode:
            sys.exit(f"scanner expand failed ({done.returncode}): {done.stderr}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        found, chance = recall(out, planted)
        print(done.stdout.strip())
        print(
            f"expand: {elapsed:.1f} s, peak RSS {peak:,.0f} MiB, recall of planted neighbours {found:.4f}, "
            f"{chance} chance records, on {os.cpu_count()} cores"
        )
        if found != 1.0:
            sys.exit("recall below 1.0: a planted neighbour was missed")


if __name__ == "__main__":
    main()

"""scanner expand: the rows of a finished scan whose stored perceptual hashes lie near a seed row's.

Seeds are the scan's matched rows (`--from match`) or the rows a reviewer confirmed (`--from confirmed`,
read from the verdicts file by `confirmed_rows`). Every stored row with a PDQ, pHash or dHash within the
threshold of a seed's hash of the same type is a candidate: an exact self-join over hashes.parquet through
the lists' multi-index Hamming index (every row within the threshold is found, none guessed), with no
network and no image. PDQ hashes below the minimum quality are left out on both sides, as matching does.
Candidates go to expanded.jsonl (scanner.reports.expanded), nearest seed per hash type; they are never
matches and change no outcome.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scanner.errors import InputError
from scanner.hashtypes import REGISTRY
from scanner.lists.index import HammingIndex
from scanner.outcomes import SeedSource, Verdict
from scanner.reports import jsonl
from scanner.reports.expanded import write_expanded
from scanner.reports.hashes import open_hashes
from scanner.reports.verdicts import VERDICTS_FILE, Verdicts, url_sha256

CONFIRMED = Verdict.CONFIRMED.value

EXPAND_TYPES = ("pdq", "phash", "dhash")
PAIR_BUDGET = 1 << 25  # (seed, row) pairs one search may return: seeds go in batches that stay under it
_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class ExpandSettings:
    """What `scanner expand` was asked: where the seeds come from, each type's threshold (bits, inclusive),
    and the PDQ quality below which a hash is left out."""

    source: SeedSource
    thresholds: dict[str, int]
    pdq_min_quality: int = 50


@dataclass(slots=True)
class TypeHashes:
    """One hash type's stored hashes: (N, nbytes) keys and the hashes.parquet position of each."""

    positions: list[np.ndarray] = field(default_factory=list)
    keys: list[np.ndarray] = field(default_factory=list)

    def joined(self, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.keys:
            return np.zeros(0, np.int64), np.zeros((0, nbytes), np.uint8)
        return np.concatenate(self.positions), np.concatenate(self.keys)


@dataclass(slots=True)
class Expansion:
    """What an expansion found and where it wrote it."""

    path: Path
    seeds: int  # seed rows found in hashes.parquet
    missing_seeds: int  # seed rows named but not found there (or whose URL no longer matches)
    records: int
    rows: int  # distinct candidate rows
    by_hash_type: Counter


def expand(out_dir: str | Path, settings: ExpandSettings) -> Expansion:
    """Find the candidates of the scan in out_dir and write out_dir/expanded.jsonl."""
    out = Path(out_dir)
    stored = open_hashes(out)
    wanted = seed_rows(out, settings.source)
    types = [name for name in EXPAND_TYPES if name in settings.thresholds]
    seeds, hashes = _read_stored(stored, wanted, types, settings.pdq_min_quality)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
    for order, name in enumerate(types):
        positions, keys = hashes[name].joined(REGISTRY[name].nbytes)
        rows, nearest, distance = near_seeds(keys, positions, seeds, settings.thresholds[name])
        found.append((rows, nearest, distance, order))
    records = list(_records(stored, seeds, found, types, settings.thresholds))
    path, count = write_expanded(out, records)
    by_type = Counter(record["hash_type"] for record in records)
    distinct = len({(record["shard"], record["row"]) for record in records})
    return Expansion(path, len(seeds), len(wanted) - len(seeds), count, distinct, by_type)


def seed_rows(out: Path, source: SeedSource) -> dict[tuple[str, int], str | None]:
    """The seed rows, (shard, row) -> the SHA-256 of the URL they must still have (None: not checked)."""
    if source == SeedSource.CONFIRMED:
        return confirmed_rows(out)
    path = out / "matches.jsonl"
    if not path.is_file():
        raise InputError(str(path), "no such file: expand reads the matches of a finished scan")
    return {(str(m["shard"]), int(m["row"])): None for m in jsonl.read_records(path)}


def confirmed_rows(out: Path) -> dict[tuple[str, int], str | None]:
    """The rows whose latest verdict is `confirmed` (reports/verdicts.py: `scanner review import`), each with
    the URL digest it was recorded against, so a verdict never seeds a reshuffled row."""
    if not (out / VERDICTS_FILE).is_file():
        path = out / VERDICTS_FILE
        raise InputError(str(path), "no verdicts recorded: run scanner review import first, or --from match")
    latest = Verdicts.load(out).latest
    return {
        key: record.get("url_sha256") for key, record in latest.items() if record.get("verdict") == CONFIRMED
    }


def _read_stored(
    stored: pq.ParquetFile, wanted: dict[tuple[str, int], str | None], types: list[str], min_quality: int
) -> tuple[dict[int, tuple[str, int]], dict[str, TypeHashes]]:
    """One pass over hashes.parquet: the seeds' positions, and every row's hashes of each type as bytes."""
    seeds: dict[int, tuple[str, int]] = {}
    hashes = {name: TypeHashes() for name in types}
    wanted_rows = pa.array(sorted({row for _, row in wanted}), pa.int64())
    columns = ["shard", "row", "url", *types, *(["pdq_quality"] if "pdq" in types else [])]
    first = 0
    for batch in stored.iter_batches(columns=columns, batch_size=1 << 16):
        _find_seeds(batch, first, wanted, wanted_rows, seeds)
        for name in types:
            valid = pc.is_valid(batch.column(name))
            if name == "pdq":
                valid = pc.and_(valid, pc.greater_equal(batch.column("pdq_quality"), min_quality))
            valid = pc.fill_null(valid, False)
            hashes[name].positions.append(first + np.flatnonzero(valid.to_numpy(zero_copy_only=False)))
            hashes[name].keys.append(hex_keys(pc.filter(batch.column(name), valid), name, stored))
        first += batch.num_rows
    return seeds, hashes


def _find_seeds(
    batch: pa.RecordBatch,
    first: int,
    wanted: dict[tuple[str, int], str | None],
    wanted_rows: pa.Array,
    seeds: dict[int, tuple[str, int]],
) -> None:
    """Add the batch's seed rows (position -> (shard, row)); a seed whose URL digest differs is not one."""
    maybe = np.flatnonzero(
        pc.is_in(batch.column("row"), value_set=wanted_rows).to_numpy(zero_copy_only=False)
    )
    for i in maybe.tolist():
        key = (batch.column("shard")[i].as_py(), batch.column("row")[i].as_py())
        if key not in wanted:
            continue
        digest = wanted[key]
        if digest is None or digest == url_sha256(batch.column("url")[i].as_py()):
            seeds[first + i] = key


def hex_keys(column: pa.Array, name: str, where: object) -> np.ndarray:
    """Lower- or upper-case hex strings (no nulls) as an (N, nbytes) uint8 array, decoded in bulk."""
    nbytes = REGISTRY[name].nbytes
    array = column.cast(pa.string())
    if len(array) == 0:
        return np.zeros((0, nbytes), np.uint8)
    offsets = np.frombuffer(array.buffers()[1], np.int32, len(array) + 1, array.offset * 4)
    if np.any(np.diff(offsets) != 2 * nbytes):
        raise InputError(str(where), f"a {name} value is not {2 * nbytes} hex digits")
    text = np.frombuffer(array.buffers()[2], np.uint8, offsets[-1] - offsets[0], offsets[0])
    nibbles = _HEX[text].reshape(-1, nbytes, 2)
    if np.any(nibbles == 255):
        raise InputError(str(where), f"a {name} value is not hex")
    return (nibbles[:, :, 0] << 4) | nibbles[:, :, 1]


def near_seeds(
    keys: np.ndarray, positions: np.ndarray, seeds: dict[int, tuple[str, int]], threshold: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every row (by position) within threshold of a seed, with its nearest seed's position and the
    distance (ties: the seed stored first); seed rows themselves are left out."""
    seed_index = np.flatnonzero(np.isin(positions, np.fromiter(seeds, np.int64, len(seeds))))
    empty = np.zeros(0, np.int64)
    if len(seed_index) == 0 or len(keys) == 0:
        return empty, empty, np.zeros(0, np.int32)
    index = HammingIndex(keys, threshold)
    best = np.full(len(keys), threshold + 1, np.int32)
    nearest = np.full(len(keys), -1, np.int64)
    batch = max(1, PAIR_BUDGET // len(keys))
    for start in range(0, len(seed_index), batch):
        chosen = seed_index[start : start + batch]
        query, entry, distance = index.search(keys[chosen])
        # Farthest first, later seeds first: the last write of a row is its nearest, earliest seed.
        order = np.lexsort((-query, -distance))
        query, entry, distance = query[order], entry[order], distance[order]
        closer = distance < best[entry]
        best[entry[closer]] = distance[closer]
        nearest[entry[closer]] = chosen[query[closer]]
    best[seed_index] = threshold + 1
    found = np.flatnonzero(best <= threshold)
    return positions[found], positions[nearest[found]], best[found]


def _records(
    stored: pq.ParquetFile,
    seeds: dict[int, tuple[str, int]],
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]],
    types: list[str],
    thresholds: dict[str, int],
) -> Iterator[dict]:
    """expanded.jsonl's records in stored order, a row's hash types together in EXPAND_TYPES order."""
    rows = np.concatenate([f[0] for f in found]) if found else np.zeros(0, np.int64)
    seeds_at = np.concatenate([f[1] for f in found]) if found else rows
    distance = np.concatenate([f[2] for f in found]) if found else rows
    kind = np.concatenate([np.full(len(f[0]), f[3]) for f in found]) if found else rows
    order = np.lexsort((kind, rows))
    described = _describe(stored, np.unique(rows))
    for i in order.tolist():
        shard, row, url, key = described[int(rows[i])]
        seed_shard, seed_row = seeds[int(seeds_at[i])]
        name = types[int(kind[i])]
        yield {
            "shard": shard,
            "row": row,
            "url": url,
            "key": key,
            "hash_type": name,
            "distance": int(distance[i]),
            "threshold": thresholds[name],
            "seed_shard": seed_shard,
            "seed_row": seed_row,
        }


def _describe(stored: pq.ParquetFile, positions: np.ndarray) -> dict[int, tuple]:
    """(shard, row, url, key) of the rows at these sorted positions, reading only their row groups."""
    described: dict[int, tuple] = {}
    first = 0
    meta = stored.metadata
    for group in range(meta.num_row_groups):
        size = meta.row_group(group).num_rows
        inside = positions[(positions >= first) & (positions < first + size)]
        if len(inside):
            table = stored.read_row_group(group, columns=["shard", "row", "url", "key"])
            picked = table.take(pa.array(inside - first)).to_pylist()
            described.update(
                (int(p), (r["shard"], r["row"], r["url"], r["key"]))
                for p, r in zip(inside.tolist(), picked, strict=True)
            )
        first += size
    return described

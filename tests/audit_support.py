"""Shared by the audit tests (screen, rematch, rescan, clean): real shards, real lists, real scans."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from images import encode, make_image

from scanner.config import build_config
from scanner.run.lifecycle import ScanResult
from scanner.runners.local import scan


def images(count: int, first_seed: int = 100) -> list[bytes]:
    """Distinct, textured JPEGs (PDQ quality 100), generated in memory."""
    return [encode(make_image(first_seed + i, (160, 120)), "JPEG") for i in range(count)]


def write_shard(path: Path, columns: dict[str, list], row_group_size: int | None = None) -> Path:
    """A Parquet shard of the given columns."""
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def write_list(path: Path, lines: list[str]) -> Path:
    """A list file, one entry a line."""
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def run_scan(shard: Path | list[Path], out: Path, hashlists: list[str], **sections: dict) -> ScanResult:
    """A real local scan (one hashing process) of one shard, or several, into out, loopback allowed."""
    data = {
        "inputs": [str(path) for path in (shard if isinstance(shard, list) else [shard])],
        "out": str(out),
        "hashlist": hashlists,
        "fetch": {"allow_private_networks": True},
        "run": {"progress": False, "workers": 1},
        **sections,
    }
    return scan(build_config(data, "test"), restart=True)


def outcomes(out: Path) -> list[str]:
    """The outcome of every row, in row order."""
    return pq.read_table(out / "outcomes.parquet").column("outcome").to_pylist()


def matches(out: Path) -> list[dict]:
    """matches.jsonl as records."""
    return [json.loads(line) for line in (out / "matches.jsonl").read_text().splitlines()]


def matched_entries(out: Path) -> list[tuple[int, str, str, str]]:
    """(row, list, hash type, entry id) of every match, in file order."""
    return [(m["row"], m["list"], m["hash_type"], m["entry_id"]) for m in matches(out)]

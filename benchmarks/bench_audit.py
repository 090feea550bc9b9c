"""Audit costs without the network: URL normalisation, pre-fetch screening, and rematch of stored records.

Real URLs from the shared img2dataset fixtures (parsed only, never fetched), synthetic lists and records.

    python benchmarks/bench_audit.py     # 1M url_sha256 + 100k domains; 1M url + 1M domain lists; 200k rows
    python benchmarks/bench_audit.py --rows 50000 --list-size 100000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scanner.audits.rematch import rematch
from scanner.config import build_config
from scanner.lists import DuplicateHashWarning, Matcher, load_hashlist
from scanner.reports.hashes import HASHES_SCHEMA
from scanner.screen import Screen
from scanner.sources import Row
from scanner.urls.normal import normalise

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "url-lists" / "test_10000.parquet"


def real_urls() -> list[str]:
    return [u for u in pq.read_table(SHARED.resolve(), columns=["URL"]).column("URL").to_pylist() if u]


def timed(label: str, count: int, run) -> object:
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    print(f"{label:<44} {count:>9,} in {seconds:7.2f} s  {count / seconds:>11,.0f} /s")
    return result


def bench_normalise(urls: list[str]) -> None:
    def run() -> int:
        failed = 0
        for url in urls:
            try:
                normalise(url)
            except ValueError:
                failed += 1
        return failed

    failed = timed("normalise (real URLs)", len(urls), run)
    print(f"  without a normal form: {failed}")


def bench_screen(urls: list[str], list_size: int, tmp: Path) -> None:
    rng = np.random.default_rng(1)
    digests = tmp / "urls.txt"
    listed = [hashlib.sha256(normalise(u).text.encode()).hexdigest() for u in urls[:50]]
    random = (bytes(row).hex() for row in rng.integers(0, 256, (list_size, 32), dtype=np.uint8))
    digests.write_text("\n".join([*listed, *random]) + "\n")
    domains = tmp / "domains.txt"
    domains.write_text("\n".join(f"host{i}.example{i % 97}.com" for i in range(list_size // 10)) + "\n")
    lists = timed(
        "load url_sha256 + domain lists (entries)",
        list_size * 11 // 10,
        lambda: [
            load_hashlist(f"url_sha256:{digests}"),
            load_hashlist(f"domain:{domains}"),
        ],
    )
    screen = Screen(Matcher.from_lists(lists))
    rows = [Row("s", i, u, None) for i, u in enumerate(urls)]
    screened = timed(
        "screen rows (batches of 8192)",
        len(rows),
        lambda: [
            item for first in range(0, len(rows), 8192) for item in screen.rows(rows[first : first + 8192])
        ],
    )
    print(f"  matched: {sum(1 for s in screened if s.matches)} (50 planted)")
    hop = screen.hop(screened[100])
    timed("redirect hop checks (one URL each)", 2000, lambda: [hop(u) for u in urls[:2000]])


def bench_text_lists(urls: list[str], list_size: int, tmp: Path) -> None:
    """Load url and domain lists of list_size entries: the real URLs and their hosts, made distinct."""
    bases = [u.partition("#")[0] for u in urls if u.startswith("http")]  # not the fixture's junk value
    names = {normalise(u).host for u in bases}
    hosts = sorted(h for h in names if not h[-1].isdigit() and ":" not in h)  # names, not IP addresses
    url_list = tmp / "url-list.txt"
    url_list.write_text(
        "\n".join(f"{u}{'&' if '?' in u else '?'}n={i}" for i, u in _cycle(bases, list_size)) + "\n"
    )
    domain_list = tmp / "domain-list.txt"
    domain_list.write_text("\n".join(f"n{i}.{host}" for i, host in _cycle(hosts, list_size)) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DuplicateHashWarning)
        timed("load url list (entries)", list_size, lambda: load_hashlist(f"url:{url_list}"))
        timed("load domain list (entries)", list_size, lambda: load_hashlist(f"domain:{domain_list}"))


def _cycle(values: list[str], count: int) -> list[tuple[int, str]]:
    return [(i, values[i % len(values)]) for i in range(count)]


def bench_rematch(rows: int, list_size: int, tmp: Path) -> None:
    rng = np.random.default_rng(2)

    def hexes(nbytes: int) -> list[str]:
        return [bytes(r).hex() for r in rng.integers(0, 256, (rows, nbytes), dtype=np.uint8)]

    columns = {name: [None] * rows for name in HASHES_SCHEMA.names}
    columns.update(
        shard=["s"] * rows,
        row=list(range(rows)),
        url=[f"http://h{i % 5000}.example/{i}.jpg" for i in range(rows)],
    )
    columns.update(
        md5=hexes(16), sha1=hexes(20), sha256=hexes(32), pdq=hexes(32), phash=hexes(8), dhash=hexes(8)
    )
    columns.update(pdq_quality=[100] * rows, width=[640] * rows, height=[480] * rows, format=["jpeg"] * rows)
    pq.write_table(pa.table(columns, schema=HASHES_SCHEMA), tmp / "hashes.parquet")
    md5 = tmp / "md5.txt"
    md5.write_text(
        "\n".join(
            columns["md5"][:100] + [bytes(r).hex() for r in rng.integers(0, 256, (list_size, 16), np.uint8)]
        )
    )
    pdq = tmp / "pdq.txt"
    pdq.write_text("\n".join(bytes(r).hex() for r in rng.integers(0, 256, (list_size // 10, 32), np.uint8)))
    config = build_config(
        {
            "out": str(tmp / "out"),
            "hashlist": [f"md5:{md5}", f"pdq:{pdq}"],
            "source": {"rows_per_unit": 50_000},
        },
        "bench",
    )
    result = timed(
        "rematch stored rows (md5 + pdq lists)", rows, lambda: rematch([str(tmp / "hashes.parquet")], config)
    )
    print(f"  matched rows: {result.summary['matches']['rows']} (100 planted)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list-size", type=int, default=1_000_000, help="url_sha256 (and md5) list entries")
    parser.add_argument("--rows", type=int, default=200_000, help="stored rows to rematch")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}")
    urls = real_urls()
    with tempfile.TemporaryDirectory() as name:  # synthetic lists only: no image content is written
        tmp = Path(name)
        bench_normalise(urls)
        bench_screen(urls, args.list_size, tmp)
        bench_text_lists(urls, args.list_size, tmp)
        bench_rematch(args.rows, args.list_size, tmp)


if __name__ == "__main__":
    main()

"""Loading a hash list, by format: peak memory over the file's size, and CPU time.

    python benchmarks/bench_listload.py [--entries 1000000] [--repeat 2] [--tree PATH]

Lists as they are delivered run to tens of millions of entries; the load must not need many times the
file's size. Each format gets a generated list of `--entries` random PDQ hashes (the CSVs with an id and a
category per entry, as hash-sharing exports carry), and each load runs in a fresh process: `load_hashlist`
then the match index, as a scan's coordinator does. Columns: file MB; peak MB (the process's peak resident
memory above what it held after its imports, sampled every millisecond); peak / file; what it holds after
the load (the entries and the index); CPU s of the load and of the index build. `--tree` runs the same
loads with another checkout of the scanner on PYTHONPATH, for a before-and-after table in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

FORMATS = {
    "plain text": ("", "{hash}\n"),
    "pdq-hashio": ("", "{hash},E{i:09d}\n"),
    "csv": ("hash_type,hash,id,category\n", "pdq,{hash},E{i:09d},A1\n"),
    "ncmec-csv": ("Hash Value,Algorithm,Image ID,Classification\n", "{hash},PDQ,{i},A1\n"),
    "threatexchange-csv": (
        "signal_type,signal_str,collab,category,tags\n",
        "pdq,{hash},collab-{c},A1,tag{c} shared\n",
    ),
}

_CHILD = r"""
import json, os, sys, threading, time
import psutil
from scanner.lists import load_hashlist
from scanner.lists.matcher import _index

process = psutil.Process()
base = peak = process.memory_info().rss
done = False

def watch():
    global peak
    while not done:
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.001)

watcher = threading.Thread(target=watch, daemon=True)
watcher.start()
start = time.process_time()
loaded = load_hashlist(sys.argv[1])
loaded_at = time.process_time()
index = _index(loaded.entries["pdq"], 31)
built_at = time.process_time()
done = True
watcher.join()
peak = max(peak, process.memory_info().rss)
print(json.dumps({
    "peak": peak - base, "held": process.memory_info().rss - base,
    "load": loaded_at - start, "index": built_at - loaded_at, "entries": len(index),
}))
"""


def write_list(path: Path, fmt: str, entries: int, seed: int = 7) -> None:
    header, line = FORMATS[fmt]
    keys = np.random.default_rng(seed).integers(0, 256, (entries, 32), dtype=np.uint8)
    with path.open("w") as out:
        out.write(header)
        for i, key in enumerate(keys):
            out.write(line.format(hash=key.tobytes().hex(), i=i, c=i % 7))


def measure(path: Path, tree: Path) -> dict[str, float]:
    spec = f"pdq:{path}" if path.name.startswith("list-plain") else str(path)  # untyped: name its type
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, spec], env=env, cwd=tree, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"loading {path.name} with {tree} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="loads of each list per tree; medians shown")
    parser.add_argument("--tree", type=Path, help="another checkout of the scanner, loaded side by side")
    parser.add_argument(
        "--formats", default=",".join(FORMATS), help="comma-separated, of: " + ", ".join(FORMATS)
    )
    args = parser.parse_args()
    trees = [("this", ROOT)] + ([("tree", args.tree.resolve())] if args.tree else [])
    mb = 1e6
    print(f"{args.entries:,} PDQ entries per list; medians of {args.repeat} loads, each in a fresh process")
    print("| format | tree | file MB | peak MB | peak / file | held MB | load CPU s | index CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-listload-") as work:
        for fmt in args.formats.split(","):
            path = Path(work) / f"list-{fmt.replace(' ', '-')}.txt"
            write_list(path, fmt, args.entries)
            size = path.stat().st_size
            runs = {name: [] for name, _ in trees}
            for _ in range(args.repeat):  # trees alternate, so drift on the machine falls on both
                for name, tree in trees:
                    runs[name].append(measure(path, tree))
            for name, _ in trees:
                med = {key: statistics.median(run[key] for run in runs[name]) for key in runs[name][0]}
                print(
                    f"| {fmt} | {name} | {size / mb:.0f} | {med['peak'] / mb:.0f} | {med['peak'] / size:.1f} "
                    f"| {med['held'] / mb:.0f} | {med['load']:.2f} | {med['index']:.2f} |"
                )
            path.unlink()


if __name__ == "__main__":
    main()

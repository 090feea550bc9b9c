"""Dead links: `scanner scan` over a real URL list with no route out and DNS that never answers.

    sudo python benchmarks/bench_deadlinks.py [--list ../shared/url-lists/test_10000.parquet]
                                              [--rows N | --limit N] [--nxdomain 0.0] [--workers 1]

It re-runs itself inside `unshare -n -m` (a new network and mount namespace: root), brings `lo` up,
bind-mounts a resolv.conf naming 127.0.0.1, where a UDP and TCP listener on port 53 swallows every query
(or answers NXDOMAIN for a fixed share of names, --nxdomain), and scans the list's first rows with a tiny
MD5 list. Raw-IP URLs fail to connect (no route). It refuses to scan unless it is inside a namespace whose
only interface is lo and where a connect to a public address fails: a real list would otherwise send
traffic to real addresses. Prints rows, seconds, rows/s, outcomes by reason, DNS queries per host (counted
by the listener) and the scan's CPU seconds. `--scanner-path` scans with another checkout (a before run).
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LIST = REPO.parent / "shared" / "url-lists" / "test_10000.parquet"
PUBLIC_PROBE = ("192.0.43.8", 53)  # any public address: the namespace must have no route to it


def main() -> int:
    args = parse_args()
    if not args.inner:
        if os.geteuid() != 0:
            print("bench_deadlinks: needs root (unshare -n -m)", file=sys.stderr)
            return 2
        script = str(Path(__file__).resolve())
        inner = ["unshare", "-n", "-m", sys.executable, script, "--inner", *sys.argv[1:]]
        return subprocess.run(inner, check=False).returncode
    problem = not_isolated()  # checked before anything here touches the network or the mounts
    if problem:
        print(f"bench_deadlinks: refusing to scan: {problem}", file=sys.stderr)
        return 2
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    return run(args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", type=Path, default=DEFAULT_LIST, help="Parquet URL list (URL column)")
    parser.add_argument("--rows", "--limit", type=int, default=0, help="scan the first N rows (0: all)")
    parser.add_argument("--nxdomain", type=float, default=0.0, help="share of names answered NXDOMAIN")
    parser.add_argument("--workers", type=int, default=1, help="hashing workers (no body ever arrives)")
    parser.add_argument("--scanner-path", type=Path, default=REPO, help="checkout whose scanner to run")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def not_isolated() -> str | None:
    """Why this process could reach the outside, or None when it cannot."""
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        return f"network interfaces other than lo: {', '.join(names)}"
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(PUBLIC_PROBE)  # a UDP connect sends nothing: it only asks for a route
    except OSError as exc:
        if exc.errno == errno.ENETUNREACH:
            return None
        return f"unexpected error probing a route out: {exc}"
    finally:
        probe.close()
    return "a route to a public address exists"


class SwallowingDNS:
    """UDP and TCP on 127.0.0.1:53: counts each query by name; answers NXDOMAIN for a share, else nothing."""

    def __init__(self, nxdomain: float) -> None:
        self.queries: Counter[str] = Counter()
        self._nxdomain = nxdomain
        self._selector = selectors.DefaultSelector()
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind(("127.0.0.1", 53))
        self._tcp = socket.create_server(("127.0.0.1", 53), backlog=1024)
        self._selector.register(self._udp, selectors.EVENT_READ, self._on_udp)
        self._selector.register(self._tcp, selectors.EVENT_READ, self._on_accept)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            for key, _ in self._selector.select():
                key.data(key.fileobj)

    def _on_udp(self, sock: socket.socket) -> None:
        data, peer = sock.recvfrom(4096)
        answer = self._answer(data)
        if answer:
            sock.sendto(answer, peer)

    def _on_accept(self, sock: socket.socket) -> None:
        conn, _ = sock.accept()
        conn.setblocking(False)
        self._selector.register(conn, selectors.EVENT_READ, self._on_tcp)

    def _on_tcp(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(conn)
            conn.close()
            return
        answer = self._answer(data[2:])
        if answer:
            conn.sendall(len(answer).to_bytes(2, "big") + answer)

    def _answer(self, query: bytes) -> bytes | None:
        name, end = question(query)
        if name is None:
            return None
        self.queries[name] += 1
        if zlib.crc32(name.encode()) % 10_000 >= self._nxdomain * 10_000:
            return None
        flags = 0x8183 | (int.from_bytes(query[2:4], "big") & 0x0100)  # response, RD copied, RA, NXDOMAIN
        return query[:2] + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x00" + query[12:end]


def question(query: bytes) -> tuple[str | None, int]:
    """The queried name and the end of the question section (name, type, class)."""
    labels, at = [], 12
    while at < len(query) and query[at]:
        size = query[at]
        labels.append(query[at + 1 : at + 1 + size].decode("ascii", "replace").lower())
        at += 1 + size
    if at >= len(query):
        return None, 0
    return ".".join(labels), at + 5


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="deadlinks-") as tmp:
        folder = Path(tmp)
        resolv = folder / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\n")
        subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=True)
        table = pq.read_table(args.list)
        if args.rows:
            table = table.slice(0, args.rows)
        pq.write_table(table, folder / "shard.parquet")
        (folder / "list.txt").write_text("0" * 31 + "1\n")
        dns = SwallowingDNS(args.nxdomain)
        seconds, cpu, returncode = scan(folder, args)
        if returncode != 0:
            print(f"bench_deadlinks: the scan exited {returncode}", file=sys.stderr)
            return 1
        outcomes = pq.read_table(folder / "out" / "outcomes.parquet", columns=["outcome", "reason"])
        hosts = named_hosts(table.column("URL").to_pylist())
        report(table.num_rows, seconds, cpu, outcomes.to_pylist(), hosts, dns.queries)
    return 0


def scan(folder: Path, args: argparse.Namespace) -> tuple[float, float, int]:
    command = [
        sys.executable, "-m", "scanner", "scan", str(folder / "shard.parquet"),
        "--hashlist", f"md5:{folder / 'list.txt'}", "--out", str(folder / "out"),
        "--quiet", "--workers", str(args.workers),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(args.scanner_path.resolve())}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=folder, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, done.returncode


def named_hosts(urls: list[str | None]) -> set[str]:
    hosts = set()
    for url in urls:
        try:
            host = urlsplit(url or "").hostname
        except ValueError:
            continue
        if host and not _is_ip(host):
            hosts.add(host.rstrip(".").lower())
    return hosts


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def report(
    rows: int, seconds: float, cpu: float, outcomes: list[dict], hosts: set[str], queries: Counter[str]
) -> None:
    asked = [queries.get(host, 0) for host in hosts]
    mean = sum(asked) / len(asked) if asked else 0.0
    print(f"{'rows':<28}{rows:>12,}")
    print(f"{'seconds':<28}{seconds:>12.1f}")
    print(f"{'rows/s':<28}{rows / seconds:>12.1f}")
    print(f"{'scan CPU seconds':<28}{cpu:>12.1f}")
    print(f"{'named hosts':<28}{len(hosts):>12,}")
    print(f"{'DNS queries (all names)':<28}{sum(queries.values()):>12,}")
    print(f"{'DNS queries per host, max':<28}{max(asked, default=0):>12}")
    print(f"{'DNS queries per host, mean':<28}{mean:>12.2f}")
    print("outcomes by reason:")
    for (outcome, reason), count in Counter((o["outcome"], o["reason"]) for o in outcomes).most_common():
        print(f"  {outcome:<10}{reason or '-':<26}{count:>8,}")


if __name__ == "__main__":
    sys.exit(main())

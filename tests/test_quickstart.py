"""Quick start: URL and domain lists load before any request, image-hash lists while rows are fetched
(lists/deferred.py); a row's hashes wait for the whole list, never a part of it, and results are the same
as with every list loaded first (run.lists_first)."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from images import encode, make_image
from loopback import LoopbackServer

from scanner.config import build_config
from scanner.errors import HashListError, ResumeError
from scanner.fetch.base import CLIENTS
from scanner.fetch.fetcher import TRANSPORTS, transport_class
from scanner.hashing import hash_image
from scanner.lists import HashList, ListSpec, Matcher, Query, formats, load_hashlist
from scanner.lists.deferred import DeferredList, deferred
from scanner.reports.records import RowResult, UnitReport
from scanner.run.job import open_run
from scanner.run.lifecycle import load_lists
from scanner.run.scan import ScanJob
from scanner.runners.local import scan

REPO = Path(__file__).resolve().parents[1]

IMAGES = [encode(make_image(40 + i, (320, 240)), "JPEG") for i in range(6)]
PDQ = [hash_image(body, frozenset({"pdq", "md5"})) for body in IMAGES]


def _random_hex(count: int, nbytes: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [rng.bytes(nbytes).hex() for _ in range(count)]


def write_lists(folder: Path, url: str) -> dict[str, Path]:
    """A plain PDQ list (images 0 and 1 among 3000 random hashes), a plain MD5 list (image 2), and a URL
    list naming the URL of image 3."""
    paths = {"pdq": folder / "pdq.txt", "md5": folder / "md5.txt", "url": folder / "urls.txt"}
    pdq = [PDQ[0].pdq.hex(), *_random_hex(3000, 32, 1), PDQ[1].pdq.hex()]
    paths["pdq"].write_text("\n".join(pdq) + "\n")
    paths["md5"].write_text("\n".join([*_random_hex(500, 16, 2), PDQ[2].md5.hex()]) + "\n")
    paths["url"].write_text(url + "\n")
    return paths


def test_lists_of_one_image_type_load_later_and_lists_that_may_hold_urls_now(tmp_path: Path) -> None:
    paths = write_lists(tmp_path, "http://example.com/listed.jpg")
    typed = tmp_path / "typed.csv"
    typed.write_text(f"hash_type,hash\npdq,{PDQ[0].pdq.hex()}\n")
    specs = [f"pdq:{paths['pdq']}", str(paths["md5"]), f"url:{paths['url']}", str(typed)]
    config = build_config({"inputs": ["x"], "out": "o", "hashlist": specs}, "test")
    lists, matcher = load_lists(config, later=True)
    assert [type(hl) for hl in lists] == [DeferredList, DeferredList, HashList, HashList]
    assert [hl.hash_type.name for hl in lists[:2]] == ["pdq", "md5"]  # type: ignore[union-attr]
    assert lists[0].digest == load_hashlist(f"pdq:{paths['pdq']}").digest
    assert matcher.needed_hash_types == {"pdq", "md5", "url"}
    every_list_first = build_config({**_settings(specs), "run": {"lists_first": True}}, "test")
    assert all(isinstance(hl, HashList) for hl in load_lists(every_list_first, later=True)[0])
    screened = build_config({**_settings(specs), "audit": {"match_columns": ["h=md5"]}}, "test")
    assert all(isinstance(hl, HashList) for hl in load_lists(screened, later=True)[0])
    # A job that matches in its event loop (rescan, rematch) gets every list whole.
    assert all(isinstance(hl, HashList) for hl in load_lists(config)[0])


def _settings(specs: list[str]) -> dict:
    return {"inputs": ["x"], "out": "o", "hashlist": specs}


class GatedList(DeferredList):
    """A deferred list whose load waits until the test opens the gate."""

    def __init__(self, spec: ListSpec, hash_type: str, digest: str) -> None:
        super().__init__(spec, hash_type, digest)
        self.gate = threading.Event()

    def load(self) -> HashList:
        assert self.gate.wait(30)
        return super().load()


def test_a_query_waits_for_the_whole_image_list_while_url_queries_do_not(tmp_path: Path) -> None:
    paths = write_lists(tmp_path, "http://example.com/listed.jpg")
    found = deferred(ListSpec.parse(f"pdq:{paths['pdq']}"))
    assert found is not None
    gated = GatedList(ListSpec.parse(f"pdq:{paths['pdq']}"), "pdq", found.digest)
    matcher = Matcher.from_lists([gated, load_hashlist(f"url:{paths['url']}")])
    url_query = Query({"url": b"http://example.com/listed.jpg"})
    assert [m.list for m in matcher.match_batch([url_query])[0]] == ["urls"]  # the image list is not loaded
    image_queries = [Query({"pdq": h.pdq}, h.pdq_quality) for h in PDQ[:3]]
    results: list = []
    matching = threading.Thread(target=lambda: results.append(matcher.match_batch(image_queries)))
    matching.start()
    matching.join(0.5)
    assert matching.is_alive() and not results  # waiting, not matched against nothing
    gated.gate.set()
    matching.join(30)
    whole = Matcher.from_lists([load_hashlist(f"pdq:{paths['pdq']}")]).match_batch(image_queries)
    assert results == [whole]
    assert [len(m) for m in whole] == [1, 1, 0]


def test_a_worker_starts_with_the_ready_part_and_is_completed_with_the_rest(tmp_path: Path) -> None:
    paths = write_lists(tmp_path, "http://example.com/listed.jpg")
    config = build_config(_settings([f"pdq:{paths['pdq']}", f"url:{paths['url']}"]), "test")
    _, matcher = load_lists(config, later=True)
    worker: Matcher = pickle.loads(pickle.dumps(matcher.ready_part()))
    assert worker.needed_hash_types == matcher.needed_hash_types
    url_query = Query({"url": b"http://example.com/listed.jpg"})
    assert worker.match_batch([url_query]) == matcher.match_batch([url_query])
    worker.fill(pickle.loads(pickle.dumps(matcher.rest())))
    queries = [Query({"pdq": h.pdq}, h.pdq_quality) for h in PDQ]
    assert worker.match_batch(queries) == matcher.match_batch(queries)
    with pytest.raises(RuntimeError, match="not waiting"):
        worker.fill(matcher.rest())


def test_a_workers_ready_part_keeps_the_negative_lists(tmp_path: Path) -> None:
    paths = write_lists(tmp_path, "http://example.com/listed.jpg")
    negative = tmp_path / "neg.csv"
    negative.write_text(f"hash_type,hash,id\npdq,{PDQ[0].pdq.hex()},N-1\n")
    settings = _settings([f"pdq:{paths['pdq']}"])
    config = build_config({**settings, "review": {"negative_lists": [str(negative)]}}, "test")
    _, matcher = load_lists(config, later=True)
    worker: Matcher = pickle.loads(pickle.dumps(matcher.ready_part()))
    worker.fill(pickle.loads(pickle.dumps(matcher.rest())))
    query = [Query({"pdq": PDQ[0].pdq}, PDQ[0].pdq_quality)]
    assert worker.negative == matcher.negative == {"neg"}
    assert worker.match_batch(query) == matcher.match_batch(query)


def test_a_list_changed_after_its_digest_is_refused(tmp_path: Path) -> None:
    paths = write_lists(tmp_path, "http://example.com/listed.jpg")
    later = deferred(ListSpec.parse(f"pdq:{paths['pdq']}"))
    assert later is not None
    paths["pdq"].write_text(PDQ[3].pdq.hex() + "\n")
    with pytest.raises(HashListError, match="changed"):
        later.load()
    with pytest.raises(HashListError, match="changed"):
        later.result()


def _scan(folder: Path, shard: Path, specs: list[str], lists_first: bool) -> tuple[list, list]:
    out = folder / f"out-{lists_first}"
    config = build_config(
        {
            "inputs": [str(shard)],
            "out": str(out),
            "hashlist": specs,
            "fetch": {"allow_private_networks": True, "max_retries": 0},
            "source": {"rows_per_unit": 3},
            "run": {"workers": 2, "lists_first": lists_first},
        },
        "test",
    )
    scan(config)
    outcomes = pq.read_table(out / "outcomes.parquet").to_pylist()
    matches = [json.loads(line) for line in (out / "matches.jsonl").read_text().splitlines()]
    for row in outcomes:
        row.pop("fetched_at", None)
    return outcomes, matches


def test_a_scan_matches_the_same_whether_image_lists_load_first_or_later(tmp_path: Path) -> None:
    files = {f"/{i}.jpg": body for i, body in enumerate(IMAGES)}
    with LoopbackServer(files) as server:
        urls = [server.url(f"/{i % len(IMAGES)}.jpg?r={i}") for i in range(14)]
        paths = write_lists(tmp_path, urls[3])
        shard = tmp_path / "shard.parquet"
        pq.write_table(pa.table({"url": urls}), shard)
        specs = [f"pdq:{paths['pdq']}", str(paths["md5"]), f"url:{paths['url']}"]
        later = _scan(tmp_path, shard, specs, lists_first=False)
        first = _scan(tmp_path, shard, specs, lists_first=True)
    assert later == first
    outcomes, matches = later
    matched = sorted({(m["row"], m["list"]) for m in matches})
    image_rows = [(r, "pdq") for r in (0, 1, 6, 7, 12, 13)] + [(r, "md5") for r in (2, 8)]
    assert matched == sorted([*image_rows, (3, "urls")])
    assert [row["outcome"] for row in outcomes].count("match") == 9


def test_a_bad_line_deep_in_a_list_loaded_later_stops_the_scan_with_one_line(
    tmp_path: Path, scanner_cli
) -> None:
    files = {f"/{i}.jpg": body for i, body in enumerate(IMAGES)}
    with LoopbackServer(files) as server:
        urls = [server.url(f"/{i % len(IMAGES)}.jpg?r={i}") for i in range(6)]
        pq.write_table(pa.table({"url": urls}), tmp_path / "shard.parquet")
        hashes = _random_hex(4000, 32, 3)  # 260 KB: the bad line is far past the first lines read at once
        hashes[3500] = "not a hash"
        (tmp_path / "pdq.txt").write_text("\n".join(hashes) + "\n")
        done = scanner_cli(
            "scan", "shard.parquet", "--hashlist", "pdq:pdq.txt", "--out", "out", "--allow-private-networks",
            "--quiet", cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    # One line of ours (multiprocessing's tracker may add its own note on workers stopped mid-start).
    lines = [line for line in done.stderr.splitlines() if line.startswith("scanner:")]
    assert len(lines) == 1 and "pdq.txt:3501" in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_fresh_run_takes_its_image_lists_digest_as_they_load_and_records_it_before_its_first_commit(
    tmp_path: Path,
) -> None:
    paths = write_lists(tmp_path, "http://example.com/listed.jpg")
    shard = tmp_path / "s.txt"
    shard.write_text("file:///x\n")
    out = tmp_path / "out"
    settings = {"inputs": [str(shard)], "out": str(out), "hashlist": [f"pdq:{paths['pdq']}"]}
    config = build_config(settings, "test")
    fresh = open_run(ScanJob(config))
    pdq = fresh.lists[0]
    assert isinstance(pdq, DeferredList) and pdq.digest_by_load
    fingerprint = out / ".units" / "fingerprint.json"
    assert not fingerprint.exists()  # nothing is kept yet: nothing to guard
    row = RowResult(str(shard), 0, "file:///x", None, "blocked", reason="scheme")
    fresh.checkpoint.commit_part(0, [(0, UnitReport(0, [row]))])
    loaded = load_hashlist(f"pdq:{paths['pdq']}").digest
    assert json.loads(fingerprint.read_text())["lists"] == [["pdq", loaded]]
    # A resumed run takes the digest before any request, and refuses a list changed since.
    resumed = open_run(ScanJob(config))
    assert isinstance(resumed.lists[0], DeferredList) and not resumed.lists[0].digest_by_load
    assert resumed.lists[0].digest == loaded
    paths["pdq"].write_text(PDQ[3].pdq.hex() + "\n")
    with pytest.raises(ResumeError, match="different lists"):
        open_run(ScanJob(config))


def test_a_fresh_runs_first_commit_waits_for_the_lists_read_not_its_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator commits while a large list still parses: the digest it records is ready as soon as
    the load has read the file once, so the unit workers' pipes are read again at once."""
    import hashlib

    from scanner.lists import deferred as deferred_module

    paths = write_lists(tmp_path, "http://example.com/listed.jpg")
    parsing, release = threading.Event(), threading.Event()

    def slow_parse(spec: ListSpec) -> HashList:
        parsing.set()
        release.wait(30)
        return load_hashlist(spec)

    monkeypatch.setattr(deferred_module, "load_hashlist", slow_parse)
    later = deferred(ListSpec.parse(f"pdq:{paths['pdq']}"), digest_now=False)
    assert later is not None and later.digest_by_load
    loading = threading.Thread(target=later.load)
    loading.start()
    try:
        assert parsing.wait(30)
        assert later.waited_digest() == hashlib.sha256(paths["pdq"].read_bytes()).hexdigest()
        assert loading.is_alive()  # still parsing: the digest did not wait for it
    finally:
        release.set()
        loading.join(30)
    assert later.result().digest == later.waited_digest()


def test_a_fresh_runs_list_changed_after_its_first_lines_were_read(tmp_path: Path) -> None:
    """A fresh run records the digest of the very bytes it matches against; a list that no longer holds
    one image hash type is refused."""
    paths = write_lists(tmp_path, "http://example.com/listed.jpg")
    spec = ListSpec.parse(f"pdq:{paths['pdq']}")
    later = deferred(spec, digest_now=False)
    assert later is not None and later.digest is None
    paths["pdq"].write_text(PDQ[3].pdq.hex() + "\n")
    assert later.load().digest == later.digest == load_hashlist(spec).digest
    other = deferred(ListSpec.parse(str(paths["md5"])), digest_now=False)
    assert other is not None
    paths["md5"].write_text("hash_type,hash\nurl,http://example.com/a.jpg\n")
    with pytest.raises(HashListError, match="expected md5 entries only"):
        other.load()
    with pytest.raises(HashListError, match="expected md5 entries only"):
        other.result()  # the digest was taken before the parse: a run waiting on the list stops with this
    assert other.waited_digest() == load_hashlist(str(paths["md5"])).digest


def test_a_resumed_scan_compares_its_lists_before_any_request(tmp_path: Path) -> None:
    with LoopbackServer({f"/{i}.jpg": body for i, body in enumerate(IMAGES)}) as server:
        urls = [server.url(f"/{i % len(IMAGES)}.jpg?r={i}") for i in range(6)]
        paths = write_lists(tmp_path, urls[3])
        shard = tmp_path / "shard.parquet"
        pq.write_table(pa.table({"url": urls}), shard)
        specs = [f"pdq:{paths['pdq']}", f"url:{paths['url']}"]
        settings = {**_settings(specs), "inputs": [str(shard)], "out": str(tmp_path / "out")}
        config = build_config({**settings, "fetch": {"allow_private_networks": True}}, "test")
        scan(config)
        hits = server.total_hits
        paths["pdq"].write_text(PDQ[4].pdq.hex() + "\n")
        with pytest.raises(ResumeError, match="different lists"):
            scan(config)
        assert server.total_hits == hits


class RecordingList(DeferredList):
    """A deferred list that notes the priority its load runs at."""

    nice: int | None = None

    def load(self) -> HashList:
        self.nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return super().load()


def test_image_lists_load_at_the_scans_own_priority(tmp_path: Path) -> None:
    """A nicer load got so little CPU on a busy machine that the rows waiting for it stopped the fetching."""
    paths = write_lists(tmp_path, "http://example.com/listed.jpg")
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    recording = RecordingList(ListSpec.parse(f"pdq:{paths['pdq']}"), "pdq")
    Matcher.from_lists([recording]).rest()
    assert recording.nice == own


def test_rows_go_on_being_fetched_while_their_image_list_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose units have all their rows hashed, waiting for the list, takes more units (up to
    LOADING_WINDOW times its window): the list's load here waits for rows past one window to be fetched."""
    from scanner.lists import deferred as deferred_module
    from scanner.runners.procs import LOADING_WINDOW

    with LoopbackServer({f"/{i}.jpg": body for i, body in enumerate(IMAGES)}) as server:
        urls = [server.url(f"/{i % len(IMAGES)}.jpg?r={i}") for i in range(12)]
        paths = write_lists(tmp_path, "http://example.com/listed.jpg")
        fetched_while_loading: list[int] = []

        def load_after_rows(spec: ListSpec) -> HashList:
            deadline = time.monotonic() + 30
            while server.total_hits < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            fetched_while_loading.append(server.total_hits)
            return load_hashlist(spec)

        monkeypatch.setattr(deferred_module, "load_hashlist", load_after_rows)
        shard = tmp_path / "shard.parquet"
        pq.write_table(pa.table({"url": urls}), shard)
        settings = {
            **_settings([f"pdq:{paths['pdq']}"]),
            "inputs": [str(shard)],
            "out": str(tmp_path / "out"),
        }
        one_unit = {"workers": 1, "units_in_flight": 1}  # a window of 2 rows, 8 while the list loads
        config = build_config(
            {
                **settings,
                "fetch": {"allow_private_networks": True},
                "source": {"rows_per_unit": 2},
                "run": one_unit,
            },
            "test",
        )
        scan(config)
    assert LOADING_WINDOW * 2 >= fetched_while_loading[0] >= 6
    outcomes = pq.read_table(tmp_path / "out" / "outcomes.parquet").column("outcome").to_pylist()
    assert outcomes.count("match") == 4 and len(outcomes) == 12  # images 0 and 1, each twice


def test_a_small_list_loads_without_numba_and_as_a_large_one_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL list loads before the first request: numba's first call would cost more than the list."""
    lines = [
        [f"http://example.com/{i}.jpg", f"  http://e.org/{i}\t", "", "# n", f"http://e.net/{i}\r"]
        for i in range(40)
    ]
    listed = tmp_path / "urls.txt"
    listed.write_text("\n".join(line for five in lines for line in five) + "\n")
    big = load_hashlist(f"url:{listed}")
    monkeypatch.setattr(formats, "NUMPY_PACK_BYTES", 0)  # every list through the kernel
    assert load_hashlist(f"url:{listed}").entries["url"].keys.tolist() == big.entries["url"].keys.tolist()
    code = (
        "import sys\n"
        "import scanner.runners.procs, scanner.runners.local, scanner.fetch.client\n"
        "from scanner.lists import load_hashlist\n"
        f"load_hashlist({f'url:{listed}'!r})\n"
        "print(sorted(m for m in ('numba', 'llvmlite', 'scipy') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_a_unit_worker_imports_the_transport_of_every_client_before_its_lists_arrive() -> None:
    """Each fetch.client names the transport a unit worker imports first thing (make_fetcher's own)."""
    assert set(TRANSPORTS) == set(CLIENTS)
    transports = {"aiohttp": "AiohttpTransport", "httpx": "HttpxTransport"}
    for client in TRANSPORTS:
        assert transport_class(client).__name__ == transports[client]


# pyarrow's conversion of a Python value (pa.array, pa.scalar, Array.to_numpy, a value given to a compute
# function) imports pandas wherever it is installed: a quarter second of CPU and tens of MB in each process
# that does, on the way to the first request when the coordinator or a unit worker does. This stand-in,
# first on the path, says which process imported it and from where, and is refused like a missing pandas.
STAND_IN_PANDAS = """\
import os, sys, traceback
sys.stderr.write(f"pandas imported by {os.getpid()}:\\n" + "".join(traceback.format_stack()) + "\\n")
sys.stderr.flush()
raise ImportError("the test's stand-in for pandas")
"""


def _stand_in_pandas(folder: Path) -> dict[str, str]:
    (folder / "pandas").mkdir(parents=True)
    (folder / "pandas" / "__init__.py").write_text(STAND_IN_PANDAS)
    return {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{REPO}"}


def test_loading_every_kind_of_list_imports_no_pandas(tmp_path: Path) -> None:
    paths = write_lists(tmp_path, "http://Example.COM:80/a/../listed.jpg#x")
    typed = tmp_path / "typed.csv"
    typed.write_text(f"hash_type,hash,id\npdq,{PDQ[0].pdq.hex()},a\nmd5,{PDQ[2].md5.hex()},b\nnewhash,ff,c\n")
    ncmec = REPO / "tests" / "fixtures" / "ncmec-pages" / "page-1.xml"
    specs = [f"pdq:{paths['pdq']}", str(paths["md5"]), f"url:{paths['url']}", str(typed), str(ncmec)]
    code = (
        "import sys, scanner.cli.main, scanner.runners.procs\n"
        "from scanner.config import build_config\n"
        "from scanner.run.lifecycle import load_lists\n"
        f"config = build_config({{'inputs': ['x'], 'out': 'o', 'hashlist': {specs!r}}}, 'test')\n"
        "lists, matcher = load_lists(config)\n"
        "print(sorted(matcher.needed_hash_types), 'pandas' in sys.modules)\n"
    )
    env = _stand_in_pandas(tmp_path / "site")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pandas imported" not in done.stderr, done.stderr
    assert done.stdout.split("]")[1].strip() == "False"
    assert "url" in done.stdout and "pdq" in done.stdout


def test_no_process_imports_pandas_while_rows_are_fetched(tmp_path: Path) -> None:
    """Not the unit workers, their hashing processes and templates, ever; the coordinator neither while
    it loads lists and commits rows, only as it writes the reports at the end (pyarrow's group_by and
    read_table import pyarrow.dataset, which imports pandas)."""
    files = {f"/{i}.jpg": body for i, body in enumerate(IMAGES)}
    env = _stand_in_pandas(tmp_path / "site")
    with LoopbackServer(files) as server:
        urls = [server.url(f"/{i % len(IMAGES)}.jpg?r={i}") for i in range(8)]
        paths = write_lists(tmp_path, urls[3])
        shard = tmp_path / "shard.csv"
        shard.write_text("url,caption\n" + "".join(f"{url},a caption\n" for url in urls))
        argv = [sys.executable, "-m", "scanner", "scan", str(shard), "--out", str(tmp_path / "out")]
        argv += ["--hashlist", f"pdq:{paths['pdq']}", "--hashlist", f"url:{paths['url']}"]
        argv += ["--allow-private-networks", "--quiet", "--workers", "2", "--keep-hashes"]
        scan_process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        _, stderr = scan_process.communicate(timeout=180)
    assert scan_process.returncode == 0, stderr
    parts = re.split(r"^pandas imported by (\d+):$", stderr, flags=re.MULTILINE)
    imports = list(zip(parts[1::2], parts[2::2], strict=True))  # (process id, its stack)
    assert imports, "the reports at the end no longer import pandas: make this test say so"
    for pid, stack in imports:
        assert int(pid) == scan_process.pid, stderr
        assert "lifecycle.py" in stack and "in finish" in stack, stack
    matches = (tmp_path / "out" / "matches.jsonl").read_text().splitlines()
    assert sorted({json.loads(line)["list"] for line in matches}) == ["pdq", "urls"]
    assert (tmp_path / "out" / "hashes.parquet").is_file()

"""The local runner's unit workers: limits shared among them, and the lists shared read-only in sealed
memory rather than copied into each (runners/procs.py, runners/shared.py)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import multiprocessing
import os
import signal
import weakref
from typing import Any

import numpy as np
import pytest

from scanner.config import build_config
from scanner.runners import shared
from scanner.runners.procs import hashers_layout, share, worker_config

needs_memfd = pytest.mark.skipif(not shared.supported(), reason="memfd and sealing are Linux only")


@pytest.mark.parametrize(("total", "count"), [(8, 1), (8, 2), (8, 3), (128, 16), (64, 5)])
def test_a_shared_limit_is_divided_so_the_parts_add_up_to_it(total: int, count: int) -> None:
    parts = [share(total, count, i) for i in range(count)]
    assert sum(parts) == total
    assert max(parts) - min(parts) <= 1


def test_more_workers_than_the_limit_get_one_each() -> None:
    assert [share(8, 16, i) for i in range(16)] == [1] * 16


def test_each_worker_gets_its_part_of_the_per_host_in_flight_and_row_limits() -> None:
    config = build_config(
        {
            "inputs": ["x"],
            "out": "o",
            "fetch": {"max_per_host": 8, "max_in_flight": 64},
            "run": {"workers": 3},
        },
        "test",
    )
    parts = [worker_config(config, i, 3) for i in range(3)]
    assert [p.fetch.max_per_host for p in parts] == [3, 3, 2]
    assert sum(p.fetch.max_in_flight for p in parts) == 64
    assert sum(p.run.rows_in_flight for p in parts) == config.run.rows_in_flight
    assert all(p.run.units_in_flight == config.run.units_in_flight for p in parts)


def test_the_body_budget_is_divided_but_each_worker_can_hold_two_largest_bodies() -> None:
    def parts(body_bytes: int, max_bytes: int, workers: int) -> list[int]:
        settings = {"fetch": {"max_bytes": max_bytes}, "run": {"body_bytes_in_flight": body_bytes}}
        config = build_config({"inputs": ["x"], "out": "o", **settings}, "test")
        return [worker_config(config, i, workers).run.body_bytes_in_flight for i in range(workers)]

    mib = 1024 * 1024
    assert parts(256 * mib, 16 * mib, 4) == [64 * mib] * 4  # a total, divided
    assert parts(256 * mib, 64 * mib, 4) == [128 * mib] * 4  # at least 2 x max_bytes each
    assert parts(64 * mib, 64 * mib, 2) == [64 * mib] * 2  # never more than the whole budget


@pytest.mark.parametrize(
    ("workers", "per_unit_worker", "hashing", "layout"),
    [
        (2, 4, True, [2]),
        (16, 4, True, [4, 4, 4, 4]),
        (6, 4, True, [3, 3]),
        (5, 1, True, [1] * 5),
        (3, 4, False, [0, 0, 0]),  # a job that does not hash: a fetch loop per core, nothing behind them
    ],
)
def test_hashing_processes_are_spread_over_as_few_unit_workers_as_the_setting_allows(
    workers: int, per_unit_worker: int, hashing: bool, layout: list[int]
) -> None:
    run = {"workers": workers, "hashers_per_unit_worker": per_unit_worker}
    config = build_config({"inputs": ["x"], "out": "o", "run": run}, "test")
    assert hashers_layout(config, hashing) == layout


def _spawned(process: Any) -> bool:
    return _started_by(process, "spawn_main")


def _started_by(process: Any, marker: str) -> bool:
    try:
        return marker in " ".join(process.cmdline())
    except Exception:  # gone meanwhile
        return False


def _hashing_below(unit: Any) -> int:
    """A unit worker's hashing processes: forked from its template (runners/hashfork.py), else spawned."""
    count = 0
    for child in unit.children():
        if _started_by(child, "forkserver"):
            count += len(child.children())
        else:
            count += _spawned(child)
    return count


def test_a_scan_runs_its_hashing_processes_behind_few_unit_workers(tmp_path) -> None:
    """Real processes: 3 hashing processes, 2 at most behind a unit worker: 2 unit workers, with 2 and 1."""
    psutil = pytest.importorskip("psutil")
    import threading

    import pyarrow as pa
    import pyarrow.parquet as pq
    from loopback import LoopbackServer

    from scanner.runners.local import scan

    behind: dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for unit in filter(_spawned, psutil.Process().children()):
                with contextlib.suppress(psutil.Error):
                    hashing = _hashing_below(unit)
                    behind[unit.pid] = max(behind.get(unit.pid, 0), hashing)
            stop.wait(0.05)

    with LoopbackServer({}) as server:
        shard = tmp_path / "shard.parquet"
        pq.write_table(pa.table({"url": [server.url(f"/slow?seconds=1.5&i={i}") for i in range(8)]}), shard)
        run = {"workers": 3, "hashers_per_unit_worker": 2}
        (tmp_path / "md5.txt").write_text("0" * 32 + "\n")
        settings = {"inputs": [str(shard)], "out": str(tmp_path / "out"), "run": run}
        settings["hashlist"] = [f"md5:{tmp_path / 'md5.txt'}"]
        config = build_config({**settings, "fetch": {"allow_private_networks": True}}, "test")
        watcher = threading.Thread(target=sample)
        watcher.start()
        try:
            result = scan(config)
        finally:
            stop.set()
            watcher.join()
    assert result.summary["rows"] == 8
    assert sorted(behind.values()) == [1, 2]


def _value() -> dict:
    rng = np.random.default_rng(3)
    return {"keys": rng.integers(0, 256, (1000, 32), dtype=np.uint8), "ids": np.arange(1000), "name": "x"}


def _load_in_child(handle: shared.SharedHandle, queue: multiprocessing.Queue) -> None:
    value = shared.attach(handle).load()
    keys = value["keys"]
    try:
        keys[0, 0] ^= 1
        wrote = True
    except ValueError:
        wrote = False
    queue.put((keys.sum(dtype=np.int64).item(), value["ids"][-1].item(), keys.flags.writeable, wrote))


@needs_memfd
def test_a_shared_object_loads_in_another_process_as_read_only_views_of_one_sealed_memory() -> None:
    value = _value()
    lists = shared.SharedObject(value)
    try:
        handle = lists.handle()
        big = value["keys"].nbytes + value["ids"].nbytes
        assert len(handle.data) < big // 10  # the arrays left the pickle: they are in the shared memory
        with pytest.raises(OSError) as refused:  # sealed: nobody writes the lists once they are shared
            os.pwrite(handle.fd, b"\0", 0)
        assert refused.value.errno == errno.EPERM
        assert os.readlink(f"/proc/self/fd/{handle.fd}").startswith("/memfd:scanner-lists")  # no file
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        process = context.Process(target=_load_in_child, args=(_Passed(handle), queue))
        process.start()
        result = queue.get(timeout=60)
        process.join(60)
    finally:
        lists.close()
    assert result == (value["keys"].sum(dtype=np.int64).item(), 999, False, False)


def test_the_coordinator_holds_the_shared_lists_instead_of_its_own_copy_and_matches_the_same(
    tmp_path,
) -> None:
    """Once lists are in shared memory for the workers, the coordinator keeps the shared copy (mapped,
    read-only) and lets its own go: the lists ready at once (URL, domain) and the image lists built later
    are in memory once, not twice."""
    from scanner.lists import Matcher, load_hashlist
    from scanner.lists.deferred import deferred
    from scanner.lists.hashlist import ListSpec
    from scanner.lists.matcher import Query

    keys = np.random.default_rng(3).integers(0, 256, (5000, 32), dtype=np.uint8)
    (tmp_path / "pdq.txt").write_text("".join(key.tobytes().hex() + "\n" for key in keys))
    (tmp_path / "md5.txt").write_text("".join(key[:16].tobytes().hex() + "\n" for key in keys))
    (tmp_path / "urls.txt").write_text("http://example.org/x\n")
    (tmp_path / "domains.txt").write_text("example.com\n")
    image_lists = [
        deferred(ListSpec.parse(f"{n}:{tmp_path / n}.txt"), digest_now=False) for n in ("pdq", "md5")
    ]
    url_lists = [load_hashlist(f"{n}:{tmp_path / n}s.txt") for n in ("url", "domain")]
    matcher = Matcher.from_lists([*url_lists, *image_lists])
    near = keys[7].copy()
    near[0] ^= 0b111  # 3 bits off
    image = Query({"pdq": near.tobytes(), "md5": keys[9][:16].tobytes()}, pdq_quality=100)
    page = Query({"domain": b"img.example.com", "url": b"http://EXAMPLE.org/x"})
    before = matcher.match_batch([image, page])
    assert [sorted(m.hash_type for m in found) for found in before] == [["md5", "pdq"], ["domain", "url"]]
    ready = shared.SharedObject(matcher.ready_part())
    rest = shared.SharedObject(matcher.rest())
    own = [weakref.ref(s.entries.keys) for s in matcher._searchables]
    try:
        matcher.hold_shared(ready.load())
        matcher.hold(rest.load())
        held = [s.index for s in matcher._searchables]
        assert all(not index.keys.flags.writeable for index in held[2:])  # views of the sealed memory
        assert all(not s.entries.keys.flags.writeable for s in matcher._searchables)
        assert matcher.match_batch([image, page]) == before
        gc.collect()
        assert [key() is None for key in own] == [True] * 4  # gone, though the lists are still held
        assert [hash_list.result().counts for hash_list in image_lists] == [{"pdq": 5000}, {"md5": 5000}]
        assert [hash_list.counts for hash_list in url_lists] == [{"url": 1}, {"domain": 1}]
    finally:
        ready.close()
        rest.close()


class _SlowRest:
    """A matcher whose image lists are still building when the scan ends: rest() waits for `release`."""

    has_background = True

    def __init__(self) -> None:
        import threading

        from scanner.lists import Matcher

        self.release = threading.Event()
        self._ready = Matcher.from_lists([])

    def ready_part(self) -> object:
        return self._ready

    def hold_shared(self, shared_part: object) -> None:
        pass

    def rest(self) -> list:
        self.release.wait(30)
        return []

    def hold(self, rest: object) -> None:
        pass


def test_lists_built_after_the_pool_ended_touch_none_of_its_closed_descriptors(tmp_path) -> None:
    """Before: the thread that shares the image lists wrote its signal to the pool's pipe after the pool had
    closed it, into whatever file had taken that descriptor number since."""
    import threading

    from scanner.runners.procs import UnitWorkers

    slow = _SlowRest()
    with UnitWorkers(build_config({"run": {"workers": 1}}, "test"), [0]) as pool:
        pool.give(_PoisonUnitWork(poison=-1), slow, later=True)  # type: ignore[arg-type]
        signal_fd = pool._rest_signal
        [thread] = [t for t in threading.enumerate() if t.name == "lists-rest"]
    with contextlib.ExitStack() as stack:  # take the freed descriptor numbers, the pipe's among them
        victims = [stack.enter_context(open(tmp_path / f"victim{i}", "wb")) for i in range(8)]
        assert signal_fd in {v.fileno() for v in victims}
        slow.release.set()
        thread.join(30)
    assert all((tmp_path / f"victim{i}").read_bytes() == b"" for i in range(8))


class _Passed:
    """A handle whose descriptor travels to a spawned child as the child's own copy."""

    def __init__(self, handle: shared.SharedHandle) -> None:
        self.handle = handle

    def __reduce__(self) -> tuple:
        from multiprocessing import reduction

        h = self.handle
        return _received, (reduction.DupFd(h.fd), h.size, h.data, h.extents)


def _received(fd, size: int, data: bytes, extents: tuple) -> shared.SharedHandle:
    return shared.SharedHandle(fd.detach(), size, data, extents)


class _Recorder:
    """A unit worker as the coordinator's hand-out sees it: the units it runs and what it was sent."""

    def __init__(self) -> None:
        self.running: dict[int, object] = {}
        self.sent: list[int] = []

    def send(self, message: tuple) -> None:
        self.sent.append(message[1].id)


def _hand_out(
    workers: int, units: int, per_worker: int, hashers: list[int] | None = None, loading: bool = False
) -> list[list[int]]:
    from types import SimpleNamespace

    from scanner.pipeline import Progress
    from scanner.runners.procs import _Coordinator

    recorders = [_Recorder() for _ in range(workers)]
    for index, recorder in enumerate(recorders):
        recorder.index = index
    pool = SimpleNamespace(workers=recorders, hashers=hashers or [1] * workers, lists_loading=loading)
    config = build_config({"run": {"units_in_flight": per_worker}}, "test")
    run = SimpleNamespace(config=config, checkpoint=SimpleNamespace(part_paths=lambda unit_id: []))
    coordinator = _Coordinator(pool, run, Progress())  # type: ignore[arg-type]
    coordinator._queue.extend(SimpleNamespace(id=i) for i in range(units))
    coordinator._hand_out()
    return [w.sent for w in pool.workers]


def test_units_are_spread_over_every_worker_before_any_gets_a_second() -> None:
    # 16 units on 16 workers (3 in flight each) start on all 16: not 3 each on the first 6.
    assert [len(sent) for sent in _hand_out(16, 16, 3)] == [1] * 16
    assert sorted(u for sent in _hand_out(4, 10, 3) for u in sent) == list(range(10))
    assert [len(sent) for sent in _hand_out(4, 10, 3)] == [3, 3, 2, 2]
    assert [len(sent) for sent in _hand_out(2, 10, 3)] == [3, 3]  # the rest wait in the queue
    # Units in flight follow the hashing processes behind each unit worker: 4 and 2 of them, 3 units each.
    assert [len(sent) for sent in _hand_out(2, 30, 3, hashers=[4, 2])] == [12, 6]
    assert [len(sent) for sent in _hand_out(2, 6, 3, hashers=[4, 2])] == [4, 2]  # busy in proportion
    # While image lists load, hashed rows wait for them: LOADING_WINDOW times as many units each.
    assert [len(sent) for sent in _hand_out(2, 100, 3, hashers=[4, 2], loading=True)] == [48, 24]


def _refuse_to_load() -> None:
    raise RuntimeError("this unit work cannot be opened here")


class _PoisonWork:
    """Unit work that pickles in the coordinator and fails to load in the worker (a start-up failure)."""

    hashing = False

    def __reduce__(self) -> tuple:
        return (_refuse_to_load, ())


def test_a_suspect_waits_for_one_worker_to_drain_while_the_others_go_on_with_the_units_behind() -> None:
    """After a death, its units run again each alone: the one first in line must not hold up every worker
    until one is idle, nor be passed over for ever."""
    from types import SimpleNamespace

    from scanner.pipeline import Progress
    from scanner.runners.procs import _Coordinator

    busy, less_busy = _Recorder(), _Recorder()
    busy.running, less_busy.running = {90: None, 91: None}, {92: None}
    for index, recorder in enumerate((busy, less_busy)):
        recorder.index = index
    pool = SimpleNamespace(workers=[busy, less_busy], hashers=[1, 1], lists_loading=False)
    config = build_config({"run": {"units_in_flight": 3}}, "test")
    run = SimpleNamespace(config=config, checkpoint=SimpleNamespace(part_paths=lambda unit_id: []))
    coordinator = _Coordinator(pool, run, Progress())  # type: ignore[arg-type]
    coordinator._queue.extend(SimpleNamespace(id=i) for i in range(4))
    coordinator._suspects = {0: frozenset({0, 1}), 1: frozenset({0, 1})}
    coordinator._hand_out()
    assert (busy.sent, less_busy.sent) == ([2], [])  # the less busy one drains for suspect 0
    assert [u.id for u in coordinator._queue] == [0, 1, 3]
    less_busy.running = {}
    coordinator._hand_out()
    assert less_busy.sent == [0]  # alone, on the worker that drained
    assert [u.id for u in coordinator._queue] == [1, 3]


@pytest.mark.parametrize("hashers", [0, 1])
def test_a_worker_that_fails_to_start_says_why_and_stops_the_run(
    capfd: pytest.CaptureFixture[str], tmp_path, monkeypatch, hashers: int
) -> None:
    """A unit worker that fails before its first unit: the run stops with one line from the coordinator, and
    the worker leaves nothing in $TMPDIR (its hashing template's socket directory, where it had one)."""
    from types import SimpleNamespace

    from scanner.lists import Matcher
    from scanner.pipeline import Progress
    from scanner.runners.procs import UnitWorkers, _Coordinator

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    config = build_config({"run": {"workers": 1}}, "test")
    run = SimpleNamespace(config=config, checkpoint=SimpleNamespace(part_paths=lambda unit_id: []))
    with UnitWorkers(config, [hashers]) as pool:
        pool.give(_PoisonWork(), Matcher.from_lists([]))  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="cannot be opened here"):
            _Coordinator(pool, run, Progress()).run([SimpleNamespace(id=0, where="unit 0")])  # type: ignore[arg-type]
        pool.workers[0].process.join(5)
        assert pool.workers[0].process.exitcode == 1
    assert "Traceback" not in capfd.readouterr().err  # one line from the coordinator, not one per worker
    assert list(tmp_path.iterdir()) == []


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _DyingWork:
    """Unit work whose loading kills the worker (as a machine short of memory would): every worker dies,
    whatever units it was given."""

    hashing = False

    def __reduce__(self) -> tuple:
        return (_die, ())


class _PoisonUnitWork:
    """Unit work with one poison unit that kills its worker, while the units in flight beside it are still
    running; the others finish. With `rows_first`, every other unit has sent a row to the coordinator by
    the time the poison, still opening its shard, kills the worker; else it kills it as soon as it starts."""

    hashing = False

    def __init__(self, poison: int, rows_first: bool = False) -> None:
        self.poison = poison
        self.rows_first = rows_first

    def open(self, config: object, matcher: object, hash_fn: object, progress: Any) -> Any:
        self._progress = progress
        return self

    async def run_unit(self, unit: Any, kept: dict) -> object:
        from scanner.outcomes import Outcome
        from scanner.reports.records import RowResult, UnitReport

        row = RowResult(shard="s", row=unit.id, url="http://a/", key=None, outcome=Outcome.DEAD, reason="dns")
        if unit.id == self.poison:
            await asyncio.sleep(0.3 if self.rows_first else 0)
            os.kill(os.getpid(), signal.SIGKILL)
        if self.rows_first:
            self._progress.row_done(row)
            self._progress.flush()
        await asyncio.sleep(0.5)
        return UnitReport(unit.id, [row] if self.rows_first else [])

    async def aclose(self) -> None:
        pass


def _run_units_on_one_worker(work: object, units: int, committed: list[int]) -> None:
    """Run the units on one real unit worker (3 in flight), committing them to `committed`."""
    from types import SimpleNamespace

    from scanner.lists import Matcher
    from scanner.pipeline import Progress
    from scanner.runners.procs import UnitWorkers, _Coordinator

    config = build_config({"run": {"workers": 1, "units_in_flight": 3}}, "test")
    checkpoint = SimpleNamespace(part_paths=lambda unit_id: [], commit=lambda r: committed.append(r.unit_id))
    run = SimpleNamespace(config=config, checkpoint=checkpoint)
    with UnitWorkers(config, [0]) as pool:
        pool.give(work, Matcher.from_lists([]))  # type: ignore[arg-type]
        todo = [SimpleNamespace(id=i, where=f"unit {i}") for i in range(units)]
        _Coordinator(pool, run, Progress()).run(todo)  # type: ignore[arg-type]


def test_workers_that_die_whatever_they_run_stop_the_run_as_worker_deaths_not_a_units_failure() -> None:
    from scanner.errors import ScannerError

    with pytest.raises(ScannerError, match=r"unit workers died 4 times in a row .*killed \(SIGKILL\)"):
        _run_units_on_one_worker(_DyingWork(), 3, [])


def test_a_poison_unit_that_kills_its_worker_before_any_row_is_named_and_the_others_finish() -> None:
    from scanner.errors import ScannerError

    committed: list[int] = []
    with pytest.raises(
        ScannerError, match=r"^unit 2 failed 3 times, last because its worker process was killed"
    ):
        _run_units_on_one_worker(_PoisonUnitWork(poison=2), 4, committed)
    assert committed == [0, 1, 3]  # 0 and 1 died beside it, then ran alone; 3 ran between its deaths


@pytest.mark.parametrize("poison", [0, 1])
def test_a_poison_unit_is_named_not_the_neighbour_that_had_sent_rows_when_it_killed_their_worker(
    poison: int,
) -> None:
    """Whether it is first in line or not, on one worker: between its own deaths, alone, the others run,
    so its deaths in a row never pass for the workers dying whatever they run."""
    from scanner.errors import ScannerError

    committed: list[int] = []
    with pytest.raises(
        ScannerError, match=rf"^unit {poison} failed 3 times, last because its worker process was killed"
    ):
        _run_units_on_one_worker(_PoisonUnitWork(poison=poison, rows_first=True), 3, committed)
    assert sorted(committed) == sorted({0, 1, 2} - {poison})


class _DeadWorker:
    """A unit worker as _Coordinator._lost sees one that died: its units, nothing left on its pipe."""

    def __init__(self, running: dict[int, object]) -> None:
        from types import SimpleNamespace

        self.running = running
        self.conn = SimpleNamespace(poll=lambda: False)
        self.process = SimpleNamespace(join=lambda: None)

    def died(self) -> str:
        return "its worker process was killed (SIGKILL)"


class _CountingProgress:
    def __init__(self) -> None:
        self.rows = 0

    def rows_done(self, counts: dict) -> None:
        self.rows += sum(counts.values())


def _coordinator_with(worker: _DeadWorker, replaced: list) -> tuple:
    from types import SimpleNamespace

    from scanner.runners.procs import _Coordinator

    pool = SimpleNamespace(workers=[worker], replace=replaced.append)
    progress = _CountingProgress()
    run = SimpleNamespace(config=build_config({}, "test"))
    return _Coordinator(pool, run, progress), progress  # type: ignore[arg-type]


def test_units_that_died_together_leave_the_bar_and_are_run_again_each_alone_uncharged() -> None:
    from types import SimpleNamespace

    units = {i: SimpleNamespace(id=i, where=f"unit {i}") for i in range(3)}
    worker = _DeadWorker(dict(units))
    replaced: list = []
    coordinator, progress = _coordinator_with(worker, replaced)
    coordinator._attempts.update({0: 1, 1: 1, 2: 1})
    key = ("clean", None, "live")
    coordinator._handle(worker, ("rows", {0: {key: 7}, 1: {key: 2}}, 0))
    assert progress.rows == 9
    coordinator._lost(worker)
    assert progress.rows == 0  # units 0 and 1 are counted again when they are done again
    assert dict(coordinator._attempts) == {0: 0, 1: 0, 2: 0}  # any of them may have killed it
    assert set(coordinator._suspects) == {0, 1, 2}
    assert [u.id for u in coordinator._queue] == [0, 1, 2] and replaced == [worker]


def test_a_suspect_that_dies_alone_is_charged_clears_its_neighbours_and_waits_behind_the_queue() -> None:
    from types import SimpleNamespace

    units = [SimpleNamespace(id=i, where=f"unit {i}") for i in range(4)]
    worker = _DeadWorker({u.id: u for u in units[:3]})
    coordinator, _ = _coordinator_with(worker, [])
    coordinator._queue.append(units[3])
    coordinator._attempts.update({0: 1, 1: 1, 2: 1})
    coordinator._lost(worker)  # 0, 1 and 2 together: suspects, uncharged, first in line
    assert [u.id for u in coordinator._queue] == [0, 1, 2, 3]
    coordinator._queue.popleft()
    coordinator._attempts[0] += 1
    worker.running = {0: units[0]}
    coordinator._lost(worker)  # 0 alone: its doing
    assert coordinator._attempts[0] == 1 and set(coordinator._suspects) == {0}
    assert [u.id for u in coordinator._queue] == [1, 2, 3, 0]


def test_rows_a_unit_committed_in_parts_stay_on_the_bar_through_every_death() -> None:
    from types import SimpleNamespace

    from scanner.outcomes import Outcome
    from scanner.reports.records import RowResult, UnitReport

    unit = SimpleNamespace(id=0, where="unit 0")
    worker = _DeadWorker({0: unit})
    coordinator, progress = _coordinator_with(worker, [])
    committed: list = []
    coordinator._run.checkpoint = SimpleNamespace(commit_part=lambda *part: committed.append(part))
    key = (Outcome.DEAD, "dns_failure", "dead")
    row = RowResult(shard="s", row=0, url="http://a/", key=None, outcome=Outcome.DEAD, reason="dns_failure")
    part = [(i, UnitReport(0, [row])) for i in range(3)]
    coordinator._handle(worker, ("rows", {0: {key: 5}}, 0))
    coordinator._handle(worker, ("part", 0, part))  # 3 of the 5 rows shown are kept
    coordinator._lost(worker)
    assert progress.rows == 3 and len(committed) == 1  # the kept rows are not run again: still counted
    coordinator._handle(worker, ("rows", {0: {key: 1}}, 0))  # the rerun's own rows
    coordinator._lost(worker)
    assert progress.rows == 3  # counted once, however often the unit is run again


def test_workers_that_keep_dying_without_a_row_done_stop_the_run_with_one_error() -> None:
    from scanner.errors import ScannerError
    from scanner.runners.procs import DEATHS_PER_WORKER

    worker = _DeadWorker({})  # idle: no unit to charge, so only the bound on deaths can stop it
    coordinator, _ = _coordinator_with(worker, [])
    for _ in range(DEATHS_PER_WORKER):
        coordinator._lost(worker)
    with pytest.raises(ScannerError, match=r"died 4 times in a row without finishing a row.*resume"):
        coordinator._lost(worker)
    coordinator._deaths = 0
    coordinator._handle(worker, ("rows", {None: {("dead", "dns", "dead"): 1}}, 0))
    assert coordinator._deaths == 0


def test_a_body_budget_below_the_workers_floor_is_said_with_the_total_they_may_hold() -> None:
    from scanner.runners.procs import body_budget_note, body_bytes_total

    mib = 1024 * 1024
    settings = {"inputs": ["x"], "out": "o", "fetch": {"max_bytes": 16 * mib}}
    config = build_config({**settings, "run": {"body_bytes_in_flight": 64 * mib}}, "test")
    assert body_bytes_total(config, 16) == 16 * 32 * mib
    note = body_budget_note(config, 16)
    assert note is not None and "512 MiB" in note and "64 MiB" in note and "16 unit workers" in note
    assert body_budget_note(config, 2) is None  # 2 x 32 MiB fits


def test_a_scan_says_the_body_total_once_at_start_and_not_with_quiet(tmp_path, scanner_cli) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/a.jpg"]}), tmp_path / "s.parquet")
    (tmp_path / "md5.txt").write_text("0" * 32 + "\n")
    run = "[run]\nworkers = 2\nhashers_per_unit_worker = 1\nbody_bytes_in_flight = 16777216\n"
    (tmp_path / "c.toml").write_text(run)
    common = ["scan", "s.parquet", "--hashlist", "md5:md5.txt", "--config", "c.toml"]
    common.append("--allow-private-networks")
    shown = scanner_cli(*common, "--out", "o1", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    notes = [line for line in shown.stderr.splitlines() if "scanner: warning: bodies" in line]
    assert len(notes) == 1 and "32 MiB" in notes[0] and "(16 MiB)" in notes[0], shown.stderr
    quiet = scanner_cli(*common, "--out", "o2", "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr

"""The hash-type registry: every type passes the contract, every table derives from it, and a toy type added
in one place (its registry entry and its hasher, here) is matched, stored, rematched and reported."""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from audit_support import images, matched_entries, outcomes, run_scan, write_shard
from contracts import HashTypeContract
from loopback import LoopbackServer

from scanner.audits.rematch import rematch
from scanner.config import build_config
from scanner.errors import HashListError
from scanner.hashing import HASH_TYPES, HASHERS, hash_file_record
from scanner.hashing.hashers import Hasher, HashInput, register_hasher, unregister_hasher
from scanner.hashtypes import (
    HAMMING,
    IMAGE,
    REGISTRY,
    HashType,
    listable_types,
    recorded_types,
    register,
    registered,
)
from scanner.lists import LIST_TYPE_NAMES, MatchConfig, load_hashlist
from scanner.reports.hashes import HASHES_SCHEMA, hashes_schema
from scanner.reports.verify import verify_report
from scanner.run.job import hashing_job
from scanner.screen import URL_TYPES, content_digests, parse_match_columns

REPO = Path(__file__).resolve().parents[1]


class TestRegisteredHashTypes(HashTypeContract):
    """Every built-in type passes the contract."""

    @pytest.fixture(params=list(REGISTRY))
    def hash_type(self, request: pytest.FixtureRequest) -> HashType:
        return REGISTRY[request.param]


def test_every_image_type_has_exactly_one_hasher_and_every_hasher_a_type() -> None:
    image_types = [name for name, t in REGISTRY.items() if t.computed_from == IMAGE]
    assert sorted(HASHERS) == sorted(image_types)
    assert all(HASHERS[name].name == name for name in HASHERS)
    assert frozenset(image_types) == HASH_TYPES


def test_the_tables_derive_from_the_registry() -> None:
    """The names and widths every stage used to list itself, as the registry gives them (values unchanged)."""
    recorded = [t.name for t in recorded_types()]
    assert recorded == ["md5", "sha1", "sha256", "pdq", "phash", "dhash"]
    assert list(LIST_TYPE_NAMES) == [t.name for t in listable_types()]
    assert list(LIST_TYPE_NAMES) == [*recorded, "url_md5", "url_sha1", "url_sha256", "url", "domain"]
    assert frozenset({"url", "url_md5", "url_sha1", "url_sha256", "domain"}) == URL_TYPES
    assert content_digests() == ("md5", "sha1", "sha256")
    assert {t.name: t.nbytes for t in recorded_types()} == {
        "md5": 16, "sha1": 20, "sha256": 32, "pdq": 32, "phash": 8, "dhash": 8,
    }  # fmt: skip
    config = MatchConfig()
    assert (config.pdq_threshold, config.phash_threshold, config.dhash_threshold) == (31, 8, 8)
    assert [config.threshold("any", t) for t in ("md5", "pdq", "phash", "dhash", "url")] == [0, 31, 8, 8, 0]
    assert hashes_schema().equals(HASHES_SCHEMA, check_metadata=True)
    with pytest.raises(ValueError, match="already registered"):
        register(REGISTRY["md5"])


def test_lists_and_reports_do_not_import_hashing_and_the_registry_imports_no_stage() -> None:
    """The registry is the low module both sides use: lists/ never imports hashing/, the registry nothing."""

    def imports(path: Path) -> set[str]:
        """Every module imported at run time (anywhere but under `if TYPE_CHECKING:`)."""
        found: set[str] = set()
        todo: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
        while todo:
            node = todo.pop()
            if (
                isinstance(node, ast.If)
                and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING"
            ):
                todo.extend(node.orelse)
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            todo.extend(ast.iter_child_nodes(node))
        return found

    for path in (REPO / "scanner" / "lists").glob("*.py"):
        assert not {m for m in imports(path) if m.startswith("scanner.hashing")}, path.name
    reports = imports(REPO / "scanner" / "reports" / "hashes.py")
    assert not {m for m in reports if m.startswith(("scanner.hashing", "scanner.fetch"))}
    assert not {m for m in imports(REPO / "scanner" / "hashtypes.py") if m.startswith("scanner")}


# The toy: an 8-byte digest of the body, matched within 2 bits. Everything it needs is these two objects.
TOY = HashType("toy", 8, IMAGE, HAMMING, threshold=2, histogram_bits=4)


class ToyHasher(Hasher):
    """BLAKE2b-64 of the body: no pixels needed."""

    name = "toy"
    needs_pixels = False

    def compute(self, source: HashInput) -> dict[str, object]:
        return {"toy": toy_hash(source.data)}


def toy_hash(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=8).digest()


@pytest.fixture
def toy() -> Iterator[HashType]:
    with registered(TOY):
        register_hasher(ToyHasher())
        try:
            yield TOY
        finally:
            unregister_hasher("toy")


class TestToyHashType(HashTypeContract):
    """A registered toy type passes the same contract."""

    @pytest.fixture
    def hash_type(self, toy: HashType) -> HashType:
        return toy


class InProcessHasher:
    """A hash function hashing in this process: the toy is registered here, not in spawned processes (a
    real type is registered at import, so unit workers and hashing workers have it too)."""

    def __init__(self, job) -> None:
        self._job = job

    async def __call__(self, body: bytes):
        await asyncio.sleep(0)
        return self._job(body)


def units_in_this_process(run, units, progress=None, *, pool) -> None:
    """The local runner's run_units with the units run here, through the job's own processor, hashing
    here."""

    async def here() -> None:
        hash_fn = InProcessHasher(hashing_job(run.config, run.matcher))
        processor = run.work().open(run.config, run.matcher, hash_fn, progress)
        try:
            for unit in units:
                run.checkpoint.commit(await processor.run_unit(unit))
        finally:
            await processor.aclose()

    asyncio.run(here())


def test_a_toy_type_added_in_one_place_is_matched_stored_rematched_and_reported(
    toy: HashType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("scanner.runners.local.run_units", units_in_this_process)
    bodies = images(4, first_seed=300)
    toys = [toy_hash(body) for body in bodies]
    near = bytes([toys[2][0] ^ 0x01, toys[2][1] ^ 0x10]) + toys[2][2:]  # 2 bits from image 2's
    listed = tmp_path / "toys.csv"
    listed.write_text(f"hash_type,hash,id\ntoy,{toys[1].hex()},t-exact\ntoy,{near.hex()},t-near\n")
    files = {f"/{i}.jpg": body for i, body in enumerate(bodies)}
    with LoopbackServer(files) as server:
        urls = [server.url(f"/{i}.jpg") for i in range(len(bodies))]
        shard = write_shard(tmp_path / "shard.parquet", {"url": urls})
        scanned = tmp_path / "scan"
        run_scan(shard, scanned, [f"toys={listed}"], audit={"keep_hashes": True})

    # matched: exactly, and within the toy's own default threshold
    assert matched_entries(scanned) == [(1, "toys", "toy", "t-exact"), (2, "toys", "toy", "t-near")]
    lines = (scanned / "matches.jsonl").read_text().splitlines()
    distances = [json.loads(line)["distance"] for line in lines]
    assert distances == [0, 2]
    assert outcomes(scanned) == ["clean", "match", "match", "clean"]

    # stored: a toy column in hashes.parquet, beside the built-in ones
    table = pq.read_table(scanned / "hashes.parquet")
    assert table.column("toy").to_pylist() == [value.hex() for value in toys]
    assert table.column("md5").to_pylist() == [hashlib.md5(body).hexdigest() for body in bodies]

    # rematched: no network, against a list that now holds image 3's toy hash too
    updated = tmp_path / "toys2.csv"
    updated.write_text(listed.read_text() + f"toy,{toys[3].hex()},t-new\n")
    again = tmp_path / "rematch"
    config = build_config({"out": str(again), "hashlist": [f"toys={updated}"]}, "test")
    result = rematch([str(scanned)], config)
    assert matched_entries(again) == [
        (1, "toys", "toy", "t-exact"),
        (2, "toys", "toy", "t-near"),
        (3, "toys", "toy", "t-new"),
    ]
    assert result.summary["matches"]["by_hash_type"] == {"toy": 3}
    assert pq.read_table(again / "hashes.parquet").column("toy").to_pylist() == [v.hex() for v in toys]

    # reported: summary, the HTML page's distance histogram, a report that verifies
    html = (again / "report.html").read_text(encoding="utf-8")
    assert "Hamming distance of toy matches" in html
    assert verify_report(scanned).ok and verify_report(again).ok

    # and the other tables: --match-column takes it, `scanner hash` prints it
    assert parse_match_columns(["t=toy"]) == {"t": "toy"}
    image = tmp_path / "image.jpg"
    image.write_bytes(bodies[0])
    assert hash_file_record(image)["toy"] == toys[0].hex()


def test_the_toy_is_registered_while_its_fixture_lasts(toy: HashType) -> None:
    """Registered for one test at a time; the next test sees nothing of it."""
    assert "toy" in REGISTRY and "toy" in HASHERS and "toy" in hashes_schema().names


def test_nothing_keeps_the_toy_after_it_is_unregistered(tmp_path: Path) -> None:
    assert "toy" not in REGISTRY and "toy" not in HASHERS and "toy" not in LIST_TYPE_NAMES
    assert "toy" not in hashes_schema().names
    path = tmp_path / "t.csv"
    path.write_text("hash_type,hash\ntoy,0011223344556677\n")
    with pytest.raises(HashListError, match="unknown hash type 'toy'"):
        load_hashlist(str(path))

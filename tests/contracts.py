"""Contract tests for extension points: a subclass names what to check, the base class says what must hold.

Each contract is a base class of tests (like python-threatexchange's SignalTypeHashTest); a test module holds
one subclass per implementation, so adding an implementation is adding a subclass:

- HashTypeContract: every hash type in scanner.hashtypes.REGISTRY, and any a test registers (test_hashtypes).
- SourceContract: every source kind open_source gives (test_contract_sources).
- TransportContract: every HTTP client make_fetcher builds, over tests/loopback.py (test_contract_transports).
- ListFormatContract: every format in scanner/lists/formats.py (test_contract_listformats).

Images are generated in memory (tests/images.py, tests/source_support.py); the network is 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import itertools
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pytest
from images import encode, make_image
from loopback import LoopbackServer, tiny_jpeg
from source_support import image_bytes

from scanner.errors import HashListError, SourceError
from scanner.fetch import FetchConfig, FetchResult, make_fetcher
from scanner.fetch.base import CLIENTS
from scanner.hashing import HASHERS, hash_image
from scanner.hashtypes import IMAGE, REGISTRY, URL, HashType
from scanner.lists import DuplicateHashWarning, HashList, load_hashlist
from scanner.lists.hashtypes import list_keys
from scanner.outcomes import SourceReason
from scanner.reports.hashes import hashes_schema, hex_columns
from scanner.sources import Row, Source, SourceOptions, open_source

TEXT_SAMPLES = {"url": "http://example.com/a/b.jpg", "host": "images.example.com"}


def sample(hash_type: HashType, seed: int = 0) -> bytes:
    """Random bytes of the type's width, the same for the same seed."""
    return random.Random(f"{hash_type.name}/{seed}").randbytes(hash_type.nbytes)


class HashTypeContract:
    """What every hash type promises: registered under its name, a width, a hex codec that round-trips,
    distances within its bits, a threshold within them, exactly one hasher for image types (whose output
    has the width), a key codec for listable types, a hashes.parquet column for recorded ones."""

    @pytest.fixture
    def hash_type(self) -> HashType:
        raise NotImplementedError("a contract subclass provides the hash type")

    def test_registered_under_its_name(self, hash_type: HashType) -> None:
        assert REGISTRY[hash_type.name] is hash_type
        assert hash_type.name == hash_type.name.lower() and hash_type.name.isidentifier()
        assert hash_type.nbytes > 0 and hash_type.bits == 8 * hash_type.nbytes

    def test_hex_round_trip(self, hash_type: HashType) -> None:
        for seed in range(4):
            value = sample(hash_type, seed)
            text = hash_type.to_hex(value)
            assert text == text.lower() and len(text) == 2 * hash_type.nbytes
            assert hash_type.from_hex(text) == value
            assert hash_type.from_hex(text.upper()) == value

    def test_wrong_width_is_refused(self, hash_type: HashType) -> None:
        value = sample(hash_type)
        with pytest.raises(ValueError):
            hash_type.to_hex(value + b"\0")
        with pytest.raises(ValueError):
            hash_type.from_hex(value.hex()[:-2])

    def test_distance(self, hash_type: HashType) -> None:
        a, b = sample(hash_type, 1), sample(hash_type, 2)
        assert hash_type.distance(a, a) == 0
        assert hash_type.distance(a, b) == hash_type.distance(b, a) <= hash_type.bits
        flipped = bytes([a[0] ^ 0x80]) + a[1:]
        assert hash_type.distance(a, flipped) == 1

    def test_threshold_within_width(self, hash_type: HashType) -> None:
        assert 0 <= hash_type.threshold <= hash_type.bits
        assert (hash_type.threshold > 0) == hash_type.hamming  # exact types match at distance 0 only
        assert hash_type.histogram_bits <= hash_type.bits

    def test_computed_by_exactly_one_hasher_when_from_images(self, hash_type: HashType) -> None:
        assert hash_type.computed_from in (IMAGE, URL)
        if hash_type.computed_from == URL:
            assert hash_type.name not in HASHERS  # the screen computes it from the URL's normal form
            return
        assert [name for name in HASHERS if name == hash_type.name] == [hash_type.name]
        assert HASHERS[hash_type.name].size == hash_type.nbytes
        image = encode(make_image(7, (96, 64)), "PNG")
        value = hash_image(image, frozenset({hash_type.name})).get(hash_type.name)
        values = value if hash_type.variant_of else (value,)
        assert len(values) == max(1, len(hash_type.transforms))
        assert all(isinstance(v, bytes) and len(v) == hash_type.nbytes for v in values)

    def test_listable_types_have_keys(self, hash_type: HashType) -> None:
        if not hash_type.listable:
            with pytest.raises(KeyError):
                list_keys(hash_type.name)
            assert hash_type.variant_of in REGISTRY
            return
        keys = list_keys(hash_type.name)
        assert (keys.name, keys.nbytes, keys.hamming) == (hash_type.name, hash_type.nbytes, hash_type.hamming)
        if hash_type.text:
            parsed = keys.parse(pa.array([TEXT_SAMPLES[hash_type.normal_form]]))
            assert parsed.keys.shape == (1, hash_type.nbytes)
        else:
            value = sample(hash_type)
            parsed = keys.parse(pa.array([hash_type.to_hex(value)]))
            assert parsed.keys.tobytes() == value
            assert keys.query_keys(value) == [value]

    def test_recorded_types_are_hashes_columns(self, hash_type: HashType) -> None:
        schema = hashes_schema()
        if hash_type.computed_from == URL:
            assert hash_type.name not in hex_columns() and "url" in schema.names  # the URL is screened again
        elif hash_type.variant_of:
            assert schema.field(hash_type.name).type == pa.list_(pa.string(), len(hash_type.transforms))
        else:
            assert schema.field(hash_type.name).type == pa.string()
            if hash_type.quality_column:
                assert schema.field(hash_type.quality_column).type == pa.int32()


# -- sources ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One input record a SourceContract subclass writes: a URL, a key, and for corpora the image bytes."""

    url: str | None
    key: str | None
    body: bytes | None = None


def source_records(count: int, bodies: bool) -> list[Record]:
    """Records with URLs and keys that need quoting or escaping somewhere (commas, quotes, a line break,
    non-ASCII), and one without a URL (still a row: the pipeline calls it invalid, empty_url)."""
    records = []
    for i in range(count):
        if i % 7 == 4:
            url = None
        elif i % 3 == 1:
            url = f'http://example.com/{i}/caf\u00e9.jpg?a=1,b="{i}"'
        else:
            url = f"http://h{i}.test/{i}.jpg"
        key = f"key\n{i}" if i % 7 == 5 else f"k,{i} \u00fc" if i % 2 else f"key{i}"
        records.append(Record(url, key, image_bytes(i) if bodies else None))
    return records


def row_fields(row: Row) -> tuple:
    """Everything a row says, for comparing two reads."""
    return (row.shard, row.row, row.url, row.key, row.body, row.member, row.error, row.columns)


class SourceContract:
    """What every source kind promises: one Row per input record, in order, numbered 0..n-1, each one the
    pipeline can give an outcome (a record without a URL is still a row: `invalid`, `empty_url`); the
    record's URL and key carried, stripped, however the format had to quote them; the same rows whether
    the shard is read whole or span by span, for every way of cutting it into spans, each span readable
    alone; a corrupt input is a SourceError naming the file, or rows whose `error` is a SourceReason, the
    same on every read; reads are bounded (batches of at most `max_batch_rows`, image members over
    `max_member_bytes` reported, not read).

    A subclass sets `kind` (Source.kind), `bodies` (whether rows carry the image), `carries_keys`, and
    implements `write(directory, records) -> path` and `write_corrupt(directory) -> path`."""

    kind: str
    bodies: bool = False
    carries_keys: bool = True
    max_batch_rows: int
    records = 7

    def write(self, directory: Path, records: list[Record]) -> Path:
        raise NotImplementedError("a contract subclass writes a shard of its kind")

    def write_corrupt(self, directory: Path) -> Path:
        raise NotImplementedError("a contract subclass writes a damaged shard of its kind")

    def open(self, path: Path, **options: object) -> Source:
        return open_source(str(path), SourceOptions(**options))

    def read(self, path: Path, **options: object) -> list[Row]:
        source = self.open(path, **options)
        return [row for span in source.spans() for batch in source.read(span) for row in batch]

    def expected(self, record: Record) -> tuple[str | None, str | None, bytes | None]:
        return record.url, record.key if self.carries_keys else None, record.body

    def test_kind(self, tmp_path: Path) -> None:
        path = self.write(tmp_path, source_records(self.records, self.bodies))
        source = self.open(path)
        assert source.kind == self.kind and source.path == str(path)

    def test_one_outcomeable_row_per_record_in_order(self, tmp_path: Path) -> None:
        records = source_records(self.records, self.bodies)
        path = self.write(tmp_path, records)
        rows = self.read(path)
        assert [row.row for row in rows] == list(range(len(records)))
        assert all(row.shard == str(path) for row in rows)
        for row in rows:
            assert isinstance(row, Row) and row.error is None  # an intact shard
            assert isinstance(row.body, bytes) if self.bodies else row.body is None
            assert row.url is None or (isinstance(row.url, str) and row.url == row.url.strip())

    def test_urls_keys_and_bodies_carried(self, tmp_path: Path) -> None:
        records = source_records(self.records, self.bodies)
        rows = self.read(self.write(tmp_path, records))
        assert [(row.url, row.key, row.body) for row in rows] == [self.expected(r) for r in records]

    def test_whole_equals_span_by_span_for_every_split(self, tmp_path: Path) -> None:
        records = source_records(self.records, self.bodies)
        path = self.write(tmp_path, records)
        whole = [row_fields(row) for row in self.read(path, rows_per_unit=len(records) + 1)]
        assert len(whole) == len(records)
        for per_unit in range(1, len(records) + 1):
            source = self.open(path, rows_per_unit=per_unit)
            spans = source.spans()
            assert spans[0].start == 0 and spans[-1].stop == len(records)
            assert all(a.stop == b.start and a.rows > 0 for a, b in itertools.pairwise(spans))
            pieces = [
                [row_fields(r) for batch in source.read(span) for r in batch] for span in reversed(spans)
            ]
            assert [len(piece) for piece in pieces] == [span.rows for span in reversed(spans)]
            assert [row for piece in reversed(pieces) for row in piece] == whole, f"rows_per_unit={per_unit}"

    def test_corrupt_input_is_named_or_rows_say_why(self, tmp_path: Path) -> None:
        path = self.write_corrupt(tmp_path)
        try:
            rows = self.read(path)
        except SourceError as error:
            assert error.path == str(path) and str(path) in str(error)
            with pytest.raises(SourceError) as again:
                self.read(path)
            assert str(again.value) == str(error)
            return
        assert [row.row for row in rows] == list(range(len(rows)))
        damaged = [row for row in rows if row.error is not None]
        assert damaged, "a corrupt input gives a SourceError or rows that say why"
        assert all(isinstance(row.error, SourceReason) and row.body is None for row in damaged)
        assert [row_fields(row) for row in self.read(path)] == [row_fields(row) for row in rows]

    def test_reads_are_bounded(self, tmp_path: Path) -> None:
        records = source_records(self.max_batch_rows + 1, self.bodies)
        path = self.write(tmp_path, records)
        source = self.open(path, rows_per_unit=len(records))
        batches = [batch for span in source.spans() for batch in source.read(span)]
        assert sum(map(len, batches)) == len(records)
        assert all(0 < len(batch) <= self.max_batch_rows for batch in batches)
        if self.bodies:
            capped = self.read(path, max_member_bytes=16)
            assert [row.row for row in capped] == list(range(len(records)))
            assert all(r.body is None and r.error == SourceReason.MEMBER_TOO_LARGE for r in capped)


# -- transports ------------------------------------------------------------------------------------------

TRANSPORT_FILES = {"/img.jpg": tiny_jpeg()}


def transport_config(client: str, **changes: object) -> FetchConfig:
    """127.0.0.1 allowed (nothing else private), short deadlines, a small body cap."""
    settings: dict[str, object] = {
        "client": client,
        "allowed_networks": ("127.0.0.1/32",),
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
        "total_timeout": 5.0,
        "max_bytes": 100_000,
        "retry_backoff": 0.01,
        "max_retry_after": 1.0,
    }
    return FetchConfig(**{**settings, **changes})


def fetch_urls(config: FetchConfig, urls: list[str], **kwargs: object) -> list[FetchResult]:
    """The results of fetching urls at once through one make_fetcher fetcher."""

    async def run() -> list[FetchResult]:
        fetcher = make_fetcher(config)
        try:
            return list(await asyncio.gather(*(fetcher.fetch(url, **kwargs) for url in urls)))
        finally:
            await fetcher.aclose()

    return asyncio.run(run())


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def observable(result: FetchResult, base_url: str) -> tuple:
    """What a result says about the server, with its address made relative (time aside)."""
    final = result.final_url.removeprefix(base_url) if result.final_url else None
    return (
        result.outcome,
        result.reason,
        result.status,
        result.body,
        final,
        result.content_type,
        result.content_length,
        result.server_ip,
        result.etag,
        result.last_modified,
    )


# Server behaviours every client must give the same result for: path -> (outcome, reason, status).
SCENARIOS = {
    "/img.jpg": ("ok", None, 200),
    "/status/404": ("dead", "http_404", 404),
    "/status/500": ("dead", "http_500", 500),
    "/redirect/2": ("ok", None, 200),
    "/loop": ("dead", "redirect_loop", 302),
    "/redirect-to?url=ftp://127.0.0.1/x": ("blocked", "blocked_scheme", 302),
    "/huge?length=100000": ("ok", None, 200),
    "/huge?length=100001": ("invalid", "body_too_large", 200),
    "/truncated": ("invalid", "truncated_body", 200),
    "/encoded/gzip": ("ok", None, 200),
    "/not-http": ("invalid", "bad_response", None),
    "/headers-huge?size=20000": ("invalid", "headers_too_large", None),
    "/encoded/bad": ("invalid", "bad_content_encoding", 200),
}


class TransportContract:
    """What every HTTP client promises behind make_fetcher (FetchConfig.client), over a loopback server: a
    200's body read whole into memory; a 404 `dead` `http_404`; redirects followed to the end, every target
    screened first (a screened one never requested); the body cap (`body_too_large`, nothing kept); the total
    deadline (`timeout`) whatever the server trickles; `connection_refused`; a private address `blocked`
    with no request under the default policy; and for the same server behaviour the same result as every
    other client. A subclass sets `client`."""

    client: str

    @pytest.fixture
    def server(self) -> Iterator[LoopbackServer]:
        with LoopbackServer(TRANSPORT_FILES) as running:
            yield running

    def fetch(self, url: str, config: FetchConfig | None = None, **kwargs: object) -> FetchResult:
        return fetch_urls(config or transport_config(self.client), [url], **kwargs)[0]

    def test_200_body_read_into_memory(self, server: LoopbackServer) -> None:
        result = self.fetch(server.url("/img.jpg"))
        assert (result.outcome, result.reason, result.status) == ("ok", None, 200)
        assert result.body == TRANSPORT_FILES["/img.jpg"] and result.content_length == len(result.body)
        assert result.url == result.final_url == server.url("/img.jpg")
        assert result.server_ip == "127.0.0.1" and result.content_type == "image/jpeg"

    def test_404_is_dead(self, server: LoopbackServer) -> None:
        result = self.fetch(server.url("/status/404"))
        assert (result.outcome, result.reason, result.status, result.body) == ("dead", "http_404", 404, None)
        assert server.total_hits == 1

    def test_redirects_followed_and_screened(self, server: LoopbackServer) -> None:
        result = self.fetch(server.url("/redirect/2"))
        assert (result.outcome, result.body, result.final_url) == (
            "ok",
            b"end of chain",
            server.url("/redirect/0"),
        )
        server.reset_hits()
        seen: list[str] = []

        def screen(url: str) -> str | None:
            seen.append(url)
            return "screened_url" if url.endswith("/redirect/0") else None

        result = self.fetch(server.url("/redirect/2"), screen=screen)
        assert (result.outcome, result.reason, result.status) == ("blocked", "screened_url", 302)
        assert result.body is None and result.final_url == server.url("/redirect/0")
        assert seen == [server.url(f"/redirect/{n}") for n in (2, 1, 0)]
        assert server.hits("/redirect/0") == 0 and server.total_hits == 2

    def test_body_cap(self, server: LoopbackServer) -> None:
        config = transport_config(self.client, max_bytes=50_000)
        for path in ("/huge?length=50001", "/huge"):
            result = self.fetch(server.url(path), config=config)
            assert (result.outcome, result.reason, result.body) == ("invalid", "body_too_large", None), path

    def test_total_deadline(self, server: LoopbackServer) -> None:
        config = transport_config(self.client, total_timeout=0.4)
        started = time.monotonic()
        result = self.fetch(server.url("/trickle"), config=config)
        assert (result.outcome, result.reason, result.body) == ("dead", "timeout", None)
        assert time.monotonic() - started < 3

    def test_connection_refused(self) -> None:
        result = self.fetch(f"http://127.0.0.1:{closed_port()}/img.jpg")
        assert (result.outcome, result.reason, result.status) == ("dead", "connection_refused", None)

    def test_private_address_blocked_by_default(self, server: LoopbackServer) -> None:
        config = FetchConfig(client=self.client)
        for url in (server.url("/img.jpg"), server.url("/img.jpg").replace("127.0.0.1", "localhost")):
            result = self.fetch(url, config=config)
            assert (result.outcome, result.reason, result.body) == (
                "blocked",
                "blocked_private_address",
                None,
            )
        assert server.total_hits == 0

    def test_same_results_as_every_other_client(self, server: LoopbackServer) -> None:
        urls = [server.url(path) for path in SCENARIOS]
        results = {}
        for client in CLIENTS:
            server.reset_hits()
            results[client] = [
                observable(r, server.base_url) for r in fetch_urls(transport_config(client), urls)
            ]
        mine = results[self.client]
        assert {path: result[:3] for path, result in zip(SCENARIOS, mine, strict=True)} == SCENARIOS
        for client, theirs in results.items():
            for path, a, b in zip(SCENARIOS, mine, theirs, strict=True):
                assert a == b, f"{self.client} and {client} differ on {path}"


# -- list formats ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One hash list entry as a ListFormatContract subclass writes it."""

    hash_type: str
    text: str  # lower-case hex, or a URL or host for text types
    id: str | None = None
    category: str | None = None


def list_entries(types: tuple[str, ...], per_type: int = 3) -> list[Entry]:
    """Entries of each type, interleaved (type of entry i is types[i % len(types)])."""
    entries = []
    for i in range(per_type * len(types)):
        name = types[i % len(types)]
        hash_type = REGISTRY[name]
        if hash_type.normal_form == "url":
            text = f"HTTP://Example.COM:80/contract/{i}?q=1#frag"
        elif hash_type.normal_form == "host":
            text = f"Img{i}.Example.COM."
        else:
            text = sample(hash_type, i).hex()
        entry_id = f'entry, "{i}" \u00e9' if i % 4 == 3 else f"entry-{i}"  # quoting, non-ASCII
        entries.append(Entry(name, text, entry_id, f"cat\u00e9gorie {i % 2}"))
    return entries


def csv_line(values: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


def canonical_csv(entries: list[Entry], ids: bool, categories: bool) -> str:
    """The same entries in the scanner's own CSV, with only the columns the other format keeps."""
    header = ["hash_type", "hash"] + ["id"] * ids + ["category"] * categories
    rows = [[e.hash_type, e.text] + [e.id or ""] * ids + [e.category or ""] * categories for e in entries]
    return "\n".join(csv_line(values) for values in [header, *rows]) + "\n"


def loaded_entries(hash_list: HashList) -> dict[str, list[tuple[bytes, str, str | None]]]:
    """Every entry of a loaded list: its key, id and category, by type, in file order."""
    return {
        name: [(e.keys[i].tobytes(), e.entry_id(i), e.category(i)) for i in range(len(e))]
        for name, e in hash_list.entries.items()
    }


class ListFormatContract:
    """What every hash list format promises (scanner/lists/formats.py): a file written in the format loads,
    sniffed as that format, to exactly the entries of the canonical CSV holding the same entries (keys, ids
    and categories where the format has them, else the hash's own text and none); a malformed line, or a hash
    of the wrong width, is a HashListError naming the file and that line; a list with no entry is refused;
    a repeated hash is merged into its first entry with a DuplicateHashWarning.

    A subclass sets `format_name` (HashList.format), `types` (the hash types it holds), `spec_type` (the
    TYPE: prefix its files need, if any), `ids`/`categories` (whether it keeps them), `garbage` (a line
    malformed in this format) and implements `header()` and `line(entry)`."""

    format_name: str
    types: tuple[str, ...]
    spec_type: str | None = None
    ids = False
    categories = False
    garbage: str

    def header(self) -> list[str]:
        return []

    def line(self, entry: Entry) -> str:
        raise NotImplementedError("a contract subclass writes one entry as a line of its format")

    def text(self, lines: list[str]) -> str:
        return "\n".join(["# written by the list format contract", *self.header(), *lines]) + "\n"

    def load(self, path: Path) -> HashList:
        return load_hashlist(f"{self.spec_type}:{path}" if self.spec_type else str(path))

    def write(self, directory: Path, name: str, text: str) -> Path:
        path = directory / name
        path.write_text(text, encoding="utf-8")
        return path

    def test_loads_to_the_canonical_csv_entries(self, tmp_path: Path) -> None:
        entries = list_entries(self.types)
        text = self.text([self.line(e) for e in entries])
        canonical = load_hashlist(
            str(self.write(tmp_path, "canonical.csv", canonical_csv(entries, self.ids, self.categories)))
        )
        assert canonical.format == "csv"
        # As written here, and as a Windows editor saves it: a byte order mark and CRLF line breaks.
        windows = self.write(tmp_path, "windows.txt", "\ufeff" + text.replace("\n", "\r\n"))
        assert loaded_entries(self.load(windows)) == loaded_entries(canonical)
        path = self.write(tmp_path, "list.txt", text)
        loaded = self.load(path)
        assert loaded.format == self.format_name
        assert loaded.counts == {name: self.types.count(name) * 3 for name in sorted(set(self.types))}
        assert loaded_entries(loaded) == loaded_entries(canonical)
        assert (
            loaded.duplicates_merged == 0 and loaded.digest == hashlib.sha256(path.read_bytes()).hexdigest()
        )

    def test_ids_and_categories_kept(self, tmp_path: Path) -> None:
        entries = list_entries(self.types)
        loaded = self.load(self.write(tmp_path, "list.txt", self.text([self.line(e) for e in entries])))
        found = loaded_entries(loaded)
        for name in set(self.types):
            mine = [e for e in entries if e.hash_type == name]
            if self.ids:
                assert [entry_id for _key, entry_id, _cat in found[name]] == [e.id for e in mine]
            elif not REGISTRY[name].text:
                assert [entry_id for _key, entry_id, _cat in found[name]] == [e.text for e in mine]
            expected = [e.category for e in mine] if self.categories else [None] * len(mine)
            assert [category for _key, _id, category in found[name]] == expected

    def test_malformed_line_names_file_and_line(self, tmp_path: Path) -> None:
        entries = list_entries(self.types)
        lines = [self.line(e) for e in entries]
        text = self.text([*lines[:2], self.garbage, *lines[2:]])
        path = self.write(tmp_path, "list.txt", text)
        line = text.split("\n").index(self.garbage) + 1
        with pytest.raises(HashListError) as caught:
            self.load(path)
        assert (caught.value.path, caught.value.line) == (str(path), line)
        assert str(caught.value).startswith(f"{path}:{line}: ")

    def test_wrong_width_names_file_and_line(self, tmp_path: Path) -> None:
        entries = list_entries(self.types)
        bad = next((i for i, e in enumerate(entries) if i > 0 and not REGISTRY[e.hash_type].text), None)
        if bad is None:
            pytest.skip("no hex type in this format")
        short = replace(entries[bad], text=entries[bad].text[:-2])
        text = self.text([self.line(short if i == bad else e) for i, e in enumerate(entries)])
        path = self.write(tmp_path, "list.txt", text)
        line = text.split("\n").index(self.line(short)) + 1
        with pytest.raises(HashListError) as caught:
            self.load(path)
        assert (caught.value.path, caught.value.line) == (str(path), line)

    @pytest.mark.parametrize("blank", ["", "\n\n", "# comments only\n\n# and nothing else\n"])
    def test_empty_list_refused(self, tmp_path: Path, blank: str) -> None:
        for name, text in (("empty.txt", blank), ("header.txt", self.text([]))):
            path = self.write(tmp_path, name, text)
            with pytest.raises(HashListError, match=r"empty|no entries") as caught:
                self.load(path)
            assert caught.value.path == str(path)

    def test_duplicates_merged_into_the_first_entry(self, tmp_path: Path) -> None:
        entries = list_entries(self.types)
        unique = self.load(self.write(tmp_path, "unique.txt", self.text([self.line(e) for e in entries])))
        again = replace(
            entries[0],
            text=entries[0].text.upper() if not REGISTRY[entries[0].hash_type].text else entries[0].text,
        )
        path = self.write(tmp_path, "list.txt", self.text([self.line(e) for e in [*entries, again]]))
        with pytest.warns(DuplicateHashWarning, match=rf"1 repeated {entries[0].hash_type} hash"):
            merged = self.load(path)
        assert merged.duplicates_merged == 1
        assert loaded_entries(merged) == loaded_entries(unique)

"""Signal-type plug-ins (scanner/plugins.py): python-threatexchange's own PDQ and MD5 signals match as the
built-in hashers do, a test-only plug-in is matched in a scan and in rematch, stored and reported, and a
plug-in that writes a file, raises, waits or spins fails its row alone, with a reason, in real hashing
workers under the write guard."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("threatexchange")

import signal_plugins
from audit_support import images, matched_entries, outcomes, run_scan, write_shard
from contracts import HashTypeContract
from images import encode, make_image
from loopback import LoopbackServer
from PIL import Image

from scanner.audits.rematch import rematch
from scanner.config import build_config
from scanner.errors import ConfigError, ContentAtRestError, HashListError
from scanner.hashing import HASHERS, hash_file_record, hash_image
from scanner.hashtypes import REGISTRY, HashType
from scanner.lists import list_keys, load_hashlist
from scanner.plugins import PluginConfig, load_plugins
from scanner.reports.hashes import hashes_schema
from scanner.reports.verify import verify_report
from scanner.screen import content_digests, parse_match_columns

REPO = Path(__file__).resolve().parents[1]
PDQ = "threatexchange.signal_type.pdq.signal:PdqSignal"
MD5 = "threatexchange.signal_type.md5:VideoMD5Signal"
TOY = "signal_plugins:ToySignal"
MOODY = "signal_plugins:MoodySignal"


def plugins(*signal_types: str, extensions: tuple[str, ...] = ()) -> dict:
    return {"plugins": {"signal_types": list(signal_types), "tx_extensions": list(extensions)}}


def serve_and_scan(tmp_path: Path, bodies: list[bytes], lists: list[str], **sections: dict) -> Path:
    """A real local scan (a unit worker and its hashing process) of bodies served on 127.0.0.1."""
    files = {f"/{i}.img": body for i, body in enumerate(bodies)}
    with LoopbackServer(files) as server:
        shard = write_shard(tmp_path / "shard.parquet", {"url": [server.url(p) for p in files]})
        out = tmp_path / "scan"
        run_scan(shard, out, lists, **sections)
    return out


def corpus() -> list[bytes]:
    """The test corpus: textured JPEGs, a large one, a PNG, a recompressed copy, and a flat image (PDQ
    quality below 50: neither PDQ matches it)."""
    bodies = images(5, first_seed=400)
    bodies.append(encode(make_image(401, (1200, 900)), "JPEG"))
    bodies.append(encode(make_image(402, (96, 64)), "PNG"))
    recompressed = io.BytesIO()
    Image.open(io.BytesIO(bodies[2])).save(recompressed, "JPEG", quality=40)
    bodies.append(recompressed.getvalue())
    bodies.append(encode(Image.new("RGB", (64, 64), (90, 90, 90)), "PNG"))
    return bodies


def test_pytx_pdq_and_md5_signals_match_as_the_built_in_hashers(tmp_path: Path) -> None:
    bodies = corpus()
    built_in = [hash_image(body, frozenset({"md5", "pdq"})) for body in bodies]
    listed = [0, 2, 5, 8]  # image 7 is image 2 recompressed: a PDQ match at a distance, no MD5 match
    lines = ["hash_type,hash,id"]
    for i in listed:
        pdq, md5 = built_in[i].pdq.hex(), built_in[i].md5.hex()
        lines += [f"pdq,{pdq},p{i}", f"pytx_pdq,{pdq},p{i}", f"md5,{md5},m{i}", f"video_md5,{md5},m{i}"]
    path = tmp_path / "both.csv"
    path.write_text("\n".join(lines) + "\n")

    out = serve_and_scan(tmp_path, bodies, [f"both={path}"], **plugins(PDQ, MD5))

    found = [json.loads(line) for line in (out / "matches.jsonl").read_text().splitlines()]
    by_type: dict[str, list[tuple[int, str, int]]] = {}
    for match in found:
        by_type.setdefault(match["hash_type"], []).append(
            (match["row"], match["entry_id"], match["distance"])
        )
    # The same matches; a distance may differ by a few bits on an image over 512 px a side, which the
    # built-in scales as the C++ reference does and pytx as pdqhash does (row 5).
    assert [m[:2] for m in by_type["pdq"]] == [m[:2] for m in by_type["pytx_pdq"]]
    assert [m for m in by_type["pdq"] if m[0] != 5] == [m for m in by_type["pytx_pdq"] if m[0] != 5]
    assert by_type["md5"] == by_type["video_md5"]
    assert by_type["md5"] == [(0, "m0", 0), (2, "m2", 0), (5, "m5", 0), (8, "m8", 0)]
    assert [(row, entry) for row, entry, _ in by_type["pdq"]] == [(0, "p0"), (2, "p2"), (5, "p5"), (7, "p2")]
    assert by_type["pdq"][3][2] > 0  # the recompressed copy matched within the threshold, not exactly
    assert not any(row == 8 for row, _, _ in by_type["pdq"])  # quality below 50: no PDQ from either
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(p["hash_type"], p["signal_type"], p["built_in"]) for p in manifest["plugins"]] == [
        ("pytx_pdq", PDQ, "pdq"),
        ("video_md5", MD5, None),
    ]
    assert manifest["plugins"][0]["version"].startswith("threatexchange ")


def toy_list(path: Path, lines: list[str]) -> Path:
    path.write_text("hash_type,hash,id\n" + "".join(f"{line}\n" for line in lines))
    return path


def test_a_plugin_is_matched_stored_rematched_and_reported(tmp_path: Path) -> None:
    bodies = images(4, first_seed=500)
    toys = [signal_plugins.toy_signal(body) for body in bodies]
    near = f"{int(toys[2], 16) ^ 0b101:016x}"  # 2 bits from image 2's: within the toy's own compare
    listed = toy_list(tmp_path / "toys.csv", [f"toy_blake,{toys[1]},t-exact", f"toy_blake,{near},t-near"])

    scanned = serve_and_scan(
        tmp_path, bodies, [f"toys={listed}"], audit={"keep_hashes": True}, **plugins(TOY)
    )

    assert matched_entries(scanned) == [
        (1, "toys", "toy_blake", "t-exact"),
        (2, "toys", "toy_blake", "t-near"),
    ]
    lines = (scanned / "matches.jsonl").read_text().splitlines()
    assert [json.loads(line)["distance"] for line in lines] == [0, 2]
    assert outcomes(scanned) == ["clean", "match", "match", "clean"]
    table = pq.read_table(scanned / "hashes.parquet")
    assert table.schema.field("toy_blake").type == pa.string()
    assert table.column("toy_blake").to_pylist() == toys

    updated = toy_list(tmp_path / "toys2.csv", [f"toy_blake,{toys[1]},t-exact", f"toy_blake,{toys[3]},t-new"])
    again = tmp_path / "rematch"
    config = build_config({"out": str(again), "hashlist": [f"toys={updated}"], **plugins(TOY)}, "test")
    result = rematch([str(scanned)], config)
    assert matched_entries(again) == [(1, "toys", "toy_blake", "t-exact"), (3, "toys", "toy_blake", "t-new")]
    assert result.summary["matches"]["by_hash_type"] == {"toy_blake": 2}
    assert verify_report(scanned).ok and verify_report(again).ok
    assert "toy_blake" in (again / "report.html").read_text(encoding="utf-8")


def test_a_plugin_that_writes_raises_waits_or_spins_fails_its_row_alone(tmp_path: Path) -> None:
    signal_plugins.LEAK.unlink(missing_ok=True)
    widths = [160, signal_plugins.WRITES, signal_plugins.RAISES, signal_plugins.WAITS]
    widths += [signal_plugins.WRITES_QUIETLY, signal_plugins.SPINS, 160]
    bodies = [encode(make_image(600 + i, (width, 120)), "JPEG") for i, width in enumerate(widths)]
    md5s = [hashlib.md5(body).hexdigest() for body in bodies]
    listed = toy_list(tmp_path / "l.csv", [f"md5,{md5s[1]},written", f"md5,{md5s[6]},last"])

    out = serve_and_scan(
        tmp_path,
        bodies,
        [f"l={listed}"],
        hashing={"decode_timeout": 0.5},
        audit={"keep_hashes": True},  # the plug-in runs on every body (no list of its type needs it)
        **plugins(MOODY),
    )

    table = pq.read_table(out / "outcomes.parquet").to_pydict()
    assert table["reason"] == [
        None,
        "plugin_wrote_file",
        "plugin_failed",
        "decode_timeout",  # it waited past 4 decode budgets of wall-clock time
        "plugin_wrote_file",  # it caught the refusal and went on: still caught
        "decode_timeout",  # it looped past its CPU budget
        None,
    ]
    assert table["outcome"] == ["clean", "match", "invalid", "invalid", "invalid", "invalid", "match"]
    assert not signal_plugins.LEAK.exists()
    assert verify_report(out).ok


def test_a_plugin_that_writes_when_imported_stops_the_scan_in_its_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = tmp_path / "written-at-import"
    monkeypatch.setenv("SCANNER_TEST_IMPORT_WRITE", str(written))
    listed = toy_list(tmp_path / "l.csv", [f"md5,{'0' * 32},a"])
    with pytest.raises(ContentAtRestError, match=r"refused to write .*written-at-import"):
        serve_and_scan(
            tmp_path, images(1), [f"l={listed}"], **plugins("signal_plugins_import_write:ImportWriterSignal")
        )
    assert written.exists()  # this process imported it first, unguarded: the config is built before any body


def test_file_hashers_and_non_signal_types_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hashes files: the scanner hashes bytes in memory") as refused:
        build_config(plugins("signal_plugins:FileOnlySignal"), "test")
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match="not a python-threatexchange SignalType"):
        build_config(plugins("signal_plugins:toy_signal"), "test")
    with pytest.raises(ConfigError, match="cannot import no_such_module"):
        build_config(plugins("no_such_module:Signal"), "test")
    with pytest.raises(ConfigError, match="expected MODULE:CLASS"):
        build_config(plugins("signal_plugins"), "test")
    with pytest.raises(ConfigError, match="Module is missing TX_MANIFEST"):
        build_config(plugins(extensions=("audit_support",)), "test")
    assert not any(t.signal for t in REGISTRY.values())


def test_a_clash_with_a_plugin_is_refused_and_with_a_built_in_is_prefixed() -> None:
    (toy,) = load_plugins(PluginConfig(signal_types=(TOY,)))
    assert load_plugins(PluginConfig(signal_types=(TOY,))) == (toy,)  # again: the same type
    with pytest.raises(ConfigError, match="'toy_blake' is taken by signal_plugins:ToySignal"):
        load_plugins(PluginConfig(signal_types=("signal_plugins:ClashingSignal",)))
    (pdq,) = load_plugins(PluginConfig(signal_types=(PDQ,)))
    assert pdq.name == "pytx_pdq" and REGISTRY["pdq"].signal is None


def test_a_tx_extension_manifest_registers_its_signal_types() -> None:
    config = build_config(plugins(extensions=("signal_plugins",)), "test")
    assert config.plugins.tx_extensions == ("signal_plugins",)
    assert REGISTRY["toy_blake"].signal == TOY and "toy_blake" in HASHERS


def test_a_plugin_list_is_checked_by_the_plugins_own_validator(tmp_path: Path) -> None:
    load_plugins(PluginConfig(signal_types=(TOY,)))
    bad = toy_list(tmp_path / "bad.csv", ["toy_blake,0011223344556677,a", "toy_blake,xyz,b"])
    with pytest.raises(HashListError, match=r"bad.csv:3: not a valid toy_blake signal"):
        load_hashlist(str(bad))


def test_the_cli_takes_signal_types_and_refuses_a_file_hasher_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    shard = write_shard(tmp_path / "s.parquet", {"url": ["http://127.0.0.1:9/x.jpg"]})
    command = [sys.executable, "-m", "scanner", "scan", str(shard), "--out", str(tmp_path / "o")]
    refused = subprocess.run(
        [*command, "--signal-type", "signal_plugins:FileOnlySignal"], capture_output=True, text=True, env=env
    )
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "only a BytesHasher can be a plug-in" in refused.stderr


class TestPluginHashType(HashTypeContract):
    """A plug-in's type where the contract fits: registered, one hasher, list keys, a string column. Its
    values are the plug-in's signal strings, not fixed-width hex, and its distance is the plug-in's."""

    @pytest.fixture
    def hash_type(self) -> HashType:
        (toy,) = load_plugins(PluginConfig(signal_types=(TOY,)))
        return toy

    def test_hex_round_trip(self, hash_type: HashType) -> None:
        signal = signal_plugins.toy_signal(b"body")
        assert hash_type.from_hex(signal) == signal.encode() and hash_type.to_hex(signal.encode()) == signal

    def test_wrong_width_is_refused(self, hash_type: HashType) -> None:
        with pytest.raises(ValueError, match="not a toy signal"):
            list_keys(hash_type.name).type.signal_class().validate_signal_str("00")

    def test_distance(self, hash_type: HashType) -> None:
        with pytest.raises(ValueError, match="compared by its plug-in"):
            hash_type.distance(b"a", b"b")

    def test_computed_by_exactly_one_hasher_when_from_images(self, hash_type: HashType) -> None:
        image = encode(make_image(7, (96, 64)), "PNG")
        value = hash_image(image, frozenset({hash_type.name})).get(hash_type.name)
        assert value == signal_plugins.toy_signal(image).encode()

    def test_listable_types_have_keys(self, hash_type: HashType) -> None:
        keys = list_keys(hash_type.name)
        parsed = keys.parse(pa.array(["00112233AABBCCDD"]))
        assert parsed.names.to_pylist() == ["00112233aabbccdd"]  # the plug-in's own normal form
        assert parsed.keys.shape == (1, hash_type.nbytes)

    def test_the_other_tables(self, hash_type: HashType, tmp_path: Path) -> None:
        assert hashes_schema().field(hash_type.name).type == pa.string()
        assert hash_type.name not in content_digests()  # a plug-in's signal never says `changed`
        with pytest.raises(ConfigError):
            parse_match_columns([f"c={hash_type.name}"])
        image = tmp_path / "i.png"
        image.write_bytes(encode(make_image(8, (96, 64)), "PNG"))
        assert hash_file_record(image)["toy_blake"] == signal_plugins.toy_signal(image.read_bytes())


def test_a_false_positive_of_a_plugin_becomes_a_negative_entry_of_its_type(tmp_path: Path) -> None:
    """`review negative` runs in a fresh process: it loads the scan's own plug-ins to write their entries."""
    from conftest import run_scanner

    bodies = images(2, first_seed=520)
    toys = [signal_plugins.toy_signal(body) for body in bodies]
    listed = toy_list(tmp_path / "toys.csv", [f"toy_blake,{toys[0]},t-0"])
    kept = {"keep_hashes": True}
    scanned = serve_and_scan(tmp_path, bodies, [f"toys={listed}"], audit=kept, **plugins(TOY))
    verdicts = tmp_path / "verdicts.csv"
    verdicts.write_text(f"shard,row,verdict\n{tmp_path / 'shard.parquet'},0,false_positive\n")
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    done = run_scanner("review", "import", str(scanned), str(verdicts), "--operator", "ana", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    negative = tmp_path / "neg.csv"
    done = run_scanner("review", "negative", str(scanned), "--out", str(negative), env=env)
    assert done.returncode == 0, done.stderr
    assert "1 negative entries from 1 false-positive rows" in done.stdout
    assert "no stored hash" not in done.stdout
    assert negative.read_text().splitlines()[1:] == [f"toy_blake,{toys[0]},fp-000001,false_positive"]

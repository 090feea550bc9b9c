"""rescan after a --pdq-dihedral scan: rotated and flipped copies of listed images stay matched, and a newly
listed image's rotated copy is found from the stored hashes, with no download."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from audit_support import matches, outcomes, run_scan, write_shard
from loopback import LoopbackServer
from PIL import Image

from scanner.demo import encode, make_image
from scanner.hashing import hash_image
from scanner.rescan import rescan

NAMES = ["rotated", "flipped", "plain"]


def originals() -> dict[str, bytes]:
    """Square JPEGs: a square image's rotated PDQ lands close to the original's (6-8 bits here)."""
    return {name: encode(make_image(500 + i, (384, 384)), "JPEG") for i, name in enumerate(NAMES)}


def rotated(body: bytes, transpose: Image.Transpose) -> bytes:
    """A transformed copy of a JPEG, re-encoded: its plain PDQ is far from the original's."""
    return encode(Image.open(io.BytesIO(body)).transpose(transpose), "JPEG", quality=90)


def pdq_list(path: Path, entries: dict[str, bytes]) -> str:
    """A CSV list of the PDQ of each original image; returns its spec."""
    lines = [f"pdq,{hash_image(body, frozenset({'pdq'})).pdq.hex()},{name}" for name, body in entries.items()]
    path.write_text("hash_type,hash,id\n" + "".join(f"{line}\n" for line in lines))
    return f"list={path}"


@pytest.fixture(scope="module")
def rescanned(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A dihedral scan with --keep-hashes listing one original, then a rescan with a list adding another."""
    tmp = tmp_path_factory.mktemp("rescan-dihedral")
    original = originals()
    served = {
        "/rotated.jpg": rotated(original["rotated"], Image.Transpose.ROTATE_90),
        "/flipped.jpg": rotated(original["flipped"], Image.Transpose.FLIP_LEFT_RIGHT),
        "/plain.jpg": original["plain"],
    }
    with LoopbackServer(served) as server:
        shard = write_shard(tmp / "shard.parquet", {"url": [server.url(f"/{n}.jpg") for n in NAMES]})
        v1 = pdq_list(tmp / "v1.csv", {"rotated": original["rotated"]})
        keep = {"audit": {"keep_hashes": True}, "match": {"pdq_dihedral": True}}
        run_scan(shard, tmp / "first", [v1], **keep)
        v2 = pdq_list(tmp / "v2.csv", {name: original[name] for name in ("rotated", "flipped")})
        server.reset_hits()
        result = rescan(tmp / "first", str(tmp / "second"), [v2], {"run.workers": 1})
        requests = [(method, path) for method, path, _ in server.requests()]
    return {"tmp": tmp, "result": result, "requests": requests}


def test_the_first_scan_matched_the_rotated_copy_only_through_a_transform(rescanned) -> None:
    first = rescanned["tmp"] / "first"
    assert outcomes(first) == ["match", "clean", "clean"]
    [match] = matches(first)
    assert (match["row"], match["hash_type"], match["entry_id"]) == (0, "pdq", "rotated")
    assert match["transform"] not in (None, "original")


def test_rescan_keeps_a_rotated_match_and_finds_a_newly_listed_flipped_copy(rescanned) -> None:
    tmp = rescanned["tmp"]
    assert outcomes(tmp / "second") == ["match", "match", "clean"]
    found = matches(tmp / "second")
    assert found[0] == matches(tmp / "first")[0]  # same entry, same transform, same distance
    assert (found[1]["row"], found[1]["entry_id"]) == (1, "flipped")
    assert found[1]["transform"] not in (None, "original")
    changes = [json.loads(line) for line in (tmp / "second" / "changes.jsonl").read_text().splitlines()]
    assert [(c["row"], c["change"]) for c in changes] == [(1, "new_match")]
    assert rescanned["result"].summary["changes"]["matches_gone"] == 0


def test_rescan_never_downloads_the_rotated_matches_again(rescanned) -> None:
    # Both are known matches from their stored dihedral hashes: a liveness check, not a (conditional) GET.
    assert sorted(rescanned["requests"]) == [
        ("GET", "/plain.jpg"),
        ("HEAD", "/flipped.jpg"),
        ("HEAD", "/rotated.jpg"),
    ]

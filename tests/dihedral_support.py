"""Shared by the dihedral audit tests: listed originals served rotated and flipped, and older hash records."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pyarrow.parquet as pq
from images import encode, make_image
from PIL import Image

from scanner.hashing import hash_image

NAMES = ["rotated", "flipped", "plain"]
PATHS = [f"/{name}.jpg" for name in NAMES]
DIHEDRAL = {"match": {"pdq_dihedral": True}}


def originals() -> dict[str, bytes]:
    """Square JPEGs: a square image's rotated copy has a PDQ variant close to the original's (4-8 bits)."""
    return {name: encode(make_image(500 + i, (384, 384)), "JPEG") for i, name in enumerate(NAMES)}


def transformed(body: bytes, transpose: Image.Transpose) -> bytes:
    """A transformed copy of a JPEG, re-encoded: its plain PDQ is far from the original's."""
    return encode(Image.open(io.BytesIO(body)).transpose(transpose), "JPEG", quality=90)


def served_files(original: dict[str, bytes]) -> dict[str, bytes]:
    """What the server holds: the first original rotated, the second flipped, the third as it is."""
    return {
        "/rotated.jpg": transformed(original["rotated"], Image.Transpose.ROTATE_90),
        "/flipped.jpg": transformed(original["flipped"], Image.Transpose.FLIP_LEFT_RIGHT),
        "/plain.jpg": original["plain"],
    }


def pdq_list(path: Path, entries: dict[str, bytes]) -> str:
    """A CSV list named `list` of the PDQ of each original image (entry id: its name); returns its spec."""
    lines = [f"pdq,{hash_image(body, frozenset({'pdq'})).pdq.hex()},{name}" for name, body in entries.items()]
    path.write_text("hash_type,hash,id\n" + "".join(f"{line}\n" for line in lines))
    return f"list={path}"


def as_version_1(report: Path, copy: Path) -> Path:
    """A copy of a report directory whose hashes.parquet is as version 1 wrote it: no pdq_dihedral column."""
    shutil.copytree(report, copy)
    table = pq.read_table(report / "hashes.parquet").drop_columns(["pdq_dihedral"])
    pq.write_table(table.replace_schema_metadata(None), copy / "hashes.parquet")
    return copy

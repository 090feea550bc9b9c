"""PDQ against the reference vectors in shared/pdq-vectors, bit for bit (hash and quality)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from PIL import Image

from scanner.hashing import DIHEDRAL_TRANSFORMS, hash_image

VECTORS = (Path(__file__).resolve().parents[1] / ".." / "shared" / "pdq-vectors").resolve()
EXPECTED = VECTORS / "expected"


def _rows(name: str) -> list[dict[str, str]]:
    """The rows of one expected-output CSV, or none when the vectors are not beside the checkout."""
    path = EXPECTED / name
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _image(row: dict[str, str]) -> bytes:
    """The bytes of the image a row names."""
    return (VECTORS / row["image"]).read_bytes()


def _label(row: dict[str, str]) -> str:
    """A readable test id: the file name, and the dihedral transform when there is one."""
    return f"{Path(row['image']).name}:{row['note'] or row['source_line']}"


requires_vectors = pytest.mark.skipif(
    not EXPECTED.is_dir(),
    reason=f"PDQ reference vectors not found at {VECTORS} (a clone outside the workspace)",
)
CPP_ROWS = _rows("cpp_rebuilt_generated.csv")
CPP_DIHEDRAL_ROWS = _rows("cpp_rebuilt_generated_dihedral.csv")
PYTX_LA_ROWS = [row for row in _rows("pytx_pdqhash_tests.csv") if row["image"].endswith("LA.png")]


@requires_vectors
def test_vector_files_are_complete() -> None:
    """Guard against a silently shrunken vector set: 35 C++ rows, 24 dihedral rows, 9 pytx LA.png rows."""
    assert (len(CPP_ROWS), len(CPP_DIHEDRAL_ROWS), len(PYTX_LA_ROWS)) == (35, 24, 9)


@requires_vectors
@pytest.mark.parametrize("row", CPP_ROWS, ids=_label)
def test_pdq_matches_cpp_reference(row: dict[str, str]) -> None:
    """hash_image's PDQ equals pdq-photo-hasher's output, including 16-bit grey (I16.png) and low quality."""
    hashes = hash_image(_image(row), frozenset({"pdq"}))
    assert hashes.pdq is not None
    assert (hashes.pdq.hex(), hashes.pdq_quality) == (row["expected_hash"], int(row["expected_quality"]))


@requires_vectors
@pytest.mark.parametrize("row", CPP_DIHEDRAL_ROWS, ids=_label)
def test_pdq_dihedral_matches_cpp_reference(row: dict[str, str]) -> None:
    """Each of the 8 dihedral hashes equals pdq-photo-hasher --pdqdih, in the same order."""
    transform = row["note"].removeprefix("dihedral=").lower()
    hashes = hash_image(_image(row), frozenset({"pdq_dihedral"}))
    assert hashes.pdq_dihedral is not None
    assert hashes.pdq_dihedral[DIHEDRAL_TRANSFORMS.index(transform)].hex() == row["expected_hash"]
    assert hashes.pdq_quality == int(row["expected_quality"])


@requires_vectors
@pytest.mark.parametrize("row", PYTX_LA_ROWS, ids=_label)
def test_grey_alpha_matches_python_threatexchange(row: dict[str, str]) -> None:
    """The C++ tool refuses grey+alpha; we drop alpha as pytx does, and match its hashes of LA.png and of
    its 7 PIL-transposed copies."""
    transpose = {
        "": None,
        "transform=ORIGINAL": None,
        "transform=ROTATE90": Image.Transpose.ROTATE_90,
        "transform=ROTATE180": Image.Transpose.ROTATE_180,
        "transform=ROTATE270": Image.Transpose.ROTATE_270,
        "transform=FLIPX": Image.Transpose.FLIP_TOP_BOTTOM,  # pytx flips about the x axis
        "transform=FLIPY": Image.Transpose.FLIP_LEFT_RIGHT,
        "transform=FLIPPLUS1": Image.Transpose.TRANSPOSE,
        "transform=FLIPMINUS1": Image.Transpose.TRANSVERSE,
    }[row["note"]]
    data = _image(row)
    if transpose is not None:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).transpose(transpose).save(buffer, "PNG")
        data = buffer.getvalue()
    hashes = hash_image(data, frozenset({"pdq"}))
    assert hashes.pdq is not None
    assert hashes.pdq.hex() == row["expected_hash"]
    if row["expected_quality"]:
        assert hashes.pdq_quality == int(row["expected_quality"])

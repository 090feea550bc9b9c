"""Compiled PDQ kernels (what a long scan switches to) against the C++ vectors and pdqhash, bit for bit."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pdqhash
import pytest

from scanner.hashing import hash_image, pdq

VECTORS = (Path(__file__).resolve().parents[1] / ".." / "shared" / "pdq-vectors").resolve()
CPP_CSV = VECTORS / "expected" / "cpp_rebuilt_generated.csv"


def _cpp_rows() -> list[dict[str, str]]:
    if not CPP_CSV.is_file():
        return []
    with CPP_CSV.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pdq_hash use the compiled kernels from the first image on."""
    monkeypatch.setattr(pdq, "COMPILE_AFTER", 0)


@pytest.mark.skipif(not CPP_CSV.is_file(), reason=f"PDQ reference vectors not found at {VECTORS}")
def test_compiled_path_matches_cpp_reference(compiled: None) -> None:
    """Every C++ reference row (8- and 16-bit, grey, colour, alpha, low quality) through the compiled path."""
    rows = _cpp_rows()
    assert len(rows) == 35
    for row in rows:
        hashes = hash_image((VECTORS / row["image"]).read_bytes(), frozenset({"pdq"}))
        assert hashes.pdq is not None
        got = (hashes.pdq.hex(), hashes.pdq_quality)
        assert got == (row["expected_hash"], int(row["expected_quality"])), row["image"]


SHAPES = [
    (4, 9),
    (5, 5),
    (7, 300),
    (64, 64),
    (65, 64),
    (64, 65),
    (100, 100),
    (300, 512),
    (512, 137),
    (512, 512),
]


def _picture(rng: np.random.Generator, height: int, width: int, kind: int) -> np.ndarray:
    """Noise, blocky smooth colour, or a grey (v, v, v) view: the inputs pdq_pixels hands to PDQ."""
    if kind == 0:
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == 1:
        low = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
        return np.ascontiguousarray(np.kron(low, np.ones((16, 16, 1), dtype=np.uint8))[:height, :width])
    grey = rng.integers(0, 256, (height, width), dtype=np.uint8)
    return np.broadcast_to(grey[:, :, np.newaxis], (height, width, 3))


@pytest.mark.parametrize("kind", [0, 1, 2], ids=["noise", "blocks", "grey-view"])
def test_compiled_kernels_equal_pdqhash(kind: int) -> None:
    """Bits and quality equal pdqhash.compute's on every shape class: tiny (no hash), exactly 64x64 (no
    filter), odd sizes, and the 512 px reference input."""
    rng = np.random.default_rng(kind)
    for height, width in SHAPES + [(int(rng.integers(5, 513)), int(rng.integers(5, 513))) for _ in range(6)]:
        pixels = _picture(rng, height, width, kind)
        expected_bits, expected_quality = pdqhash.compute(pixels)
        bits, quality = pdq.compiled_pdq(pixels)
        assert np.array_equal(bits, expected_bits.astype(np.uint8)), (height, width)
        assert quality == int(expected_quality), (height, width)


def test_switch_keeps_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same image hashes the same before and after a process switches to the compiled kernels."""
    pixels = _picture(np.random.default_rng(9), 480, 640, 1)
    monkeypatch.setattr(pdq, "_hashed", 0)
    monkeypatch.setattr(pdq, "COMPILE_AFTER", 1)
    before = pdq.pdq_hash(pixels)
    after = pdq.pdq_hash(pixels)
    assert before == after
    assert pdq._hashed == 2

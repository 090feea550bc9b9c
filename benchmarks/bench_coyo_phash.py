"""How far apart two published pHash definitions land on the same images: imagehash's `phash` (what the
scanner's `phash` type is) and the DCT hash of phash.org's `ph_dct_imagehash` (what COYO-700M's README links
for its `image_phash` column), written here from that library's documented steps. docs/datasets.md quotes
the result.

    python benchmarks/bench_coyo_phash.py [--images 200]

phash.org's steps, as its documentation and source describe them: luma Y of YCbCr (ITU-R 601, studio swing),
a 7x7 mean filter, a nearest-neighbour resize to 32x32, a 32-point DCT by matrix, the 8x8 block of rows and
columns 1..8 (no DC), each coefficient above the block's median a set bit, the first coefficient the least
significant bit of a 64-bit integer, printed as 16 hex digits. imagehash: Pillow's "L" luma, a Lanczos resize
to 32x32, scipy's DCT, the 8x8 block of rows and columns 0..7 (DC included), above the median a set bit, the
first coefficient the most significant bit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scanner.cli.pictures import make_image

SIZE = 32


def _dct_matrix(n: int) -> np.ndarray:
    rows = np.arange(n)[:, None]
    cols = np.arange(n)[None, :]
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi / (2 * n) * rows * (2 * cols + 1))
    matrix[0, :] = 1.0 / np.sqrt(n)
    return matrix


def phash_org(image: Image.Image) -> int:
    """phash.org's DCT image hash as a 64-bit integer (first coefficient in the least significant bit)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    luma = (66 * rgb[..., 0] + 129 * rgb[..., 1] + 25 * rgb[..., 2] + 128) / 256 + 16
    padded = np.pad(luma, 3, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (7, 7))
    blurred = windows.mean(axis=(2, 3))
    height, width = blurred.shape
    ys = np.arange(SIZE) * height // SIZE
    xs = np.arange(SIZE) * width // SIZE
    small = blurred[ys][:, xs]
    dct = _dct_matrix(SIZE)
    coefficients = (dct @ small @ dct.T)[1:9, 1:9].ravel()
    median = np.median(coefficients)
    return sum(1 << i for i, value in enumerate(coefficients) if value > median)


def imagehash_phash(image: Image.Image) -> int:
    return int(str(imagehash.phash(image, hash_size=8)), 16)


def reversed_bits(value: int) -> int:
    return int(f"{value:064b}"[::-1], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    as_printed, bit_reversed, unrelated = [], [], []
    for seed in range(args.images):
        image = make_image(seed)
        ours, theirs = imagehash_phash(image), phash_org(image)
        as_printed.append((ours ^ theirs).bit_count())
        bit_reversed.append((ours ^ reversed_bits(theirs)).bit_count())
        other = make_image(seed + 10_000)
        unrelated.append((ours ^ imagehash_phash(other)).bit_count())
    for name, values in (
        ("imagehash vs phash.org, as printed", as_printed),
        ("imagehash vs phash.org, bit order reversed", bit_reversed),
        ("imagehash, two different pictures", unrelated),
    ):
        within = sum(v <= 8 for v in values)
        print(
            f"{name}: mean {statistics.mean(values):.1f} bits, min {min(values)}, max {max(values)}, "
            f"within 8 bits {within}/{len(values)}"
        )


if __name__ == "__main__":
    main()

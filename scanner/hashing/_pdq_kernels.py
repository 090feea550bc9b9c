"""PDQ's float pipeline compiled with numba: the same IEEE single-precision operations, in the same order,
as the C++ code inside pdqhash (luma, two Jarosz box-filter passes, decimation to 64x64, quality, DCT to
16x16, median threshold), so the output is bit for bit pdqhash.compute's.

Why: pdqhash spends about 3 ms on a 512x512 input, most of it in box filters that walk one column at a
time with a division per sample. Here every pass runs along rows of memory with one running sum per
column, which the compiler vectorises; each sum still sees its samples in the reference order, and
nothing is fused (numba, without fastmath, neither reorders nor contracts float operations). Rows are
filtered by transposing, filtering along the other axis and transposing back: moving numbers changes none.
The equality is checked against pdqhash on the conformance vectors and on random images in the tests.
Compiled code is kept in numba's disk cache when scanner/kernelcache.py allows it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from scanner import kernelcache

DCT_SIZE = 16
DOWNSAMPLED = 64
MIN_HASHABLE_SIDE = 5
JAROSZ_PASSES = 2
STRIP = 8
CACHE = kernelcache.enabled()


def _dct_matrix() -> np.ndarray:
    """The 16x64 DCT-II rows PDQ uses: a float scale times a double cosine, stored as float."""
    scale = np.float32(np.sqrt(2.0 / DOWNSAMPLED))
    i = np.arange(1, DCT_SIZE + 1, dtype=np.float64)[:, np.newaxis]
    j = np.arange(DOWNSAMPLED, dtype=np.float64)[np.newaxis, :]
    return (np.float64(scale) * np.cos((np.pi / 2.0 / DOWNSAMPLED) * i * (2 * j + 1))).astype(np.float32)


DCT_MATRIX = _dct_matrix()


@njit(cache=CACHE, nogil=True)
def luma_from_rgb(pixels: np.ndarray) -> np.ndarray:
    """float32(0.299 R + 0.587 G + 0.114 B), each term and sum in double, as pdqhash computes it."""
    rows, cols = pixels.shape[0], pixels.shape[1]
    out = np.empty((rows, cols), dtype=np.float32)
    for i in range(rows):
        for j in range(cols):
            red, green, blue = (
                np.float64(pixels[i, j, 0]),
                np.float64(pixels[i, j, 1]),
                np.float64(pixels[i, j, 2]),
            )
            out[i, j] = np.float32(red * 0.299 + green * 0.587 + blue * 0.114)
    return out


@njit(cache=CACHE, nogil=True)
def _box_down_columns(src: np.ndarray, dst: np.ndarray, window: int) -> None:
    """The reference's 1-D box filter (four phases, running float sum) down every column at once."""
    length, width = src.shape
    half = (window + 2) // 2
    sums = np.zeros(width, dtype=np.float32)
    read = left = out = count = 0
    for _ in range(half - 1):
        count += 1
        for j in range(width):
            sums[j] += src[read, j]
        read += 1
    for _ in range(window - half + 1):
        count += 1
        divisor = np.float32(count)
        for j in range(width):
            sums[j] += src[read, j]
            dst[out, j] = sums[j] / divisor
        read += 1
        out += 1
    divisor = np.float32(count)
    for _ in range(length - window):
        for j in range(width):
            sums[j] += src[read, j]
            sums[j] -= src[left, j]
            dst[out, j] = sums[j] / divisor
        read += 1
        left += 1
        out += 1
    for _ in range(half - 1):
        count -= 1
        divisor = np.float32(count)
        for j in range(width):
            sums[j] -= src[left, j]
            dst[out, j] = sums[j] / divisor
        left += 1
        out += 1


@njit(cache=CACHE, nogil=True)
def _transpose(src: np.ndarray, dst: np.ndarray) -> None:
    """dst = src.T, a strip of STRIP source rows at a time (each write is then STRIP contiguous floats)."""
    rows, cols = src.shape
    whole = rows - rows % STRIP
    for top in range(0, whole, STRIP):
        for j in range(cols):
            for i in range(STRIP):
                dst[j, top + i] = src[top + i, j]
    for i in range(whole, rows):
        for j in range(cols):
            dst[j, i] = src[i, j]


@njit(cache=CACHE, nogil=True)
def _jarosz(luma: np.ndarray) -> np.ndarray:
    """Two passes of (box along each row, then along each column), window sizes as the reference picks."""
    rows, cols = luma.shape
    along_rows = (cols + 2 * DOWNSAMPLED - 1) // (2 * DOWNSAMPLED)
    along_cols = (rows + 2 * DOWNSAMPLED - 1) // (2 * DOWNSAMPLED)
    image, scratch = luma, np.empty((rows, cols), dtype=np.float32)
    flipped, flipped_scratch = (
        np.empty((cols, rows), dtype=np.float32),
        np.empty((cols, rows), dtype=np.float32),
    )
    for _ in range(JAROSZ_PASSES):
        _transpose(image, flipped)
        _box_down_columns(flipped, flipped_scratch, along_rows)
        _transpose(flipped_scratch, scratch)
        _box_down_columns(scratch, image, along_cols)
    return image


@njit(cache=CACHE, nogil=True)
def _decimate(buffer: np.ndarray) -> np.ndarray:
    """The 64x64 samples at the centres of a 64x64 grid (double arithmetic, truncated)."""
    rows, cols = buffer.shape
    out = np.empty((DOWNSAMPLED, DOWNSAMPLED), dtype=np.float32)
    for i in range(DOWNSAMPLED):
        source_row = int(((i + 0.5) * rows) / DOWNSAMPLED)
        for j in range(DOWNSAMPLED):
            out[i, j] = buffer[source_row, int(((j + 0.5) * cols) / DOWNSAMPLED)]
    return out


@njit(cache=CACHE, nogil=True)
def _quality(block: np.ndarray) -> int:
    """The reference's gradient-sum quality metric of the 64x64 block, 0..100."""
    total = 0
    hundred, top = np.float32(100.0), np.float32(255.0)
    for i in range(DOWNSAMPLED - 1):
        for j in range(DOWNSAMPLED):
            total += abs(int(((block[i, j] - block[i + 1, j]) * hundred) / top))
    for i in range(DOWNSAMPLED):
        for j in range(DOWNSAMPLED - 1):
            total += abs(int(((block[i, j] - block[i, j + 1]) * hundred) / top))
    return min(total // 90, 100)


@njit(cache=CACHE, nogil=True)
def _dct(block: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """D A D^T for the 16 lowest frequencies; every sum runs over k in order, as the reference's do."""
    partial = np.zeros((DCT_SIZE, DOWNSAMPLED), dtype=np.float32)
    for i in range(DCT_SIZE):
        for k in range(DOWNSAMPLED):
            weight = matrix[i, k]
            for j in range(DOWNSAMPLED):
                partial[i, j] += weight * block[k, j]
    out = np.zeros((DCT_SIZE, DCT_SIZE), dtype=np.float32)
    for i in range(DCT_SIZE):
        for j in range(DCT_SIZE):
            total = np.float32(0.0)
            for k in range(DOWNSAMPLED):
                total += partial[i, k] * matrix[j, k]
            out[i, j] = total
    return out


@njit(cache=CACHE, nogil=True)
def _lower_median(values: np.ndarray) -> np.float32:
    """The value with (n + 1) // 2 values at or below it, as Torben's median returns (n is 256 here).

    Counting is quadratic but tiny here, and compiles in a fraction of np.sort's time.
    """
    rank = (values.size + 1) // 2
    for candidate in values:
        below = at_or_below = 0
        for value in values:
            below += value < candidate
            at_or_below += value <= candidate
        if below < rank <= at_or_below:
            return candidate
    return values[0]


@njit(cache=CACHE, nogil=True)
def pdq_from_luma(luma: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, int]:
    """PDQ of a luma plane: 256 bits (pdqhash.compute's order, bit 255 first) and quality.

    The plane is filtered in place, as the reference does with its buffer.
    """
    rows, cols = luma.shape
    bits = np.zeros(DCT_SIZE * DCT_SIZE, dtype=np.uint8)
    if rows < MIN_HASHABLE_SIDE or cols < MIN_HASHABLE_SIDE:
        return bits, 0
    block = luma.copy() if rows == DOWNSAMPLED and cols == DOWNSAMPLED else _decimate(_jarosz(luma))
    quality = _quality(block)
    coefficients = _dct(block, matrix).ravel()
    median = _lower_median(coefficients)
    for index in range(coefficients.size):
        if coefficients[index] > median:
            bits[coefficients.size - 1 - index] = 1
    return bits, quality

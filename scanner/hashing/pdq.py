"""PDQ as the C++ reference `pdq-photo-hasher` computes it: same input pixels, same 256 bits, same quality.

The reference decodes with CImg into 8-bit samples, ignores EXIF orientation, and when either side exceeds
512 px resizes to exactly 512x512 by nearest neighbour, taking source pixel floor(dst * size / 512).
"""

from __future__ import annotations

import numpy as np
import pdqhash
from PIL import Image

from scanner import kernelcache

DOWNSAMPLE_SIDE = 512

# Images a process hashes with pdqhash before it compiles the faster kernels, when numba's disk cache is off
# (kernelcache.py): short scans and tests never pay the compile, long scans pay it once per worker. With the
# cache the kernels load in about half a second (after one compile per machine), so every image uses them.
COMPILE_AFTER = 300
_hashed = 0

_INTEGER_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_GREY_MODES = frozenset({"1", "L", "LA"})


def pdq_pixels(frame: Image.Image) -> np.ndarray:
    """The reference's PDQ input as an (h, w, 3) uint8 array, at most 512x512; grey is a zero-copy view."""
    image = _to_8bit(nearest_512(frame) if max(frame.size) > DOWNSAMPLE_SIDE else frame)
    if image.mode in _GREY_MODES:
        grey = np.asarray(image.convert("L") if image.mode != "L" else image)
        # pdqhash turns (v, v, v) into exactly v: three views of one channel are bit-exact, and no RGB copy.
        return np.broadcast_to(grey[:, :, np.newaxis], (*grey.shape, 3))
    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image)


def pdq_hash(pixels: np.ndarray) -> tuple[bytes, int]:
    """The 32-byte PDQ hash (most significant bit first, as the reference prints it) and its quality.

    Both paths give the same bits: the numba kernels (about 3x faster) when they come from the disk cache
    or this process has hashed COMPILE_AFTER images, else pdqhash.
    """
    global _hashed
    _hashed += 1
    compiled = _hashed > COMPILE_AFTER or kernelcache.cache_dir() is not None
    bits, quality = compiled_pdq(pixels) if compiled else pdqhash.compute(pixels)
    return _pack(bits), int(quality)


def compiled_pdq(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """pdqhash.compute's bits and quality from the numba kernels (see _pdq_kernels.py)."""
    from scanner.hashing import _pdq_kernels as kernels  # start-up cost: numba, only once compiled PDQ pays

    if pixels.strides[2] == 0:  # a grey image's (v, v, v) view: the reference's luma of it is exactly v
        luma = np.ascontiguousarray(pixels[:, :, 0], dtype=np.float32)
    else:
        luma = kernels.luma_from_rgb(np.ascontiguousarray(pixels))
    return kernels.pdq_from_luma(luma, kernels.DCT_MATRIX)


def pdq_dihedral(pixels: np.ndarray) -> tuple[tuple[bytes, ...], int]:
    """The 8 dihedral PDQ hashes in DIHEDRAL_TRANSFORMS order (scanner.hashtypes), and the quality."""
    hashes, quality = pdqhash.compute_dihedral(pixels)
    return tuple(_pack(bits) for bits in hashes), int(quality)


def nearest_512(image: Image.Image) -> Image.Image:
    """Resize to 512x512 taking source pixel floor(dst * size / 512), as CImg's nearest neighbour does."""
    width, height = image.size
    x_scale, y_scale = width / DOWNSAMPLE_SIDE, height / DOWNSAMPLE_SIDE
    # Pillow samples at (dst + 0.5) * scale + offset; the -scale/2 offset makes that dst * scale, and every
    # term is exact in binary because the scales are integers divided by 512.
    return image.transform(
        (DOWNSAMPLE_SIDE, DOWNSAMPLE_SIDE),
        Image.Transform.AFFINE,
        (x_scale, 0, -x_scale / 2, 0, y_scale, -y_scale / 2),
        resample=Image.Resampling.NEAREST,
    )


def _to_8bit(frame: Image.Image) -> Image.Image:
    """Bring integer and float samples to 8 bits the way the reference's CImg<uint8_t> cast does."""
    if frame.mode in _INTEGER_MODES:
        # CImg casts each 16-bit (or wider) sample to uint8, which keeps the LOW byte (value & 0xFF); the
        # reference hashes of 16-bit PNGs match this bit for bit, while value >> 8 is ~130 bits away.
        samples = np.asarray(frame)
        return Image.fromarray((samples & 0xFF).astype(np.uint8))
    if frame.mode == "F":
        samples = np.asarray(frame)
        return Image.fromarray(np.clip(np.nan_to_num(samples), 0, 255).astype(np.uint8))
    return frame


def _pack(bits: np.ndarray) -> bytes:
    """Pack pdqhash's 256-element bit vector, first element as the most significant bit."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()

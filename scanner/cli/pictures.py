"""Deterministic photo-like pictures made in memory: what `scanner demo` serves, and the tests' pictures.

A module of its own so that neither the tests nor anything else needs the demo command to draw one.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def make_image(seed: int, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A deterministic photo-like picture: smooth noise plus shapes, textured enough for PDQ quality."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (size[1] // 24 + 2, size[0] // 24 + 2, 3), dtype=np.uint8)
    image = Image.fromarray(low).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        r = int(rng.integers(10, 80))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return image


def encode(image: Image.Image, fmt: str, quality: int = 90) -> bytes:
    """Encode a picture in memory."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=quality)
    return buffer.getvalue()

"""Shared by the source tests (corpora, special files): small, distinct images made in memory."""

from __future__ import annotations

import io

from PIL import Image


def image_bytes(seed: int, fmt: str = "JPEG") -> bytes:
    """A small, distinct image encoded in memory."""
    image = Image.new("RGB", (24, 16), (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256))
    image.putpixel((seed % 24, seed % 16), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()

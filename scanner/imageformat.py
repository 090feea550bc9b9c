"""An image's format named from its magic bytes, never from a Content-Type or a file name.

The hashing stage sniffs a body before decoding it (scanner.hashing.decode), and an image-tree source sniffs
a file to tell images from the rest (scanner.sources.folder): both use this module, which imports nothing.
"""

from __future__ import annotations

_BMP_INFO_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})


def sniff_format(data: bytes) -> str | None:
    """Name the image format from its magic bytes (never from a Content-Type), or None if it is not one."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in _BMP_INFO_HEADER_SIZES:
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    if head.startswith(b"\x00\x00\x01\x00") and head[4:6] != b"\x00\x00":
        return "ico"
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "jpeg2000"
    if head[4:8] == b"ftyp":
        return _sniff_isobmff(data)
    return None


def _sniff_isobmff(data: bytes) -> str | None:
    """AVIF or HEIF from the brands of an ISO-BMFF `ftyp` box."""
    box_size = int.from_bytes(data[:4], "big")
    brands = data[8:12] + data[16 : min(box_size, 256)]
    names = {brands[i : i + 4] for i in range(0, len(brands) - 3, 4)}
    if names & {b"avif", b"avis"}:
        return "avif"
    if names & _HEIF_BRANDS:
        return "heif"
    return None

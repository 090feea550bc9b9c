"""Reads a response body into memory under a byte cap, undoing gzip/deflate incrementally under that cap."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from scanner.fetch.base import FetchFailure
from scanner.outcomes import FetchOutcome, FetchReason

_GZIP_WBITS = 31
_ZLIB_WBITS = 15
_RAW_DEFLATE_WBITS = -15


async def read_body(
    chunks: AsyncIterator[bytes], *, cap: int, declared_length: int | None, encoding: str | None
) -> bytes:
    """The body; body_too_large past cap bytes on the wire, decompression_bomb past cap bytes decoded."""
    if declared_length is not None and declared_length > cap:
        raise FetchFailure(FetchOutcome.INVALID, FetchReason.BODY_TOO_LARGE)
    inflater = inflater_for(encoding, cap)
    parts: list[bytes] = []
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > cap:
            raise FetchFailure(FetchOutcome.INVALID, FetchReason.BODY_TOO_LARGE)
        if inflater is None:
            parts.append(chunk)
        else:
            parts.extend(inflater.feed(chunk))
    if inflater is not None:
        parts.extend(inflater.finish())
    return b"".join(parts)


def inflater_for(encoding: str | None, cap: int) -> Inflater | None:
    """The decoder for a Content-Encoding value; None for identity; unsupported_content_encoding otherwise."""
    name = (encoding or "").strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip", "deflate"):
        return Inflater(gzip=name != "deflate", cap=cap)
    raise FetchFailure(FetchOutcome.INVALID, FetchReason.UNSUPPORTED_CONTENT_ENCODING)


class Inflater:
    """Incremental gzip or deflate decoder whose total output may never exceed cap bytes."""

    def __init__(self, *, gzip: bool, cap: int) -> None:
        self._gzip = gzip
        self._cap = cap
        self._produced = 0
        self._pending = b""
        self._decoder: zlib._Decompress | None = zlib.decompressobj(_GZIP_WBITS) if gzip else None

    def feed(self, data: bytes) -> list[bytes]:
        """Decode one chunk of the encoded body."""
        if self._decoder is None:
            # "deflate" is zlib-wrapped by the RFC but raw in some servers; the first two bytes tell which.
            self._pending += data
            if len(self._pending) < 2:
                return []
            data, self._pending = self._pending, b""
            self._decoder = zlib.decompressobj(_ZLIB_WBITS if _has_zlib_header(data) else _RAW_DEFLATE_WBITS)
        try:
            return self._decode(data)
        except zlib.error:
            raise FetchFailure(FetchOutcome.INVALID, FetchReason.BAD_CONTENT_ENCODING) from None

    def finish(self) -> list[bytes]:
        """Flush the decoder at the end of the body; a cut-off stream is bad_content_encoding."""
        if self._decoder is None or self._pending:
            raise FetchFailure(FetchOutcome.INVALID, FetchReason.BAD_CONTENT_ENCODING)
        try:
            tail = self._decoder.flush(self._room() + 1)
        except zlib.error:
            raise FetchFailure(FetchOutcome.INVALID, FetchReason.BAD_CONTENT_ENCODING) from None
        self._count(tail)
        if not self._decoder.eof:
            raise FetchFailure(FetchOutcome.INVALID, FetchReason.BAD_CONTENT_ENCODING)
        return [tail]

    def _decode(self, data: bytes) -> list[bytes]:
        assert self._decoder is not None
        out: list[bytes] = []
        while data:
            piece = self._decoder.decompress(data, self._room() + 1)
            self._count(piece)
            out.append(piece)
            if not self._decoder.eof:
                data = self._decoder.unconsumed_tail
            elif self._gzip and self._decoder.unused_data:
                data = self._decoder.unused_data  # another gzip member follows
                self._decoder = zlib.decompressobj(_GZIP_WBITS)
            else:
                break
        return out

    def _room(self) -> int:
        return self._cap - self._produced

    def _count(self, piece: bytes) -> None:
        self._produced += len(piece)
        if self._produced > self._cap:
            raise FetchFailure(FetchOutcome.INVALID, FetchReason.DECOMPRESSION_BOMB)


def _has_zlib_header(data: bytes) -> bool:
    return data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0

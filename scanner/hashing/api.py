"""hash_image: every wanted hash of one body in one pass; the image is decoded at most once."""

from __future__ import annotations

from pathlib import Path

from scanner.errors import InputError
from scanner.hashing.decode import DEFAULT_LIMITS, DecodeError, DecodeLimits, decode_image, open_image
from scanner.hashing.hashers import HASH_TYPES, HASHERS, HashInput
from scanner.hashtypes import ImageHashes, recorded_types
from scanner.procguard import cpu_budget
from scanner.regularfile import open_regular


def hash_image(data: bytes, want: frozenset[str], limits: DecodeLimits = DEFAULT_LIMITS) -> ImageHashes:
    """Hash one body; raises DecodeError (carrying the wanted digests) unless it is a usable image.

    Pixels are decoded only when a perceptual hash is wanted; otherwise only the header is read, so a
    truncated body passes a digest-only call.
    """
    unknown = want - HASH_TYPES
    if unknown:
        raise ValueError(f"unknown hash types {sorted(unknown)}; known: {sorted(HASH_TYPES)}")
    perceptual = [HASHERS[name] for name in sorted(want) if HASHERS[name].needs_pixels]
    exact = digests(data, want)
    fields: dict[str, object] = dict(exact)
    # Parsing and decoding the untrusted bytes is what can stall (a JPEG's scans, a GIF's frames); the hashes
    # of decoded pixels are bounded by max_pixels. The budget binds in hashing workers only.
    try:
        with cpu_budget(limits.decode_timeout):
            if perceptual:
                decoded = decode_image(data, limits)
                header, fmt = decoded.frame, decoded.format
                source = HashInput(data, decoded)
            else:
                header, fmt = open_image(data, limits)
    except DecodeError as exc:
        exc.digests = exact
        raise
    fields.update(width=header.width, height=header.height, format=fmt)
    for hasher in perceptual:
        fields.update(hasher.compute(source))
    return ImageHashes.of(fields)


def digests(data: bytes, want: frozenset[str]) -> dict[str, bytes]:
    """The wanted digests of the exact bytes (md5, sha1, sha256), without parsing any of them."""
    source = HashInput(data, None)
    found: dict[str, bytes] = {}
    for name in sorted(want):
        if not HASHERS[name].needs_pixels:
            found.update(HASHERS[name].compute(source))  # type: ignore[arg-type]
    return found


def hash_file_record(path: str | Path, limits: DecodeLimits = DEFAULT_LIMITS) -> dict[str, object]:
    """The `scanner hash FILE` record: every hash of one local file as lower-case hex, plus its header."""
    try:
        with open_regular(str(path)) as handle:  # never a FIFO's endless wait or /dev/zero's endless read
            data = handle.read()
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    # Every recorded type, as hashes.parquet keeps them: not the dihedral set, which is a matching option.
    types = recorded_types()
    try:
        hashes = hash_image(data, frozenset(t.name for t in types), limits)
    except DecodeError as exc:
        raise InputError(str(path), f"not a usable image ({exc})") from exc
    record: dict[str, object] = {"path": str(path)}
    for hash_type in types:
        record[hash_type.name] = hash_type.to_hex(hashes.get(hash_type.name))
        if hash_type.quality_column:
            record[hash_type.quality_column] = hashes.get(hash_type.quality_column)
    return {**record, "width": hashes.width, "height": hashes.height, "format": hashes.format}

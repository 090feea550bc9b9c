"""hash_image: every wanted hash of one body in one pass; the image is decoded at most once."""

from __future__ import annotations

from pathlib import Path

from scanner.errors import InputError
from scanner.hashing.decode import DEFAULT_LIMITS, DecodeError, DecodeLimits, decode_image, open_image
from scanner.hashing.hashers import HASH_TYPES, HASHERS, Hasher, HashInput, PluginError
from scanner.hashtypes import ImageHashes, recorded_types
from scanner.procguard import cpu_budget, wall_budget
from scanner.regularfile import open_regular

# A plug-in's wall-clock budget per body, in decode budgets: room for a busy machine, not for a stuck plug-in.
PLUGIN_WALL_FACTOR = 4


def hash_image(data: bytes, want: frozenset[str], limits: DecodeLimits = DEFAULT_LIMITS) -> ImageHashes:
    """Hash one body; raises DecodeError (carrying the wanted digests) unless it is a usable image.

    Pixels are decoded only when a perceptual hash is wanted; otherwise only the header is read, so a
    truncated body passes a digest-only call.
    """
    unknown = want - HASH_TYPES
    if unknown:
        raise ValueError(f"unknown hash types {sorted(unknown)}; known: {sorted(HASH_TYPES)}")
    perceptual = [HASHERS[name] for name in sorted(want) if HASHERS[name].needs_pixels]
    plugins = [HASHERS[name] for name in sorted(want) if HASHERS[name].plugin]
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
    if plugins:
        fields.update(plugin_hashes(data, plugins, limits, fields))
    return ImageHashes.of(fields)


def plugin_hashes(
    data: bytes, plugins: list[Hasher], limits: DecodeLimits, fields: dict[str, object]
) -> dict[str, object]:
    """The plug-ins' signals of a body that is a usable image. A plug-in may loop (the CPU budget) or wait
    (the wall-clock budget, PLUGIN_WALL_FACTOR times it): either kills the hashing worker (decode_timeout).
    A plug-in that fails raises PluginError carrying every hash computed so far."""
    source = HashInput(data, None)
    found: dict[str, object] = {}
    try:
        with cpu_budget(limits.decode_timeout), wall_budget(PLUGIN_WALL_FACTOR * limits.decode_timeout):
            for hasher in plugins:
                found.update(hasher.compute(source))
    except PluginError as exc:
        exc.digests = dict(fields)  # type: ignore[arg-type]
        raise
    return found


def digests(data: bytes, want: frozenset[str]) -> dict[str, bytes]:
    """The wanted digests of the exact bytes (md5, sha1, sha256), without parsing any of them (and without
    any plug-in: this is what a body that killed a worker still gets)."""
    source = HashInput(data, None)
    found: dict[str, bytes] = {}
    for name in sorted(want):
        if not HASHERS[name].needs_pixels and not HASHERS[name].plugin:
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
        value = hashes.get(hash_type.name)  # None: a plug-in that could not hash this image
        record[hash_type.name] = None if value is None else hash_type.to_hex(value)
        if hash_type.quality_column:
            record[hash_type.quality_column] = hashes.get(hash_type.quality_column)
    return {**record, "width": hashes.width, "height": hashes.height, "format": hashes.format}

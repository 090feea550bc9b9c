"""The hashing stage: image bytes in memory -> digests and perceptual hashes (PDQ, pHash, dHash)."""

from __future__ import annotations

from scanner.hashing.api import hash_file_record, hash_image
from scanner.hashing.decode import DecodeError, DecodeLimits, DecodeReason, sniff_format
from scanner.hashing.hashers import HASH_TYPES, HASHERS
from scanner.hashtypes import DIHEDRAL_TRANSFORMS, ImageHashes

__all__ = [
    "DIHEDRAL_TRANSFORMS",
    "HASHERS",
    "HASH_TYPES",
    "DecodeError",
    "DecodeLimits",
    "DecodeReason",
    "ImageHashes",
    "hash_file_record",
    "hash_image",
    "sniff_format",
]

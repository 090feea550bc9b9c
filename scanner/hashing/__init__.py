"""The hashing stage: image bytes in memory -> digests and perceptual hashes (PDQ, pHash, dHash)."""

from __future__ import annotations

from scanner.hashing.api import hash_file_record, hash_image
from scanner.hashing.decode import DecodeError, DecodeLimits, DecodeReason, sniff_format
from scanner.hashing.hashers import HASH_TYPES, HASHERS, ImageHashes
from scanner.hashing.pdq import DIHEDRAL_TRANSFORMS

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

"""One small class per hash type, and the registry: adding a hash type means editing this file only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import imagehash
import numpy as np
from PIL import Image

from scanner.hashing import pdq
from scanner.hashing.decode import DecodedImage


@dataclass(frozen=True, slots=True)
class ImageHashes:
    """Every hash of one image body (raw bytes), plus what its header says; None where not wanted."""

    md5: bytes | None = None
    sha1: bytes | None = None
    sha256: bytes | None = None
    pdq: bytes | None = None
    pdq_quality: int | None = None
    pdq_dihedral: tuple[bytes, ...] | None = None
    phash: bytes | None = None
    dhash: bytes | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None


class HashInput:
    """One body and, when decoded, its first frame; derived pixels are computed once and shared."""

    def __init__(self, data: bytes, decoded: DecodedImage | None) -> None:
        self.data = data
        self._decoded = decoded

    @property
    def decoded(self) -> DecodedImage:
        """The decoded image; only perceptual hashers ask, and only when it was decoded."""
        if self._decoded is None:
            raise RuntimeError("a perceptual hash was computed without decoding the image")
        return self._decoded

    @cached_property
    def pdq_pixels(self) -> np.ndarray:
        """The reference PDQ input, shared by pdq and pdq_dihedral."""
        return pdq.pdq_pixels(self.decoded.reference_frame)

    @cached_property
    def grey(self) -> Image.Image:
        """The full-size grey image imagehash would make, shared by phash and dhash."""
        frame = self.decoded.frame
        return frame if frame.mode == "L" else frame.convert("L")


class Hasher:
    """A hash type: its name, its length in bytes, and how to compute it into ImageHashes fields."""

    name: ClassVar[str]
    size: ClassVar[int]
    needs_pixels: ClassVar[bool]

    def compute(self, source: HashInput) -> dict[str, object]:
        """The ImageHashes fields this hash type fills."""
        raise NotImplementedError


class DigestHasher(Hasher):
    """A cryptographic digest of the exact bytes received."""

    needs_pixels = False

    def compute(self, source: HashInput) -> dict[str, object]:
        """hashlib's digest of the body, under the hasher's name."""
        return {self.name: hashlib.new(self.name, source.data).digest()}


class Md5(DigestHasher):
    """MD5, as exact-match lists (NCMEC, IWF) publish it."""

    name = "md5"
    size = 16


class Sha1(DigestHasher):
    """SHA-1, as exact-match lists publish it."""

    name = "sha1"
    size = 20


class Sha256(DigestHasher):
    """SHA-256, as exact-match lists publish it."""

    name = "sha256"
    size = 32


class Pdq(Hasher):
    """PDQ, bit-exact with the C++ reference; quality is reported as is (matching decides what to ignore)."""

    name = "pdq"
    size = 32
    needs_pixels = True

    def compute(self, source: HashInput) -> dict[str, object]:
        """The hash and its quality."""
        value, quality = pdq.pdq_hash(source.pdq_pixels)
        return {"pdq": value, "pdq_quality": quality}


class PdqDihedral(Hasher):
    """The 8 dihedral PDQ hashes (rotations and flips), to match transformed copies of listed images."""

    name = "pdq_dihedral"
    size = 32
    needs_pixels = True

    def compute(self, source: HashInput) -> dict[str, object]:
        """The 8 hashes in pdq.DIHEDRAL_TRANSFORMS order, and the quality."""
        values, quality = pdq.pdq_dihedral(source.pdq_pixels)
        return {"pdq_dihedral": values, "pdq_quality": quality}


class PHash(Hasher):
    """imagehash's DCT perceptual hash, hash_size 8."""

    name = "phash"
    size = 8
    needs_pixels = True

    def compute(self, source: HashInput) -> dict[str, object]:
        """The 8 bytes of str(imagehash.phash(image))."""
        return {"phash": bytes.fromhex(str(imagehash.phash(source.grey, hash_size=8)))}


class DHash(Hasher):
    """imagehash's horizontal difference hash, hash_size 8."""

    name = "dhash"
    size = 8
    needs_pixels = True

    def compute(self, source: HashInput) -> dict[str, object]:
        """The 8 bytes of str(imagehash.dhash(image))."""
        return {"dhash": bytes.fromhex(str(imagehash.dhash(source.grey, hash_size=8)))}


HASHERS: dict[str, Hasher] = {
    hasher.name: hasher for hasher in (Md5(), Sha1(), Sha256(), Pdq(), PdqDihedral(), PHash(), DHash())
}
HASH_TYPES: frozenset[str] = frozenset(HASHERS)

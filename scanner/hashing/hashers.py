"""How each image hash type is computed: one small class per type, keyed by its name in scanner.hashtypes.

What a type is (width, hex form, threshold, index kind, report column) is in scanner/hashtypes.py's
REGISTRY; here only how it is computed. Adding an image hash type is its HashType there and its Hasher here
(register_hasher); every other table derives from the registry."""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import ClassVar

import imagehash
import numpy as np
from PIL import Image

from scanner import nostore
from scanner.errors import ContentAtRestError
from scanner.hashing import pdq
from scanner.hashing.decode import DecodedImage, DecodeError
from scanner.hashtypes import IMAGE, REGISTRY
from scanner.outcomes import HashingReason

# The longest signal string a plug-in may give for one body: a report cell, not a place for data.
MAX_SIGNAL_CHARS = 64 * 1024


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
    """How one image hash type is computed into ImageHashes fields; `name` is its name in the registry."""

    name: ClassVar[str]
    needs_pixels: ClassVar[bool]
    plugin: ClassVar[bool] = False  # a signal-type plug-in's: run last, under a wall-clock budget too

    @property
    def size(self) -> int:
        """The hash's length in bytes, as the registry gives it."""
        return REGISTRY[self.name].nbytes

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


class Sha1(DigestHasher):
    """SHA-1, as exact-match lists publish it."""

    name = "sha1"


class Sha256(DigestHasher):
    """SHA-256, as exact-match lists publish it."""

    name = "sha256"


class Pdq(Hasher):
    """PDQ, bit-exact with the C++ reference; quality is reported as is (matching decides what to ignore)."""

    name = "pdq"
    needs_pixels = True

    def compute(self, source: HashInput) -> dict[str, object]:
        """The hash and its quality."""
        value, quality = pdq.pdq_hash(source.pdq_pixels)
        return {"pdq": value, "pdq_quality": quality}


class PdqDihedral(Hasher):
    """The 8 dihedral PDQ hashes (rotations and flips), to match transformed copies of listed images."""

    name = "pdq_dihedral"
    needs_pixels = True

    def compute(self, source: HashInput) -> dict[str, object]:
        """The 8 hashes in pdq.DIHEDRAL_TRANSFORMS order, and the quality."""
        values, quality = pdq.pdq_dihedral(source.pdq_pixels)
        return {"pdq_dihedral": values, "pdq_quality": quality}


class PHash(Hasher):
    """imagehash's DCT perceptual hash, hash_size 8."""

    name = "phash"
    needs_pixels = True

    def compute(self, source: HashInput) -> dict[str, object]:
        """The 8 bytes of str(imagehash.phash(image))."""
        return {"phash": bytes.fromhex(str(imagehash.phash(source.grey, hash_size=8)))}


class DHash(Hasher):
    """imagehash's horizontal difference hash, hash_size 8."""

    name = "dhash"
    needs_pixels = True

    def compute(self, source: HashInput) -> dict[str, object]:
        """The 8 bytes of str(imagehash.dhash(image))."""
        return {"dhash": bytes.fromhex(str(imagehash.dhash(source.grey, hash_size=8)))}


class PluginError(DecodeError):
    """A signal-type plug-in failed on a body (raised, wrote a file, gave no valid signal string)."""

    def __init__(self, reason: HashingReason, detail: str | None = None) -> None:  # type: ignore[override]
        super().__init__(reason, detail)  # type: ignore[arg-type]


class SignalHasher(Hasher):
    """A python-threatexchange BytesHasher plug-in (scanner/plugins.py): its hash_from_bytes on the body,
    its validate_signal_str on what it gives; the value is the signal string's UTF-8.

    An empty string is pytx's "cannot hash this" (its PDQ below quality 50): no value, not a failure."""

    needs_pixels = False
    plugin = True

    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]
        self.signal_type = REGISTRY[name].signal_class()

    def compute(self, source: HashInput) -> dict[str, object]:
        """{name: signal string} or {} for no signal; PluginError when the plug-in fails."""
        refused = nostore.refused()
        try:
            signal = self.signal_type.hash_from_bytes(source.data)
        except ContentAtRestError:
            raise PluginError(HashingReason.PLUGIN_WROTE_FILE, self.name) from None
        except Exception as exc:  # whatever the plug-in raises fails this body only
            raise PluginError(HashingReason.PLUGIN_FAILED, f"{self.name}: {type(exc).__name__}") from None
        if nostore.refused() != refused:  # it caught the refusal and went on
            raise PluginError(HashingReason.PLUGIN_WROTE_FILE, self.name)
        return {self.name: self._checked(signal).encode("utf-8")} if signal != "" else {}

    def _checked(self, signal: object) -> str:
        if not isinstance(signal, str) or len(signal) > MAX_SIGNAL_CHARS:
            raise PluginError(HashingReason.PLUGIN_FAILED, f"{self.name}: not a signal string")
        try:
            return str(self.signal_type.validate_signal_str(signal))
        except Exception as exc:
            raise PluginError(HashingReason.PLUGIN_FAILED, f"{self.name}: {type(exc).__name__}") from None


HASHERS: dict[str, Hasher] = {}
"""The hasher of every image hash type, by name."""
HASH_TYPES = HASHERS.keys()
"""The names of the hash types the hashing stage computes (a live view of HASHERS)."""


def register_hasher(hasher: Hasher) -> Hasher:
    """Add the hasher of a registered image hash type; one per type."""
    hash_type = REGISTRY.get(hasher.name)
    if hash_type is None or hash_type.computed_from != IMAGE:
        raise ValueError(f"{hasher.name!r} is not a registered image hash type (scanner.hashtypes.register)")
    if hasher.name in HASHERS:
        raise ValueError(f"hash type {hasher.name!r} already has a hasher")
    HASHERS[hasher.name] = hasher
    return hasher


def unregister_hasher(name: str) -> None:
    """Remove a hasher (tests that register a toy type)."""
    del HASHERS[name]


for _hasher in (Md5(), Sha1(), Sha256(), Pdq(), PdqDihedral(), PHash(), DHash()):
    register_hasher(_hasher)
del _hasher

"""Test-only python-threatexchange signal types: a small one that matches within a distance, ones that
misbehave (write a file, raise, wait, spin), one that hashes files only, and a TX_MANIFEST naming one.

The misbehaving ones choose by the image's width, so one scan holds a row for each and the others stay
clean: what a plug-in does to one body must not reach the next."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from pathlib import Path

from PIL import Image
from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest
from threatexchange.signal_type import signal_base
from threatexchange.signal_type.index import SignalSimilarityInfoWithIntDistance

# Where a misbehaving plug-in writes (not tempfile.gettempdir(), which probes by writing a file: the write
# guard refuses that at import, in the workers).
LEAK = Path(os.environ.get("TMPDIR", "/tmp")) / "scanner-test-plugin-leak"
TOY_THRESHOLD = 4  # bits of the toy's 64


def toy_signal(body: bytes) -> str:
    """The toy's signal of a body: BLAKE2b-64 as hex."""
    return hashlib.blake2b(body, digest_size=8).hexdigest()


class ToyIndex(signal_base.TrivialLinearSearchHashIndex):
    """pytx's linear index over the toy's own compare."""


class ToySignal(signal_base.SimpleSignalType, signal_base.BytesHasher):
    """BLAKE2b-64 of the bytes, matched within TOY_THRESHOLD bits."""

    @classmethod
    def get_name(cls) -> str:
        return "toy_blake"

    @classmethod
    def get_content_types(cls) -> list:
        return []

    @classmethod
    def get_index_cls(cls) -> type:
        return ToyIndex

    @classmethod
    def validate_signal_str(cls, signal_str: str) -> str:
        value = signal_str.strip().lower()
        if len(value) != 16 or not all(c in "0123456789abcdef" for c in value):
            raise ValueError(f"{signal_str!r} is not a toy signal")
        return value

    @classmethod
    def compare_hash(cls, hash1: str, hash2: str) -> signal_base.SignalComparisonResult:
        distance = (int(hash1, 16) ^ int(hash2, 16)).bit_count()
        return signal_base.SignalComparisonResult(
            distance <= TOY_THRESHOLD, SignalSimilarityInfoWithIntDistance(distance)
        )

    @classmethod
    def hash_from_bytes(cls, bytes_: bytes) -> str:
        return toy_signal(bytes_)

    @staticmethod
    def get_examples() -> list[str]:
        return ["0011223344556677"]


ToyIndex._SIGNAL_TYPE = ToySignal

# What MoodySignal does to an image of each width; any other width is hashed like the toy.
WRITES, RAISES, WAITS, WRITES_QUIETLY, SPINS = 161, 162, 163, 164, 165


class MoodySignal(ToySignal):
    """The toy, except on images of the widths above: it writes a file, raises, waits, catches the write
    guard's refusal and goes on, or loops."""

    @classmethod
    def get_name(cls) -> str:
        return "moody"

    @classmethod
    def hash_from_bytes(cls, bytes_: bytes) -> str:
        width = Image.open(io.BytesIO(bytes_)).width
        if width == WRITES:
            LEAK.write_bytes(bytes_)
        elif width == RAISES:
            raise RuntimeError("the plug-in broke")
        elif width == WAITS:
            time.sleep(3600)
        elif width == WRITES_QUIETLY:
            with contextlib.suppress(Exception):
                LEAK.write_bytes(bytes_)
        elif width == SPINS:
            while True:
                pass
        return toy_signal(bytes_)


class FileOnlySignal(signal_base.SimpleSignalType, signal_base.FileHasher):
    """Hashes files only: the scanner, which never puts an image in a file, refuses it."""

    @classmethod
    def get_content_types(cls) -> list:
        return []

    @classmethod
    def get_index_cls(cls) -> type:
        return signal_base.TrivialSignalTypeIndex

    @classmethod
    def hash_from_file(cls, file: Path) -> str:
        return toy_signal(file.read_bytes())

    @staticmethod
    def get_examples() -> list[str]:
        return []


class ClashingSignal(ToySignal):
    """A second class under the toy's name."""


TX_MANIFEST = ThreatExchangeExtensionManifest(signal_types=(ToySignal,))

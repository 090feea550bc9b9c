"""The hash types: one HashType per type, the one place that names them and says what they are.

A HashType is data (no stage is imported here): its name, its width, how it is written (lower-case hex, or
text in a normal form for url and domain), what it is computed from, how it is matched (exactly, or within
a Hamming distance, and its default threshold), and how a report shows it. Every stage's table derives from
REGISTRY: the hashing stage keys its compute classes by these names (hashing/hashers.py, one hasher per
image type), the lists key their entries by them (lists/hashtypes.py), the screen takes --match-column types,
hashes.parquet its columns, `scanner hash` its fields, the matcher its default thresholds and index kinds,
report.html its distance histograms. Adding an image hash type is a `register(HashType(...))` here and its
hasher in hashing/hashers.py; nothing else names it.

Two kinds sit side by side, told apart by `computed_from`:
- IMAGE: computed from a fetched body by a hasher (md5, sha1, sha256, pdq, phash, dhash, and pdq_dihedral,
  the 8 rotated and flipped PDQ hashes, a `variant_of` pdq that no list holds). Recorded in hashes.parquet,
  matchable as dataset columns (--match-column), printed by `scanner hash`.
- URL: computed from a row's URL in normal form by the screen (urls/normal.py), before any request (url,
  domain, url_md5, url_sha1, url_sha256). No hasher and no stored column: a rematch screens the stored URL
  again. They share the registry because a list file and the matcher treat both alike (a list may mix them,
  a match names its type, a threshold is 0); keeping them out would bring back a second list of names in
  lists/.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal

IMAGE = "image"  # computed from the body by a hasher (hashing/hashers.py)
URL = "url"  # computed from the URL's normal form by the screen (scanner/urls/normal.py)
EXACT = "exact"  # matched by equal keys
HAMMING = "hamming"  # matched within a Hamming distance (multi-index hashing, lists/index.py)
SIGNAL = "signal"  # matched by a python-threatexchange plug-in's own index and compare (scanner/plugins.py)

# pdq_dihedral's 8 hashes, in the order of the reference's --pdqdih output and pdqhash.compute_dihedral.
DIHEDRAL_TRANSFORMS = (
    "original",
    "rotate90",
    "rotate180",
    "rotate270",
    "flipx",
    "flipy",
    "flipplus1",
    "flipminus1",
)


@dataclass(frozen=True, slots=True)
class HashType:
    """One hash type: what it is, how wide, how it is written, computed and matched."""

    name: str
    nbytes: int  # the raw hash (text types: the 16-byte BLAKE2b key of the normal form)
    computed_from: Literal["image", "url"]
    index: Literal["exact", "hamming", "signal"] = EXACT
    threshold: int = 0  # default match distance in bits, inclusive; 0 for exact types
    normal_form: Literal["url", "host"] | None = None  # text types: list values in this normal form, not hex
    match_parents: bool = False  # a query also matches its parent domains (domain)
    quality: bool = False  # the hasher also gives a 0-100 quality, recorded as `<name>_quality`
    variant_of: str | None = None  # transformed copies of another type's hash, computed on request only
    transforms: tuple[str, ...] = ()  # a variant's hashes, in order (the original first)
    histogram_bits: int = 0  # report.html's distance histogram spans at least 0..this
    signal: str | None = None  # a plug-in's "module:Class" (a pytx SignalType): values are its signal strings

    def __post_init__(self) -> None:
        if self.computed_from not in (IMAGE, URL) or self.index not in (EXACT, HAMMING, SIGNAL):
            raise ValueError(f"{self.name}: computed_from {self.computed_from!r}, index {self.index!r}")
        if (self.index == SIGNAL) != (self.signal is not None):
            raise ValueError(f"{self.name}: a signal index needs a signal type, and only it")
        if not 0 <= self.threshold <= self.bits or (self.index != HAMMING and self.threshold):
            raise ValueError(f"{self.name}: threshold {self.threshold}, {self.index} index, {self.bits} bits")

    @property
    def bits(self) -> int:
        return 8 * self.nbytes

    @property
    def hamming(self) -> bool:
        """Matched within a distance rather than exactly."""
        return self.index == HAMMING

    @property
    def text(self) -> bool:
        """List values are text in a normal form (keyed by a digest of it), not hex."""
        return self.normal_form is not None

    @property
    def recorded(self) -> bool:
        """Computed from images and kept per row: a hashes.parquet column, a query value, a `scanner hash`
        field, a --match-column type."""
        return self.computed_from == IMAGE and self.variant_of is None

    @property
    def listable(self) -> bool:
        """A list may hold it (every type but the variants, which are matched as their base type)."""
        return self.variant_of is None

    @property
    def quality_column(self) -> str | None:
        return f"{self.name}_quality" if self.quality else None

    def signal_class(self) -> Any:
        """The plug-in's SignalType class, imported by its "module:Class" name (any process can)."""
        if self.signal is None:
            raise ValueError(f"{self.name} is no plug-in signal type")
        module, _, qualname = self.signal.partition(":")
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        return found

    def to_hex(self, value: bytes) -> str:
        """The lower-case hex form lists and reports write (a plug-in's: its signal string as it gave it)."""
        if self.signal is not None:
            return value.decode("utf-8")
        if len(value) != self.nbytes:
            raise ValueError(f"a {self.name} hash is {self.nbytes} bytes, got {len(value)}")
        return value.hex()

    def from_hex(self, text: str) -> bytes:
        """The raw bytes of a hex form (either case); ValueError unless it is exactly this type's width. A
        plug-in's value is its signal string's UTF-8, whatever its length."""
        if self.signal is not None:
            return text.encode("utf-8")
        if len(text) != 2 * self.nbytes:
            raise ValueError(f"a {self.name} hash has {2 * self.nbytes} hex digits, this has {len(text)}")
        return bytes.fromhex(text)

    def distance(self, a: bytes, b: bytes) -> int:
        """The Hamming distance in bits between two hashes of this type (0 for equal ones); a plug-in's
        distance is its own compare's (scanner/lists/signals.py)."""
        if self.signal is not None:
            raise ValueError(f"{self.name} is compared by its plug-in, not by bits")
        if len(a) != self.nbytes or len(b) != self.nbytes:
            raise ValueError(f"a {self.name} hash is {self.nbytes} bytes")
        return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


_REGISTRY: dict[str, HashType] = {}
REGISTRY = MappingProxyType(_REGISTRY)
"""Every hash type by name, in registration order (the order of columns and of listed names)."""


def register(hash_type: HashType) -> HashType:
    """Add a hash type; its name must be new, and a variant's base type registered."""
    if hash_type.name in _REGISTRY:
        raise ValueError(f"hash type {hash_type.name!r} is already registered")
    if hash_type.variant_of is not None and hash_type.variant_of not in _REGISTRY:
        raise ValueError(f"{hash_type.name}: unknown base type {hash_type.variant_of!r}")
    _REGISTRY[hash_type.name] = hash_type
    return hash_type


def unregister(name: str) -> None:
    """Remove a hash type (tests that register a toy one)."""
    del _REGISTRY[name]


@contextmanager
def registered(hash_type: HashType) -> Iterator[HashType]:
    """A hash type registered for the duration of a with-block (tests)."""
    register(hash_type)
    try:
        yield hash_type
    finally:
        unregister(hash_type.name)


def recorded_types() -> tuple[HashType, ...]:
    """The image types kept per row (hashes.parquet columns, queries, `scanner hash`), in order."""
    return tuple(t for t in _REGISTRY.values() if t.recorded)


def listable_types() -> tuple[HashType, ...]:
    """The types a list may hold, in order."""
    return tuple(t for t in _REGISTRY.values() if t.listable)


def variant_types() -> tuple[HashType, ...]:
    """The image types computed on request as transformed copies of another (pdq_dihedral)."""
    return tuple(t for t in _REGISTRY.values() if t.variant_of is not None)


def names_computed_from(source: str) -> frozenset[str]:
    """The names of the types computed from images (IMAGE) or from URLs (URL)."""
    return frozenset(name for name, t in _REGISTRY.items() if t.computed_from == source)


for _type in (
    HashType("md5", 16, IMAGE),
    HashType("sha1", 20, IMAGE),
    HashType("sha256", 32, IMAGE),
    # Meta's recommendation: within 31 of 256 bits, ignoring hashes of quality below 50.
    HashType("pdq", 32, IMAGE, HAMMING, threshold=31, quality=True, histogram_bits=31),
    HashType("pdq_dihedral", 32, IMAGE, variant_of="pdq", transforms=DIHEDRAL_TRANSFORMS),
    # 8 of 64 bits: the same 1/8 of the bits as PDQ's 31/256 (see MatchConfig for what it costs).
    HashType("phash", 8, IMAGE, HAMMING, threshold=8, histogram_bits=16),
    HashType("dhash", 8, IMAGE, HAMMING, threshold=8, histogram_bits=16),
    HashType("url_md5", 16, URL),
    HashType("url_sha1", 20, URL),
    HashType("url_sha256", 32, URL),
    HashType("url", 16, URL, normal_form="url"),
    HashType("domain", 16, URL, normal_form="host", match_parents=True),
):
    register(_type)
del _type
BUILT_IN = frozenset(_REGISTRY)
"""The types the scanner itself registers; any other is a plug-in's."""


@dataclass(frozen=True, slots=True)
class ImageHashes:
    """Every hash of one image body (raw bytes), plus what its header says; None where not wanted.

    The fields name the built-in image types; a type registered later keeps its value in `extra`. Read any
    of them by name with get(); build from a hasher's fields with of()."""

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
    extra: dict[str, Any] = field(default_factory=dict)  # values of types without a field here

    @classmethod
    def of(cls, values: dict[str, Any]) -> ImageHashes:
        """ImageHashes from field values by name; names without a field go to extra."""
        known = {k: v for k, v in values.items() if k in _FIELDS}
        extra = {k: v for k, v in values.items() if k not in _FIELDS and v is not None}
        return cls(**known, extra=extra)

    def get(self, name: str) -> Any:
        """The value of a hash type (or quality, or header field) by name; None when not computed."""
        return getattr(self, name) if name in _FIELDS else self.extra.get(name)


_FIELDS = frozenset(f.name for f in fields(ImageHashes)) - {"extra"}

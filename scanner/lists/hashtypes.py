"""How a list's values of each hash type become keys, and a query's value the keys to look up.

What the types are is scanner.hashtypes.REGISTRY; this is the lists' side of every listable type there,
built from it (list_keys). Keys are fixed-width bytes, so one index serves every type. Hex types store
their raw bytes. Text types (url, domain) store a 16-byte BLAKE2b digest of the normalised text and keep
the text as the entry id.
"""

from __future__ import annotations

import binascii
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from scanner import arrowvalues
from scanner.hashtypes import REGISTRY, HashType
from scanner.lists.index import aligned_empty
from scanner.urls.normal import BadEntry, normalise_host, normalise_hosts, normalise_url, normalise_urls


class BadValue(ValueError):
    """A list value that is not a valid hash of its type; row is its position among the values parsed."""

    def __init__(self, row: int, message: str) -> None:
        super().__init__(message)
        self.row = row
        self.message = message


@dataclass(frozen=True, slots=True)
class ParsedKeys:
    """Keys decoded from a column of list values, and entry names where the type supplies them."""

    keys: np.ndarray  # (n, nbytes) uint8
    names: pa.Array | None = None


class ListKeys(ABC):
    """One listable hash type as the lists key it: its registry entry, and how values become keys."""

    def __init__(self, hash_type: HashType) -> None:
        self.type = hash_type

    @property
    def name(self) -> str:
        return self.type.name

    @property
    def nbytes(self) -> int:
        return self.type.nbytes

    @property
    def hamming(self) -> bool:
        """Matched within a Hamming distance; otherwise exactly."""
        return self.type.hamming

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @abstractmethod
    def parse(self, values: pa.Array) -> ParsedKeys:
        """Decode list values (strings) to keys; raises BadValue naming the first bad one."""

    @abstractmethod
    def query_keys(self, value: bytes) -> list[bytes]:
        """The keys to look up for one query value (a domain also looks up its parent domains)."""


class HexKeys(ListKeys):
    """A digest or perceptual hash written as hex: md5, sha1, sha256, pdq, phash, dhash, url_*."""

    def parse(self, values: pa.Array) -> ParsedKeys:
        return ParsedKeys(decode_hex(values, self.nbytes, self.name))

    def query_keys(self, value: bytes) -> list[bytes]:
        if len(value) != self.nbytes:
            raise ValueError(f"a {self.name} query must be {self.nbytes} bytes, got {len(value)}")
        return [value]


# A text type's normal form (HashType.normal_form): one value, and a whole column (the same, but fast).
NORMAL_FORMS = {"url": (normalise_url, normalise_urls), "host": (normalise_host, normalise_hosts)}


class TextKeys(ListKeys):
    """A string matched exactly after normalisation: keyed by the digest of its normal form.

    With match_parents, a query also matches entries for its parent domains (a.b.example.com matches a
    list entry example.com).
    """

    def __init__(self, hash_type: HashType) -> None:
        super().__init__(hash_type)
        self.normalise, self.normalise_column = NORMAL_FORMS[hash_type.normal_form]  # type: ignore[index]
        self.match_parents = hash_type.match_parents

    def parse(self, values: pa.Array) -> ParsedKeys:
        try:
            names = self.normalise_column(values)
        except BadEntry as error:
            raise BadValue(error.row, f"not a valid {self.name}: {error}") from None
        keys = aligned_empty((len(names), self.nbytes))
        keys[:] = np.frombuffer(text_keys(names), dtype=np.uint8).reshape(keys.shape)
        return ParsedKeys(keys, names)

    def query_keys(self, value: bytes) -> list[bytes]:
        try:
            normal = self.normalise(value.decode("utf-8", errors="strict"))
        except (UnicodeDecodeError, ValueError):
            return []
        if not self.match_parents:
            return [text_key(normal)]
        labels = normal.split(".")
        return [text_key(".".join(labels[i:])) for i in range(len(labels))]


def text_key(text: str) -> bytes:
    """The 16-byte key of a normalised text value."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def text_keys(texts: pa.Array) -> bytes:
    """text_key of every value in a string column, concatenated (the loop kept tight: 1M values a second)."""
    blake2b = hashlib.blake2b
    return b"".join([blake2b(data, digest_size=16).digest() for data in texts.cast(pa.binary()).to_pylist()])


class SignalKeys(ListKeys):
    """A signal-type plug-in's signal strings (scanner/plugins.py), each checked by the plug-in's own
    validate_signal_str and keyed by a digest of what it returns; the strings are kept (HashEntries.texts)
    for the plug-in's own compare. Checked one by one in Python: a plug-in's list loads at about the speed
    of its validator."""

    def parse(self, values: pa.Array) -> ParsedKeys:
        if values.null_count:
            raise BadValue(first_true(values.is_null()), "missing hash")
        validate = self.type.signal_class().validate_signal_str
        signals = []
        for row, value in enumerate(values.to_pylist()):
            try:
                signals.append(str(validate(value)))
            except Exception as error:  # the plug-in's own refusal, whatever it raises
                raise BadValue(row, f"not a valid {self.name} signal ({error})") from None
        names = arrowvalues.strings(signals)
        keys = aligned_empty((len(names), self.nbytes))
        keys[:] = np.frombuffer(text_keys(names), dtype=np.uint8).reshape(keys.shape)
        return ParsedKeys(keys, names)

    def query_keys(self, value: bytes) -> list[bytes]:
        return [hashlib.blake2b(value, digest_size=16).digest()]


_HEX_VALUES = np.full(256, 255, dtype=np.uint8)  # to find the row that binascii refused
_HEX_VALUES[np.frombuffer(b"0123456789abcdefABCDEF", dtype=np.uint8)] = 0

_DECODE_ROWS = 1 << 20  # rows decoded at a time, to bound temporary memory


def decode_hex(values: pa.Array, nbytes: int, type_name: str) -> np.ndarray:
    """(n, nbytes) uint8 keys from a string array of hex, vectorised; BadValue names the first bad row."""
    if values.null_count:
        raise BadValue(first_true(values.is_null()), "missing hash")
    lengths = np.diff(string_buffers(values)[0])
    wrong = np.flatnonzero(lengths != 2 * nbytes)
    if len(wrong):
        row = int(wrong[0])
        characters = len(
            values[row].as_py()
        )  # the bytes' count is not what a reader sees (full-width digits)
        raise BadValue(
            row, f"a {type_name} hash has {2 * nbytes} hex digits, this has {characters} characters"
        )
    digits = _ascii_rows(values, 2 * nbytes)
    keys = aligned_empty((len(values), nbytes))
    for first in range(0, len(values), _DECODE_ROWS):
        chunk = digits[first : first + _DECODE_ROWS]
        try:
            decoded = binascii.unhexlify(chunk)
        except binascii.Error:
            bad = np.flatnonzero((_HEX_VALUES[chunk] == 255).any(axis=1))[0]
            raise BadValue(first + int(bad), f"{type_name} hash is not hexadecimal") from None
        keys[first : first + len(chunk)] = np.frombuffer(decoded, dtype=np.uint8).reshape(len(chunk), nbytes)
    return keys


def _ascii_rows(values: pa.Array, width: int) -> np.ndarray:
    """The bytes of equal-length strings as an (n, width) view of the array's data buffer."""
    offsets, data = string_buffers(values)
    return data[offsets[0] : offsets[-1]].reshape(len(values), width)


def string_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's offsets (n + 1, int64) and data bytes as numpy views, without copying."""
    values = values.cast(pa.large_string())
    _, offsets, data = values.buffers()
    starts = np.frombuffer(offsets, dtype=np.int64)[values.offset : values.offset + len(values) + 1]
    return starts, (np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8))


def first_true(mask: pa.Array) -> int:
    """The first row where a boolean array is true (one is)."""
    return int(np.flatnonzero(arrowvalues.numpy(mask))[0])


_KEYS: dict[HashType, ListKeys] = {}


def list_keys(name: str) -> ListKeys:
    """The lists' side of a listable hash type, by name (KeyError for any other name)."""
    hash_type = REGISTRY.get(name)
    if hash_type is None or not hash_type.listable:
        raise KeyError(name)
    if hash_type not in _KEYS:
        kind = SignalKeys if hash_type.signal else TextKeys if hash_type.text else HexKeys
        _KEYS[hash_type] = kind(hash_type)
    return _KEYS[hash_type]


class ListTypeNames(Mapping[str, str]):
    """The names a list may give its hash types, each to itself: the registry's listable types, in order,
    read at each use (a format's type column accepts exactly these)."""

    def __getitem__(self, name: str) -> str:
        hash_type = REGISTRY.get(name)
        if hash_type is None or not hash_type.listable:
            raise KeyError(name)
        return name

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, hash_type in REGISTRY.items() if hash_type.listable])

    def __len__(self) -> int:
        return sum(1 for hash_type in REGISTRY.values() if hash_type.listable)


LIST_TYPE_NAMES = ListTypeNames()
"""Every listable hash type's name. url, url_* and domain values are in normal form (urls/normal.py)."""

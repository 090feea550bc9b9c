"""Contract tests for extension points: a subclass names what to check, the base class says what must hold.

HashTypeContract (like python-threatexchange's SignalTypeHashTest): every hash type in
scanner.hashtypes.REGISTRY, and any a test registers, must pass it. A subclass provides the `hash_type`
fixture; the image used for hashers is generated in memory.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from images import encode, make_image

from scanner.hashing import HASHERS, hash_image
from scanner.hashtypes import IMAGE, REGISTRY, URL, HashType
from scanner.lists.hashtypes import list_keys
from scanner.reports.hashes import hashes_schema, hex_columns

TEXT_SAMPLES = {"url": "http://example.com/a/b.jpg", "host": "images.example.com"}


def sample(hash_type: HashType, seed: int = 0) -> bytes:
    """Random bytes of the type's width, the same for the same seed."""
    return random.Random(f"{hash_type.name}/{seed}").randbytes(hash_type.nbytes)


class HashTypeContract:
    """What every hash type promises: registered under its name, a width, a hex codec that round-trips,
    distances within its bits, a threshold within them, exactly one hasher for image types (whose output
    has the width), a key codec for listable types, a hashes.parquet column for recorded ones."""

    @pytest.fixture
    def hash_type(self) -> HashType:
        raise NotImplementedError("a contract subclass provides the hash type")

    def test_registered_under_its_name(self, hash_type: HashType) -> None:
        assert REGISTRY[hash_type.name] is hash_type
        assert hash_type.name == hash_type.name.lower() and hash_type.name.isidentifier()
        assert hash_type.nbytes > 0 and hash_type.bits == 8 * hash_type.nbytes

    def test_hex_round_trip(self, hash_type: HashType) -> None:
        for seed in range(4):
            value = sample(hash_type, seed)
            text = hash_type.to_hex(value)
            assert text == text.lower() and len(text) == 2 * hash_type.nbytes
            assert hash_type.from_hex(text) == value
            assert hash_type.from_hex(text.upper()) == value

    def test_wrong_width_is_refused(self, hash_type: HashType) -> None:
        value = sample(hash_type)
        with pytest.raises(ValueError):
            hash_type.to_hex(value + b"\0")
        with pytest.raises(ValueError):
            hash_type.from_hex(value.hex()[:-2])

    def test_distance(self, hash_type: HashType) -> None:
        a, b = sample(hash_type, 1), sample(hash_type, 2)
        assert hash_type.distance(a, a) == 0
        assert hash_type.distance(a, b) == hash_type.distance(b, a) <= hash_type.bits
        flipped = bytes([a[0] ^ 0x80]) + a[1:]
        assert hash_type.distance(a, flipped) == 1

    def test_threshold_within_width(self, hash_type: HashType) -> None:
        assert 0 <= hash_type.threshold <= hash_type.bits
        assert (hash_type.threshold > 0) == hash_type.hamming  # exact types match at distance 0 only
        assert hash_type.histogram_bits <= hash_type.bits

    def test_computed_by_exactly_one_hasher_when_from_images(self, hash_type: HashType) -> None:
        assert hash_type.computed_from in (IMAGE, URL)
        if hash_type.computed_from == URL:
            assert hash_type.name not in HASHERS  # the screen computes it from the URL's normal form
            return
        assert [name for name in HASHERS if name == hash_type.name] == [hash_type.name]
        assert HASHERS[hash_type.name].size == hash_type.nbytes
        image = encode(make_image(7, (96, 64)), "PNG")
        value = hash_image(image, frozenset({hash_type.name})).get(hash_type.name)
        values = value if hash_type.variant_of else (value,)
        assert len(values) == max(1, len(hash_type.transforms))
        assert all(isinstance(v, bytes) and len(v) == hash_type.nbytes for v in values)

    def test_listable_types_have_keys(self, hash_type: HashType) -> None:
        if not hash_type.listable:
            with pytest.raises(KeyError):
                list_keys(hash_type.name)
            assert hash_type.variant_of in REGISTRY
            return
        keys = list_keys(hash_type.name)
        assert (keys.name, keys.nbytes, keys.hamming) == (hash_type.name, hash_type.nbytes, hash_type.hamming)
        if hash_type.text:
            parsed = keys.parse(pa.array([TEXT_SAMPLES[hash_type.normal_form]]))
            assert parsed.keys.shape == (1, hash_type.nbytes)
        else:
            value = sample(hash_type)
            parsed = keys.parse(pa.array([hash_type.to_hex(value)]))
            assert parsed.keys.tobytes() == value
            assert keys.query_keys(value) == [value]

    def test_recorded_types_are_hashes_columns(self, hash_type: HashType) -> None:
        schema = hashes_schema()
        if hash_type.computed_from == URL:
            assert hash_type.name not in hex_columns() and "url" in schema.names  # the URL is screened again
        elif hash_type.variant_of:
            assert schema.field(hash_type.name).type == pa.list_(pa.string(), len(hash_type.transforms))
        else:
            assert schema.field(hash_type.name).type == pa.string()
            if hash_type.quality_column:
                assert schema.field(hash_type.quality_column).type == pa.int32()

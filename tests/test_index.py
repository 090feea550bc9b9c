"""Indexes: exact lookup and Hamming search must return exactly what brute force returns."""

from __future__ import annotations

import numpy as np
import pytest

from scanner.lists.index import (
    ChunkLayout,
    ExactIndex,
    HammingIndex,
    SearchCost,
    brute_force,
    brute_force_compiled,
    choose_layout,
    chunk_radii,
    first_occurrences,
)

RNG_SEED = 20240601


def as_set(result: tuple[np.ndarray, np.ndarray, np.ndarray]) -> set[tuple[int, int, int]]:
    return {(int(q), int(e), int(d)) for q, e, d in zip(*result, strict=True)}


def flip_bits(key: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """A copy of key with the given bit positions inverted (bit b is bit b % 64 of uint64 word b // 64)."""
    words = key.copy().view(np.uint64)
    for bit in bits:
        words[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return words.view(np.uint8)


def planted_queries(keys: np.ndarray, threshold: int, rng: np.random.Generator) -> np.ndarray:
    """For each distance 0..threshold + 2, a copy of some key with that many random bits flipped."""
    n_bits = keys.shape[1] * 8
    picks = rng.choice(len(keys), threshold + 3)
    rows = [flip_bits(keys[i], rng.choice(n_bits, d, replace=False)) for d, i in enumerate(picks)]
    return np.vstack([*rows, rng.integers(0, 256, (20, keys.shape[1]), dtype=np.uint8)])


def test_both_brute_force_oracles_agree_with_python_bit_counting():
    rng = np.random.default_rng(RNG_SEED)
    keys = rng.integers(0, 256, (50, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (7, 8), dtype=np.uint8)
    expected = set()
    for q, query in enumerate(queries):
        for e, key in enumerate(keys):
            distance = bin(
                int.from_bytes(query.tobytes(), "big") ^ int.from_bytes(key.tobytes(), "big")
            ).count("1")
            if distance <= 30:
                expected.add((q, e, distance))
    assert expected
    assert as_set(brute_force(keys, queries, 30)) == expected
    assert as_set(brute_force_compiled(keys, queries, 30)) == expected


@pytest.mark.parametrize(
    ("n_bytes", "threshold", "n_keys"),
    [(32, 31, 20_000), (32, 31, 300), (32, 10, 5_000), (8, 10, 20_000), (8, 4, 3_000)],
)
def test_hamming_index_matches_brute_force_on_random_and_planted_queries(n_bytes, threshold, n_keys):
    rng = np.random.default_rng(RNG_SEED + n_keys)
    keys = rng.integers(0, 256, (n_keys, n_bytes), dtype=np.uint8)
    queries = planted_queries(keys, threshold, rng)
    found = as_set(HammingIndex(keys, threshold).search(queries))
    assert found == as_set(brute_force(keys, queries, threshold))
    assert {d for _, _, d in found} >= set(range(threshold + 1))


@pytest.mark.parametrize("layout", [ChunkLayout.even(256, n) for n in (16, 12, 32)])
def test_every_layout_has_exact_recall(layout):
    rng = np.random.default_rng(RNG_SEED)
    keys = rng.integers(0, 256, (4_000, 32), dtype=np.uint8)
    queries = planted_queries(keys, 31, rng)
    index = HammingIndex(keys, 31, layout)
    assert as_set(index.search(queries)) == as_set(brute_force(keys, queries, 31))


@pytest.mark.parametrize(("n_bytes", "threshold"), [(32, 31), (8, 10)])
def test_worst_case_spread_at_exactly_threshold_and_one_past_it(n_bytes, threshold):
    """Flip radius + 1 bits in every chunk (threshold + 1 bits: no chunk within its radius, no match),
    then restore one bit in each chunk in turn (threshold bits: only that chunk can find it)."""
    rng = np.random.default_rng(RNG_SEED)
    keys = rng.integers(0, 256, (2_000, n_bytes), dtype=np.uint8)
    index = HammingIndex(keys, threshold)
    radii = chunk_radii(index.layout.widths, threshold, len(keys), index.cost)
    chunks = zip(index.layout.starts, index.layout.widths, radii, strict=True)
    spread = [rng.choice(np.arange(start, start + width), r + 1, replace=False) for start, width, r in chunks]
    assert sum(len(bits) for bits in spread) == threshold + 1
    too_far = flip_bits(keys[0], np.concatenate(spread))
    just_in = [
        flip_bits(keys[0], np.concatenate([*spread[:c], bits[1:], *spread[c + 1 :]]))
        for c, bits in enumerate(spread)
    ]
    queries = np.vstack([too_far, *just_in])
    found = as_set(index.search(queries))
    assert (0, 0, threshold + 1) not in found
    assert {(q, 0, threshold) for q in range(1, len(queries))} <= found
    assert found == as_set(brute_force(keys, queries, threshold))


def test_matches_at_31_and_32_bits_however_the_bits_fall_across_chunks():
    """The pigeonring filter reads only a probed chunk and the next one: put 31 (match) and 32 (no match)
    flipped bits into the 16 chunks in lopsided random splits, so the chunk that must find each one varies."""
    rng = np.random.default_rng(RNG_SEED)
    keys = rng.integers(0, 256, (3_000, 32), dtype=np.uint8)
    index = HammingIndex(keys, 31, ChunkLayout.even(256, 16))
    queries = []
    for i in range(400):
        total = 31 + i % 2
        split = rng.multinomial(total, rng.dirichlet(np.full(16, 0.3)))
        while split.max() > 16:
            split = rng.multinomial(total, rng.dirichlet(np.full(16, 0.3)))
        bits = np.concatenate([16 * c + rng.choice(16, n, replace=False) for c, n in enumerate(split)])
        queries.append(flip_bits(keys[i], bits))
    found = as_set(index.search(np.vstack(queries)))
    assert found == as_set(brute_force(keys, np.vstack(queries), 31))
    assert {(q, q, 31) for q in range(0, 400, 2)} <= found


def test_all_zero_hashes_and_one_crowded_chunk_value():
    """Many entries share chunk values (a zero prefix, exact repeats of the zero hash): big buckets."""
    rng = np.random.default_rng(RNG_SEED)
    keys = rng.integers(0, 256, (6_000, 32), dtype=np.uint8)
    keys[:3_000, :4] = 0
    keys[:500] = 0
    keys[500:600] = 255
    queries = np.vstack(
        [np.zeros((3, 32), np.uint8), np.full((1, 32), 255, np.uint8), planted_queries(keys, 31, rng)]
    )
    found = as_set(HammingIndex(keys, 31).search(queries))
    assert found == as_set(brute_force(keys, queries, 31))
    assert sum(1 for q, _, d in found if q == 0 and d == 0) == 500


def test_results_larger_than_the_first_output_buffer_are_all_returned():
    keys = np.zeros((3_000, 8), dtype=np.uint8)
    queries = np.zeros((5, 8), dtype=np.uint8)
    query_idx, entry_idx, distance = HammingIndex(keys, 10).search(queries)
    assert len(query_idx) == 15_000
    assert sorted(zip(query_idx.tolist(), entry_idx.tolist(), strict=True)) == [
        (q, e) for q in range(5) for e in range(3_000)
    ]
    assert not distance.any()


def test_a_bucket_too_big_for_16_bit_offsets():
    rng = np.random.default_rng(RNG_SEED)
    keys = rng.integers(0, 256, (80_000, 32), dtype=np.uint8)
    keys[:70_000] = keys[0]
    queries = np.vstack([keys[:1], planted_queries(keys[70_000:], 31, rng)])
    index = HammingIndex(keys, 31)
    assert index._offsets[1].dtype == np.uint32  # deltas
    found = as_set(index.search(queries))
    assert found == as_set(brute_force(keys, queries, 31))
    assert sum(1 for q, _, _ in found if q == 0) == 70_000


@pytest.mark.parametrize("search_threshold", [0, 12, 31, 40])
def test_search_threshold_may_differ_from_the_build_threshold(search_threshold):
    rng = np.random.default_rng(RNG_SEED)
    keys = rng.integers(0, 256, (3_000, 32), dtype=np.uint8)
    queries = planted_queries(keys, 40, rng)
    found = HammingIndex(keys, 31).search(queries, search_threshold)
    assert as_set(found) == as_set(brute_force(keys, queries, search_threshold))


def test_unaligned_keys_are_searched_correctly():
    rng = np.random.default_rng(RNG_SEED)
    backing = rng.integers(0, 256, 32 * 1_000 + 3, dtype=np.uint8)
    keys = backing[3:].reshape(1_000, 32)
    queries = planted_queries(keys, 31, rng)
    assert as_set(HammingIndex(keys, 31).search(queries)) == as_set(brute_force(keys, queries, 31))


def test_layouts_that_do_not_cover_the_hash_or_are_too_wide_are_refused():
    keys = np.zeros((10, 32), dtype=np.uint8)
    for layout in (ChunkLayout.even(256, 7), ChunkLayout.even(128, 8)):
        with pytest.raises(ValueError, match="chunks must cover"):
            HammingIndex(keys, 31, layout)


def test_chunk_radii_satisfy_the_generalised_pigeonhole():
    for widths, threshold in [
        ((16,) * 16, 31),
        ((22,) * 4 + (21,) * 8, 31),
        ((16,) * 16, 5),
        ((21, 21, 22), 10),
    ]:
        radii = chunk_radii(widths, threshold, 1_000_000, SearchCost(0.25, 2.0, 0.03, 1.0, 16))
        assert sum(radii) == threshold - len(widths) + 1
        assert min(radii) >= -1


def test_layout_choice_grows_chunks_with_the_list_and_stays_within_memory():
    small = choose_layout(256, 10_000, 31, embedded=False)
    large = choose_layout(256, 10_000_000, 31, embedded=False)
    assert max(large.widths) > max(small.widths)
    assert sum(small.widths) == sum(large.widths) == 256
    assert sum(choose_layout(64, 10_000_000, 10, embedded=True).widths) == 64
    layout = ChunkLayout.even(64, 4)
    assert (
        SearchCost.of_layout(layout, 10**7, 8, True).candidate
        < SearchCost.of_layout(layout, 10**7, 8, False).candidate
    )


def test_exact_index_finds_equal_rows_only_even_when_prefixes_collide():
    rng = np.random.default_rng(RNG_SEED)
    keys = rng.integers(0, 256, (5_000, 20), dtype=np.uint8)
    keys[:100, :8] = 7  # same first 8 bytes, different tails
    keys[200] = keys[201]  # an exact repeat
    queries = np.vstack([keys[:100], keys[201:202], rng.integers(0, 256, (50, 20), dtype=np.uint8)])
    expected = {(q, e, 0) for q, query in enumerate(queries) for e in np.flatnonzero((keys == query).all(1))}
    assert as_set(ExactIndex(keys).search(queries)) == expected
    assert (100, 200, 0) in expected


def test_first_occurrences_marks_later_repeats_only():
    rng = np.random.default_rng(RNG_SEED)
    keys = rng.integers(0, 4, (2_000, 16), dtype=np.uint8)
    keys[1_000:1_500] = keys[:500]
    _, first = np.unique(keys, axis=0, return_index=True)
    expected = np.zeros(len(keys), bool)
    expected[first] = True
    assert (first_occurrences(keys) == expected).all()

"""The key choosers behave like YCSB's: in range, skewed as specified, reproducible."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bench.generators import ScrambledZipfian, Uniform, Values, Zipfian, fnv1a_64, zeta


def test_zeta_is_the_zipfian_normalising_sum():
    assert zeta(1, 0.99) == 1.0
    assert zeta(3, 0.5) == pytest.approx(1 + 2**-0.5 + 3**-0.5)


def test_zipfian_ranks_stay_in_range():
    z = Zipfian(50, rng=random.Random(1))
    assert {z.next() for _ in range(20_000)} <= set(range(50))


def test_zipfian_rank_zero_gets_its_share_and_popularity_falls_with_rank():
    items, draws = 1000, 200_000
    z = Zipfian(items, rng=random.Random(2))
    counts = Counter(z.next() for _ in range(draws))
    # P(rank 0) = 1 / zeta(n, theta); the sampler hits it exactly (u * zetan < 1).
    assert counts[0] / draws == pytest.approx(1 / z.zetan, rel=0.05)
    assert counts[0] > counts[1] > counts[10] > counts[500]


def test_zipfian_is_reproducible_with_a_seed():
    a = Zipfian(100, rng=random.Random(7))
    b = Zipfian(100, rng=random.Random(7))
    assert [a.next() for _ in range(100)] == [b.next() for _ in range(100)]


def test_zipfian_rejects_an_empty_key_space_and_a_bad_skew():
    with pytest.raises(ValueError):
        Zipfian(0)
    with pytest.raises(ValueError):
        Zipfian(10, theta=1.0)


def test_scrambled_zipfian_spreads_the_hot_keys_but_keeps_the_skew():
    items, draws = 1000, 100_000
    s = ScrambledZipfian(items, rng=random.Random(3))
    counts = Counter(s.next() for _ in range(draws))
    assert set(counts) <= set(range(items))
    hottest = counts.most_common(1)[0][0]
    assert hottest == fnv1a_64(0) % items  # rank 0's key, not key 0
    top_10_share = sum(n for _, n in counts.most_common(10)) / draws
    assert top_10_share > 0.2  # uniform would give 0.01


def test_fnv1a_64_matches_the_reference_value():
    # FNV-1a 64 of eight zero bytes, computed byte by byte from the published constants.
    h = 0xCBF29CE484222325
    for _ in range(8):
        h = (h * 0x100000001B3) % 2**64
    assert fnv1a_64(0) == h


def test_uniform_covers_the_key_space():
    u = Uniform(20, rng=random.Random(4))
    assert {u.next() for _ in range(5_000)} == set(range(20))


def test_values_make_records_of_ten_fields_of_a_hundred_bytes():
    v = Values(rng=random.Random(5))
    row = v.row()
    assert sorted(row) == [f"field{i}" for i in range(10)]
    assert all(len(value) == 100 for value in row.values())
    column, value = v.field()
    assert column in row and len(value) == 100

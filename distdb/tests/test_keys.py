"""Stored keys sort like the keys they encode: numbers numerically, strings by bytes."""

from __future__ import annotations

import random

import pytest

from distdb.errors import InvalidKey
from distdb.keys import bound_display, decode_key, encode_key, parse_key_text, range_cut


def test_integer_keys_sort_numerically_including_negatives():
    keys = [0, 1, 2, 9, 10, 11, 99, 100, -1, -2, -100, 2**63 - 1, -(2**63)]
    random.Random(1).shuffle(keys)
    stored = sorted(encode_key("int", k) for k in keys)
    assert [decode_key("int", s) for s in stored] == sorted(keys)


def test_string_keys_sort_in_utf8_byte_order():
    keys = ["b", "a", "ab", "é", "z", "Z", "😀", "a\u00ff"]
    stored = sorted(encode_key("str", k) for k in keys)
    assert stored == sorted(keys, key=lambda k: k.encode("utf-8"))


@pytest.mark.parametrize(
    ("key_type", "key"),
    [
        ("int", "abc"),
        ("int", 1.5),
        ("int", True),
        ("int", 2**63),
        ("int", None),
        ("str", ""),
        ("str", 5),
        ("str", "x" * 257),
        ("str", "a\x00b"),
        ("str", "\ud800"),
    ],
)
def test_it_rejects_invalid_keys(key_type, key):
    with pytest.raises(InvalidKey):
        encode_key(key_type, key)


def test_key_text_from_a_url_is_parsed_by_the_table_type():
    assert decode_key("int", parse_key_text("int", "42")) == 42
    assert parse_key_text("str", "42") == "42"
    with pytest.raises(InvalidKey):
        parse_key_text("int", "4x2")


# --- ranges -----------------------------------------------------------------------------------


def test_range_cut_splits_a_range_at_the_cuts_inside_it_in_key_order():
    assert range_cut("b", "x", ["m", "d", "m"]) == [("b", "d"), ("d", "m"), ("m", "x")]


def test_range_cut_ignores_cuts_on_or_outside_the_bounds():
    assert range_cut("b", "x", ["a", "b", "x", "z", "", None]) == [("b", "x")]


def test_range_cut_of_the_whole_key_space_ends_at_infinity():
    assert range_cut("", None, ["k", None, "c"]) == [("", "c"), ("c", "k"), ("k", None)]
    assert range_cut("", None, []) == [("", None)]


def test_range_cut_pieces_cover_the_range_exactly():
    rng = random.Random(7)
    for _ in range(200):
        start, end = sorted(rng.sample("abcdefghij", 2))
        cuts = rng.sample("abcdefghijk", rng.randint(0, 6))
        pieces = range_cut(start, end, cuts)
        assert pieces[0][0] == start and pieces[-1][1] == end
        assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))
        assert all(lo < hi for lo, hi in pieces)


@pytest.mark.parametrize(
    ("key_type", "key", "shown"),
    [
        ("int", "", "-inf"),
        ("int", None, "+inf"),
        ("int", encode_key("int", -42), "-42"),
        ("str", "m", "m"),
        (None, encode_key("int", 42), "0000000000000000042"),  # type unknown: as stored
        (None, "", "-inf"),
    ],
)
def test_bound_display_shows_bounds_as_users_write_keys(key_type, key, shown):
    assert bound_display(key_type, key) == shown

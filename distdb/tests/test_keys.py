"""Stored keys sort like the keys they encode: numbers numerically, strings by bytes."""

from __future__ import annotations

import random

import pytest

from distdb.errors import InvalidKey
from distdb.keys import decode_key, encode_key, parse_key_text


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

"""Metadata commits are atomic, versioned and always cover the key space exactly."""

from __future__ import annotations

import pytest

from distdb.keys import encode_key
from master_app.models import MetadataVersion, Table, Tablet
from master_app.services.metadata import RangeAssignment, metadata_commit, metadata_current
from master_app.services.seed import split_balanced
from master_app.services.tables import keys_allocate, table_create


def _k(n: int) -> str:
    return encode_key("int", n)


def test_a_commit_bumps_the_version_and_replaces_the_tablets(servers):
    table = Table.objects.create(name="t", key_type="int")
    v1 = metadata_commit(table, [RangeAssignment("t", "", None, "tablet-1")], "one")
    v2 = metadata_commit(
        table,
        [
            RangeAssignment("t", "", _k(50), "tablet-1"),
            RangeAssignment("t", _k(50), None, "tablet-2"),
        ],
        "split",
    )
    assert v2 == v1 + 1
    meta = metadata_current()
    assert meta.version == v2
    assert [(t.start, t.end, t.server) for t in meta.tablets] == [
        ("", _k(50), "tablet-1"),
        (_k(50), None, "tablet-2"),
    ]
    assert meta.tables["t"].key_type == "int"


@pytest.mark.parametrize(
    "ranges",
    [
        [],
        [("", _k(5), "tablet-1")],  # does not reach +inf
        [(_k(1), None, "tablet-1")],  # does not start at -inf
        [("", _k(5), "tablet-1"), (_k(6), None, "tablet-2")],  # gap
        [("", _k(5), "tablet-1"), ("", None, "tablet-2")],  # overlap
        [("", None, "tablet-9")],  # unknown server
    ],
)
def test_a_commit_that_does_not_cover_the_key_space_exactly_is_refused(servers, ranges):
    table = Table.objects.create(name="t", key_type="int")
    with pytest.raises(ValueError):
        metadata_commit(table, [RangeAssignment("t", *r) for r in ranges], "bad")
    assert not Tablet.objects.exists()
    assert not MetadataVersion.objects.exists()


def test_a_new_table_gets_one_tablet_on_the_least_loaded_live_server(servers):
    table_create("a", "int")
    table_create("b", "str", ["x", "y"])
    owners = {
        t.table.name: t.server.node_id for t in Tablet.objects.select_related("table", "server")
    }
    assert owners == {"a": "tablet-1", "b": "tablet-2"}
    assert metadata_current().tables["b"].columns == ["x", "y"]


def test_key_blocks_never_overlap(servers):
    table_create("t", "int")
    blocks = [keys_allocate("t", 10) for _ in range(5)]
    ranges = [set(range(b.first, b.first + b.count)) for b in blocks]
    assert sum(len(r) for r in ranges) == len(set().union(*ranges)) == 50


@pytest.mark.django_db(transaction=True)
def test_concurrent_key_blocks_from_many_threads_never_overlap(servers):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    table_create("t", "int")

    def take(_):
        try:
            return keys_allocate("t", 7)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(4) as pool:
        blocks = list(pool.map(take, range(40)))
    firsts = sorted(b.first for b in blocks)
    assert all(b - a >= 7 for a, b in zip(firsts, firsts[1:], strict=False))


def test_split_balanced_gives_contiguous_ranges_with_equal_counts():
    keys = [_k(i) for i in range(1, 1001)]
    ranges = split_balanced(keys, ["tablet-1", "tablet-2", "tablet-3"], "t")
    counts = [sum(1 for k in keys if k >= r.start and (r.end is None or k < r.end)) for r in ranges]
    assert ranges[0].start == "" and ranges[-1].end is None
    assert max(counts) - min(counts) <= 1 and sum(counts) == 1000

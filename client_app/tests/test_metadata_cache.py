"""The routing table and the metadata cache."""

from __future__ import annotations

import asyncio

from distdb.keys import encode_key
from distdb.protocol import Metadata, TableInfo, TabletAssignment

from ..metadata_cache import MetadataCache, RoutingTable, metadata_cache


def metadata(version: int, splits: list[tuple[str, str | None, str]]) -> Metadata:
    return Metadata(
        version=version,
        tables={"t": TableInfo(key_type="str")},
        tablets=[
            TabletAssignment(table="t", start=s, end=e, server=server, url=f"http://{server}")
            for s, e, server in splits
        ],
    )


def test_a_key_is_located_in_its_half_open_range():
    routing = RoutingTable.build(metadata(1, [("m", None, "b"), ("", "m", "a")]))
    assert routing.locate("t", "a").server == "a"
    assert routing.locate("t", "l~").server == "a"
    assert routing.locate("t", "m").server == "b"
    assert routing.locate("t", "zzz").server == "b"
    assert routing.locate("other", "a") is None


def test_a_gap_in_the_ranges_routes_nowhere():
    routing = RoutingTable.build(metadata(1, [("", "f", "a"), ("m", None, "b")]))
    groups, unrouted = routing.group("t", enumerate(["a", "g", "z", "f", "b"]))
    assert {t.server: idx for t, idx in groups.values()} == {"a": [0, 4], "b": [2]}
    assert unrouted == [1, 3]


def test_integer_keys_route_numerically():
    start = encode_key("int", 100)
    routing = RoutingTable.build(metadata(1, [("", start, "low"), (start, None, "high")]))
    assert routing.locate("t", encode_key("int", -5)).server == "low"
    assert routing.locate("t", encode_key("int", 99)).server == "low"
    assert routing.locate("t", encode_key("int", 100)).server == "high"
    assert routing.locate("t", encode_key("int", 10**15)).server == "high"


def test_the_cache_adopts_only_newer_metadata():
    cache = MetadataCache()
    cache.adopt(metadata(5, [("", None, "a")]))
    cache.adopt(metadata(4, [("", None, "old")]))
    cache.adopt(metadata(5, [("", None, "same")]))
    assert cache.current.locate("t", "x").server == "a"
    cache.adopt(metadata(6, [("", None, "new")]))
    assert cache.current.locate("t", "x").server == "new"


async def test_concurrent_refreshes_share_one_fetch_from_the_master(cluster):
    cache = metadata_cache.get()
    await asyncio.gather(*(cache.refresh() for _ in range(20)))
    assert cluster.master_calls["metadata"] == 1
    await cache.refresh()
    assert cluster.master_calls["metadata"] == 2

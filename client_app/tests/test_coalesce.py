"""Concurrent reads of one tablet server go out merged while a call is in flight, and each
caller still gets exactly its own rows, its own ``outdated`` keys and its own errors."""

from __future__ import annotations

import asyncio

import pytest

from client_app.coalesce import MAX_KEYS, MERGE_UP_TO_KEYS, ReadCoalescer, coalescer
from client_app.internal_client import read_text_response
from client_app.metadata_cache import metadata_cache
from distdb.errors import RangeFrozen, TabletUnavailable
from distdb.keys import encode_key
from distdb.protocol import Metadata, ReadRequest, ReadTextResponse, TabletAssignment

TABLET = TabletAssignment(table="t", server="tablet-1", url="http://tablet-1")


class Tablet:
    """An injected ``call``: every key has a row, each call waits until released."""

    def __init__(self) -> None:
        self.requests: list[ReadRequest] = []
        self.release = asyncio.Event()
        self.release.set()
        self.outdated: set[str] = set()
        self.error: Exception | None = None
        self.arrived = asyncio.Event()

    async def __call__(
        self, url: str, server: str, request: ReadRequest, timeout_s: float
    ) -> ReadTextResponse:
        self.requests.append(request)
        self.arrived.set()
        await self.release.wait()
        if self.error is not None and (
            not isinstance(self.error, RangeFrozen) or "frozen" in request.keys
        ):
            raise self.error
        rows = [(k, f'{{"of":"{k}"}}') for k in request.keys if k not in self.outdated]
        outdated = [k for k in request.keys if k in self.outdated]
        meta = Metadata(version=9) if outdated else None
        return ReadTextResponse(rows=rows, outdated=outdated, metadata=meta)


def read(merger: ReadCoalescer, *keys: str, table: str = "t", version: int = 1):
    request = ReadRequest(table=table, meta_version=version, keys=list(keys))
    return asyncio.create_task(merger.read(TABLET, request, 5.0))


async def queued(merger: ReadCoalescer, n: int) -> None:
    """Until ``n`` reads wait behind the call in flight (no timing: the loop runs them)."""
    while len(merger.lanes[TABLET.url].queue) < n:
        await asyncio.sleep(0)


async def test_a_lone_read_is_sent_at_once_and_alone():
    tablet = Tablet()
    merger = ReadCoalescer(tablet)
    answer = await merger.read(TABLET, ReadRequest(table="t", meta_version=1, keys=["a"]), 5.0)
    assert [r[0] for r in answer.rows] == ["a"]
    assert [r.keys for r in tablet.requests] == [["a"]]


async def test_reads_that_arrive_during_a_call_go_out_as_one_and_each_gets_its_rows():
    tablet = Tablet()
    tablet.release.clear()
    merger = ReadCoalescer(tablet)
    first = read(merger, "a")
    await tablet.arrived.wait()
    others = [read(merger, k) for k in ("b", "c", "b")] + [read(merger, "d", "e")]
    await queued(merger, 4)
    tablet.release.set()
    answers = await asyncio.gather(first, *others)
    assert [[r[0] for r in a.rows] for a in answers] == [["a"], ["b"], ["c"], ["b"], ["d", "e"]]
    assert [a.rows[0][1] for a in answers] == [f'{{"of":"{k}"}}' for k in "abcbd"]
    # one call for "a", then one for everything that waited, each key once
    assert [r.keys for r in tablet.requests] == [["a"], ["b", "c", "d", "e"]]


async def test_outdated_keys_and_their_metadata_reach_only_their_caller():
    tablet = Tablet()
    tablet.release.clear()
    tablet.outdated = {"moved"}
    merger = ReadCoalescer(tablet)
    first = read(merger, "a")
    await tablet.arrived.wait()
    mine, moved = read(merger, "b"), read(merger, "moved")
    await queued(merger, 2)
    tablet.release.set()
    await first
    mine_answer, moved_answer = await mine, await moved
    assert [r[0] for r in mine_answer.rows] == ["b"]
    assert mine_answer.outdated == [] and mine_answer.metadata is None
    assert moved_answer.rows == [] and moved_answer.outdated == ["moved"]
    assert moved_answer.metadata is not None and moved_answer.metadata.version == 9


async def test_an_unreachable_server_fails_every_waiting_caller_with_its_own_error():
    tablet = Tablet()
    tablet.release.clear()
    merger = ReadCoalescer(tablet)
    first = read(merger, "a")
    await tablet.arrived.wait()
    waiting = [read(merger, "b"), read(merger, "c")]
    await queued(merger, 2)
    tablet.error = TabletUnavailable("tablet-1 is unreachable", server="tablet-1")
    tablet.release.set()
    results = await asyncio.gather(first, *waiting, return_exceptions=True)
    errors = results[1:]
    assert all(isinstance(e, TabletUnavailable) for e in errors)
    assert errors[0] is not errors[1]  # callers annotate their errors: one each
    assert len(tablet.requests) == 2  # not re-sent one by one: the server is down


async def test_a_range_frozen_answer_to_a_merged_read_is_sorted_out_per_caller():
    tablet = Tablet()
    tablet.release.clear()
    merger = ReadCoalescer(tablet)
    first = read(merger, "a")
    await tablet.arrived.wait()
    fine, frozen = read(merger, "b"), read(merger, "frozen")
    await queued(merger, 2)
    tablet.error = RangeFrozen("the key range is being moved; retry shortly")
    tablet.release.set()
    await first
    assert [r[0] for r in (await fine).rows] == ["b"]
    with pytest.raises(RangeFrozen):
        await frozen
    assert [r.keys for r in tablet.requests][1:] == [["b", "frozen"], ["b"], ["frozen"]]


async def test_reads_of_other_tables_or_versions_are_not_merged():
    tablet = Tablet()
    tablet.release.clear()
    merger = ReadCoalescer(tablet)
    first = read(merger, "a")
    await tablet.arrived.wait()
    waiting = [read(merger, "b"), read(merger, "c", table="u"), read(merger, "d", version=2)]
    waiting.append(read(merger, "e"))
    await queued(merger, 4)
    tablet.release.set()
    await asyncio.gather(first, *waiting)
    sent = sorted((r.table, r.meta_version, r.keys) for r in tablet.requests[1:])
    assert sent == [("t", 1, ["b", "e"]), ("t", 2, ["d"]), ("u", 1, ["c"])]


async def test_a_merged_read_holds_at_most_max_keys():
    tablet = Tablet()
    tablet.release.clear()
    merger = ReadCoalescer(tablet)
    first = read(merger, "a")
    await tablet.arrived.wait()
    per_read = MERGE_UP_TO_KEYS
    n = MAX_KEYS // per_read + 1  # one read more than fits in one merged call
    waiting = [read(merger, *(f"{r}-{i}" for i in range(per_read))) for r in range(n)]
    await queued(merger, n)
    tablet.release.set()
    answers = await asyncio.gather(first, *waiting)
    assert [len(a.rows) for a in answers[1:]] == [per_read] * n
    assert all(len(r.keys) <= MAX_KEYS for r in tablet.requests)
    assert len(tablet.requests) == 3


async def test_a_big_read_goes_straight_to_the_server_without_waiting():
    tablet = Tablet()
    tablet.release.clear()
    merger = ReadCoalescer(tablet)
    first = read(merger, "a")
    await tablet.arrived.wait()
    big = read(merger, *(f"k{i}" for i in range(MERGE_UP_TO_KEYS + 1)))
    while len(tablet.requests) < 2:
        await asyncio.sleep(0)
    assert merger.lanes[TABLET.url].queue == []
    tablet.release.set()
    assert len((await big).rows) == MERGE_UP_TO_KEYS + 1
    await first


async def test_a_caller_that_gives_up_does_not_hold_up_the_others():
    tablet = Tablet()
    tablet.release.clear()
    merger = ReadCoalescer(tablet)
    first = read(merger, "a")
    await tablet.arrived.wait()
    gone, kept = read(merger, "gone"), read(merger, "kept")
    await queued(merger, 2)
    gone.cancel()
    tablet.release.set()
    await first
    assert [r[0] for r in (await kept).rows] == ["kept"]
    assert tablet.requests[1].keys == ["kept"]


# --- through the public API, against fake tablet servers --------------------------------------


async def test_concurrent_point_reads_through_the_api_share_tablet_calls(api, cluster):
    for key in range(1, 12):
        cluster.put("products", "int", key, {"n": key})
    await api("GET", "/api/v1/tables/products/rows/1")  # caches the metadata
    tablet = cluster.tablets["tablet-1"]
    tablet.calls.clear()
    tablet.gate = asyncio.Event()
    first = asyncio.create_task(api("GET", "/api/v1/tables/products/rows/1"))
    while not tablet.calls:
        await asyncio.sleep(0.001)
    rest = [
        asyncio.create_task(api("GET", f"/api/v1/tables/products/rows/{k}")) for k in range(2, 12)
    ]
    lane = coalescer().lanes[tablet.url]
    while len(lane.queue) < 10:
        await asyncio.sleep(0.001)
    tablet.gate.set()
    answers = await asyncio.gather(first, *rest)
    assert [a.json for a in answers] == [{"key": k, "cells": {"n": k}} for k in range(1, 12)]
    assert [sorted(int(k) for k in m.keys) for _, m in tablet.calls] == [[1], list(range(2, 12))]


async def test_a_moved_key_in_a_merged_read_is_rerouted_alone(api, cluster):
    for key in (1, 5, 50):
        cluster.put("products", "int", key, {"n": key})
    await api("GET", "/api/v1/tables/products/rows/1")
    t1, t2 = cluster.tablets["tablet-1"], cluster.tablets["tablet-2"]
    t1.calls.clear()
    t1.gate = asyncio.Event()
    first = asyncio.create_task(api("GET", "/api/v1/tables/products/rows/1"))
    while not t1.calls:
        await asyncio.sleep(0.001)
    stays = asyncio.create_task(api("GET", "/api/v1/tables/products/rows/5"))
    moves = asyncio.create_task(api("GET", "/api/v1/tables/products/rows/50"))
    lane = coalescer().lanes[t1.url]
    while len(lane.queue) < 2:
        await asyncio.sleep(0.001)
    cluster.layout("products", "int", [(None, "tablet-1"), (40, "tablet-2")])  # 50 moved
    t1.gate.set()
    assert (await first).json["key"] == 1
    assert (await stays).json == {"key": 5, "cells": {"n": 5}}
    assert (await moves).json == {"key": 50, "cells": {"n": 50}}
    assert [sorted(int(k) for k in m.keys) for _, m in t1.calls] == [[1], [5, 50]]
    assert [[int(k) for k in m.keys] for _, m in t2.calls] == [[50]]
    assert metadata_cache.get().current is not None


async def test_a_frozen_key_costs_only_its_own_caller_in_a_merged_read(api, cluster, settings):
    settings.DISTDB_ROUTING_MAX_TRIES = 2
    for key in (1, 5, 7):
        cluster.put("products", "int", key, {"n": key})
    await api("GET", "/api/v1/tables/products/rows/1")
    tablet = cluster.tablets["tablet-1"]
    tablet.calls.clear()
    tablet.gate = asyncio.Event()
    first = asyncio.create_task(api("GET", "/api/v1/tables/products/rows/1"))
    while not tablet.calls:
        await asyncio.sleep(0.001)
    fine = asyncio.create_task(api("GET", "/api/v1/tables/products/rows/5"))
    frozen = asyncio.create_task(api("GET", "/api/v1/tables/products/rows/7"))
    lane = coalescer().lanes[tablet.url]
    while len(lane.queue) < 2:
        await asyncio.sleep(0.001)
    tablet.frozen_keys = {encode_key("int", 7)}
    tablet.gate.set()
    assert (await first).status == 200
    assert (await fine).json == {"key": 5, "cells": {"n": 5}}
    answer = await frozen
    assert answer.status == 503 and answer.error_code == "range_frozen"


# --- decoding a tablet's text read answer ------------------------------------------------------


def test_a_text_read_answer_keeps_the_cells_as_the_tablets_json_text():
    raw = (
        b'{"v":1,"type":"read_text_result","rows":[["k1","{\\"a\\":1}"]],'
        b'"outdated":[],"metadata":null}'
    )
    answer = read_text_response(raw)
    assert answer.rows == [("k1", '{"a":1}')] and answer.metadata is None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v":1,"type":"read_result","rows":[],"outdated":[]}',
        b'{"v":2,"type":"read_text_result","rows":[],"outdated":[]}',
        b'{"v":1,"type":"read_text_result","rows":[["k1",{"a":1}]],"outdated":[]}',
        b'{"v":1,"type":"read_text_result","rows":[["k1"]],"outdated":[]}',
        b"not json",
    ],
)
def test_a_malformed_read_answer_is_refused(raw):
    with pytest.raises((ValueError, TypeError, KeyError)):
        read_text_response(raw)

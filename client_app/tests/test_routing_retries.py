"""Stale metadata, moving ranges and dead tablets: re-route only what must be, never forever."""

from __future__ import annotations

import pytest

from client_app.metadata_cache import metadata_cache
from client_app.services import engine


def keys_sent(tablet, endpoint="read"):
    """The user keys (ints) of each call of that kind a fake tablet received."""
    out = []
    for kind, message in tablet.calls:
        if kind == endpoint:
            keys = message.keys if endpoint == "read" else [m.key for m in message.mutations]
            out.append([int(k) for k in keys])
    return out


async def warm(api, cluster):
    """Make the client cache the current metadata, then forget the calls it took."""
    await api("GET", "/api/v1/tables/products/rows/1")
    for tablet in cluster.tablets.values():
        tablet.calls.clear()
    cluster.master_calls.clear()


async def test_a_stale_client_reroutes_only_the_keys_that_moved(api, cluster):
    for key in (10, 60, 150):
        cluster.put("products", "int", key, {"k": key})
    await warm(api, cluster)
    cluster.layout("products", "int", [(None, "tablet-1"), (50, "tablet-2")])  # 50..99 moved

    answer = await api("GET", "/api/v1/tables/products/rows?keys=10,60,150")

    assert [row["key"] for row in answer.json["rows"]] == [10, 60, 150]
    assert keys_sent(cluster.tablets["tablet-1"]) == [[10, 60]]
    assert sorted(keys_sent(cluster.tablets["tablet-2"])) == [[60], [150]]
    assert cluster.master_calls["metadata"] == 0  # adopted from the tablet's answer


async def test_a_stale_client_reroutes_writes_and_applies_each_once(api, cluster):
    await warm(api, cluster)
    cluster.layout("products", "int", [(None, "tablet-1"), (50, "tablet-2")])
    rows = [{"key": 10, "cells": {}}, {"key": 60, "cells": {}}, {"key": 150, "cells": {}}]
    answer = await api("POST", "/api/v1/tables/products/rows", rows)
    assert answer.status == 201
    assert [r["status"] for r in answer.json["results"]] == ["created"] * 3
    assert keys_sent(cluster.tablets["tablet-1"], "mutate") == [[10, 60]]
    assert sorted(keys_sent(cluster.tablets["tablet-2"], "mutate")) == [[60], [150]]


async def test_a_stale_scan_follows_the_new_layout(api, cluster):
    for key in (10, 60, 150):
        cluster.put("products", "int", key, {})
    await warm(api, cluster)
    cluster.layout("products", "int", [(None, "tablet-2"), (50, "tablet-1")])
    answer = await api("GET", "/api/v1/tables/products/rows")
    assert [row["key"] for row in answer.json["rows"]] == [10, 60, 150]


async def test_a_client_asks_the_master_when_the_tablet_sends_no_metadata(api, cluster):
    cluster.put("products", "int", 60, {"k": 60})
    await warm(api, cluster)
    cluster.layout("products", "int", [(None, "tablet-1"), (50, "tablet-2")])
    cluster.tablets["tablet-1"].send_metadata = False
    answer = await api("GET", "/api/v1/tables/products/rows/60")
    assert answer.status == 200
    assert answer.json == {"key": 60, "cells": {"k": 60}}
    assert cluster.master_calls["metadata"] == 1


async def test_range_frozen_writes_are_retried_transparently(api, cluster):
    cluster.put("products", "int", 5, {"a": 1})
    cluster.tablets["tablet-1"].frozen_times = 2
    answer = await api("PATCH", "/api/v1/tables/products/rows/5", {"cells": {"a": 2}})
    assert answer.status == 200
    assert answer.json == {"key": 5, "status": "updated"}
    assert len(keys_sent(cluster.tablets["tablet-1"], "mutate")) == 3
    assert cluster.get("products", "int", 5) == {"a": 2}


async def test_a_range_that_stays_frozen_ends_in_a_retryable_503(api, cluster, settings):
    settings.DISTDB_ROUTING_MAX_TRIES = 3
    cluster.put("products", "int", 5, {"a": 1})
    cluster.tablets["tablet-1"].frozen_times = 100
    answer = await api("PATCH", "/api/v1/tables/products/rows/5", {"cells": {"a": 2}})
    assert (answer.status, answer.error_code) == (503, "range_frozen")
    assert answer.headers["retry-after"] == "1"
    assert answer.json["error"]["retryable"] is True
    assert len(keys_sent(cluster.tablets["tablet-1"], "mutate")) == 3


async def test_a_range_still_frozen_after_a_retry_asks_the_master_where_it_is(
    api, cluster, settings
):
    """The move may have committed while its source could not hear of it: a range that
    stays frozen sends the client server to the master (at most once a second)."""
    settings.DISTDB_ROUTING_MAX_TRIES = 4
    cluster.put("products", "int", 5, {"a": 1})
    await warm(api, cluster)
    metadata_cache.get().fetched_at -= 60  # the last fetch was a while ago
    before = cluster.master_calls["metadata"]
    cluster.tablets["tablet-1"].frozen_times = 100
    await api("PATCH", "/api/v1/tables/products/rows/5", {"cells": {"a": 2}})
    assert cluster.master_calls["metadata"] == before + 1  # asked, and not on every try


async def test_a_tablet_that_always_answers_outdated_ends_in_an_error_after_max_tries(
    api, cluster, settings
):
    settings.DISTDB_ROUTING_MAX_TRIES = 4
    cluster.put("products", "int", 150, {"k": 150})
    await warm(api, cluster)
    cluster.tablets["tablet-1"].always_outdated = True

    answer = await api("GET", "/api/v1/tables/products/rows?keys=1,150")

    assert answer.status == 200  # the other tablet's key still succeeds
    assert answer.json["rows"] == [{"key": 150, "cells": {"k": 150}}]
    assert answer.json["failed"][0]["key"] == 1
    assert answer.json["failed"][0]["error"]["code"] == "tablet_unavailable"
    assert len(keys_sent(cluster.tablets["tablet-1"])) == 4
    assert len(keys_sent(cluster.tablets["tablet-2"])) == 1


async def test_retries_stop_at_the_routing_deadline(api, cluster, settings):
    settings.DISTDB_ROUTING_MAX_TRIES = 100
    settings.DISTDB_ROUTING_DEADLINE_S = 0.3
    cluster.tablets["tablet-1"].always_outdated = True
    answer = await api("DELETE", "/api/v1/tables/products/rows/1")
    assert (answer.status, answer.error_code) == (503, "tablet_unavailable")
    assert len(keys_sent(cluster.tablets["tablet-1"], "mutate")) < 100


async def test_a_down_tablet_fails_only_its_keys_with_503_and_retry_after(api, cluster):
    cluster.put("products", "int", 1, {"k": 1})
    cluster.put("products", "int", 150, {"k": 150})
    await warm(api, cluster)
    await cluster.tablets["tablet-2"].stop()

    many = await api("GET", "/api/v1/tables/products/rows?keys=1,150")
    assert many.status == 200
    assert many.json["rows"] == [{"key": 1, "cells": {"k": 1}}]
    assert many.json["failed"][0]["key"] == 150
    assert many.json["failed"][0]["error"]["code"] == "tablet_unavailable"

    one = await api("GET", "/api/v1/tables/products/rows/150")
    assert (one.status, one.error_code) == (503, "tablet_unavailable")
    assert one.headers["retry-after"] == "1"

    rows = [{"key": 2, "cells": {}}, {"key": 151, "cells": {}}]
    added = await api("POST", "/api/v1/tables/products/rows", rows)
    assert added.status == 200
    assert [r["status"] for r in added.json["results"]] == ["created", "error"]
    assert added.json["results"][1]["error"] == {
        "code": "tablet_unavailable",
        "message": added.json["results"][1]["error"]["message"],
        "retryable": True,
    }

    only_down = await api("POST", "/api/v1/tables/products/rows", [{"key": 152, "cells": {}}])
    assert (only_down.status, only_down.error_code) == (503, "tablet_unavailable")
    assert only_down.headers["retry-after"] == "1"

    scan = await api("GET", "/api/v1/tables/products/rows?start=120")
    assert (scan.status, scan.error_code) == (503, "tablet_unavailable")


async def test_keys_of_a_down_tablet_are_resent_once_the_master_moved_them(
    api, cluster, monkeypatch
):
    monkeypatch.setattr(engine, "UNREACHABLE_REFRESH_S", 0.0)  # warm() fetched just now
    cluster.put("products", "int", 150, {"k": 150})
    await warm(api, cluster)
    await cluster.tablets["tablet-2"].stop()
    cluster.layout("products", "int", [(None, "tablet-1")])  # the master reassigned the range
    answer = await api("GET", "/api/v1/tables/products/rows/150")
    assert answer.status == 200
    assert cluster.master_calls["metadata"] == 1


async def test_a_tablet_that_times_out_fails_only_its_keys(api, cluster, settings):
    settings.DISTDB_TABLET_TIMEOUT_S = 0.5
    cluster.put("products", "int", 1, {"k": 1})
    await warm(api, cluster)
    cluster.tablets["tablet-2"].hang_s = 1.5
    answer = await api("GET", "/api/v1/tables/products/rows?keys=1,150")
    assert answer.json["rows"] == [{"key": 1, "cells": {"k": 1}}]
    assert answer.json["failed"][0]["error"]["code"] == "tablet_unavailable"
    assert len(keys_sent(cluster.tablets["tablet-2"])) == 1  # a timeout is never re-sent


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_server_token_is_a_503_with_retry_after_not_a_500(status):
    """Our own credentials refused (revoked, or being rotated): the peer is unavailable to
    this client server for now; the user is told to retry, not shown an internal error."""
    from distdb.errors import TabletUnavailable
    from distdb.protocol import ReadResponse

    from ..internal_client import _decode

    refusal = b'{"error": {"code": "token_revoked", "message": "revoked"}}'
    with pytest.raises(TabletUnavailable) as raised:
        _decode(status, refusal, ReadResponse, unavailable=TabletUnavailable, peer="tablet-1")
    assert raised.value.status == 503 and raised.value.retryable

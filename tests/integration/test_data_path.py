"""The data path against real processes: client servers -> tablet servers, routed by version."""

from __future__ import annotations

import threading
import time

import pytest

from tests.integration.api import call

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cluster):
    base = [f"{cluster.url(p)}/api/v1" for p in cluster.client_ports]

    def request(method, path, body=None, client=0, token=cluster.api_token):
        return call(method, base[client] + path, token, body)

    return request


def test_it_reads_rows_from_both_tablets_in_request_order(api):
    status, body, _ = api("GET", "/tables/products/rows?keys=900,1,999999,500,501")
    assert status == 200, body
    assert [r["key"] for r in body["rows"]] == [900, 1, 500, 501]
    assert body["missing"] == [999999]
    assert body["rows"][1]["cells"]["product_name"]


def test_it_scans_in_numeric_order_across_tablets_with_a_cursor(api):
    keys, path = [], "/tables/products/rows?start=490&end=515&limit=10"
    while path:
        status, body, _ = api("GET", path)
        assert status == 200, body
        keys += [r["key"] for r in body["rows"]]
        path = f"/tables/products/rows?cursor={body['cursor']}&limit=10" if body["cursor"] else None
    assert keys == list(range(490, 515))


def test_every_write_operation_works_on_keys_of_both_tablets(api):
    status, body, _ = api(
        "POST",
        "/tables/products/rows",
        [
            {"key": 100001, "cells": {"product_name": "a"}},
            {"key": -5, "cells": {"product_name": "b"}},
        ],
    )
    assert status == 201, body
    assert api("PATCH", "/tables/products/rows/-5", {"cells": {"price": "£1"}})[0] == 200
    assert api("GET", "/tables/products/rows/-5")[1]["cells"] == {
        "product_name": "b",
        "price": "£1",
    }
    assert api("DELETE", "/tables/products/rows/-5/cells?columns=price")[0] == 200
    assert api("GET", "/tables/products/rows/-5")[1]["cells"] == {"product_name": "b"}
    status, body, _ = api(
        "POST",
        "/tables/products/rows:batch",
        {
            "mutations": [
                {"op": "set", "key": 2, "cells": {"price": "£2"}},
                {"op": "set", "key": 999, "cells": {"price": "£999"}},
                {"op": "delete_row", "key": 100001},
            ]
        },
    )
    assert status == 200 and [r["status"] for r in body["results"]] == ["updated"] * 2 + ["deleted"]
    assert api("DELETE", "/tables/products/rows/-5")[0] == 200
    assert api("GET", "/tables/products/rows/-5")[0] == 404
    assert api("GET", "/tables/products/rows/100001")[0] == 404
    assert api("GET", "/tables/products/rows/999")[1]["cells"]["price"] == "£999"


def test_concurrent_adds_through_both_client_servers_never_collide(api):
    results: list[list] = [[], []]

    def add(client):
        for _ in range(5):
            status, body, _ = api(
                "POST",
                "/tables/products/rows",
                [{"cells": {"product_name": f"c{client}"}} for _ in range(20)],
                client=client,
            )
            assert status == 201, body
            results[client] += [r["key"] for r in body["results"]]

    threads = [threading.Thread(target=add, args=(c,)) for c in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = results[0] + results[1]
    assert len(keys) == 200 and len(set(keys)) == 200
    assert not set(keys) & set(range(1, 1001))  # never reuses the fixture's keys


def test_the_compatibility_endpoint_handles_all_ids(api):
    q = "/client/send-db-query"
    status, body, _ = api(
        "POST",
        q,
        {
            "queryTitle": "add-rows",
            "queryBody": {
                "data": [{"id": 200001, "product_name": "x"}, {"id": 200002, "product_name": "y"}]
            },
        },
    )
    assert (status, body["status"], body["count"]) == (200, "success", 2)
    status, body, _ = api(
        "POST",
        q,
        {"queryTitle": "set", "queryBody": {"ids": [200001, 200002, 3], "data": {"price": "£7"}}},
    )
    assert body["count"] == 3
    status, body, _ = api(
        "POST", q, {"queryTitle": "read-rows", "queryBody": {"ids": [200002, 3, 200001]}}
    )
    assert [r["id"] for r in body["data"]] == [200002, 3, 200001]
    assert all(r["price"] == "£7" for r in body["data"])
    status, body, _ = api(
        "POST",
        q,
        {"queryTitle": "delete-cells", "queryBody": {"ids": [200001, 200002], "data": ["price"]}},
    )
    assert body["count"] == 2
    status, body, _ = api(
        "POST", q, {"queryTitle": "delete-rows", "queryBody": {"ids": [200001, 200002, 424242]}}
    )
    assert body["status"] == "partial" and body["count"] == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/tables/nope/rows/1", None, 404, "table_not_found"),
        ("GET", "/tables/products/rows/abc", None, 400, "invalid_key"),
        ("POST", "/tables/products/rows", {"not": "a list"}, 400, "validation_failed"),
        (
            "POST",
            "/tables/products/rows",
            [{"key": 5, "cells": {}, "extra": 1}],
            400,
            "validation_failed",
        ),
        ("POST", "/tables/products/rows", [{"key": "x" * 300, "cells": {}}], 400, "invalid_key"),
        ("PATCH", "/tables/products/rows/424242", {"cells": {"a": 1}}, 404, "row_not_found"),
    ],
)
def test_bad_requests_get_their_4xx_and_store_nothing(api, method, path, body, status, code):
    got, payload, _ = api(method, path, body)
    assert (got, payload["error"]["code"]) == (status, code)
    assert api("GET", "/tables/products/rows/424242")[0] == 404


def test_a_missing_token_is_refused(api):
    status, body, _ = api("GET", "/tables/", token=None)
    assert (status, body["error"]["code"]) == (401, "unauthenticated")


def test_a_client_with_stale_metadata_follows_outdated_to_the_right_answer(cluster, api):
    assert api("POST", "/tables/", {"name": "moving", "key_type": "int"})[0] == 201
    # Both client servers learn the table's current owner.
    for client in (0, 1):
        assert api("GET", "/tables/moving/rows/1", client=client)[0] == 404
    owner = _owner(cluster, "moving")
    other = "tablet-2" if owner == "tablet-1" else "tablet-1"
    # Reassign the (empty) table underneath the client servers: their caches are stale now.
    cluster.shell(
        "master",
        "from master_app.models import Table;"
        "from master_app.services.metadata import RangeAssignment, metadata_commit;"
        f"metadata_commit(Table.objects.get(name='moving'), "
        f"[RangeAssignment('moving', '', None, '{other}')], 'test: move')",
    )
    _wait_until(lambda: _tablet_owns(cluster, other, "moving"))
    status, body, _ = api("POST", "/tables/moving/rows", [{"key": 7, "cells": {"v": 1}}], client=0)
    assert status == 201, body
    status, body, _ = api("GET", "/tables/moving/rows/7", client=1)
    assert (status, body["cells"]) == (200, {"v": 1})
    assert _tablet_rows(cluster, other, "moving") == 1


def test_a_stopped_tablet_server_fails_only_its_keys_with_503(cluster, api):
    cluster.pause("tablet-2")  # SIGSTOP: it holds its port and connections, answers nothing
    try:
        status, body, headers = api("GET", "/tables/products/rows?keys=1,1000")
        assert status == 200, body
        assert [r["key"] for r in body["rows"]] == [1]
        assert [f["error"]["code"] for f in body["failed"]] == ["tablet_unavailable"]
        status, body, headers = api("GET", "/tables/products/rows/1000")
        assert status == 503 and body["error"]["code"] == "tablet_unavailable"
        assert "Retry-After" in headers
    finally:
        cluster.resume("tablet-2")
    # Served again within seconds: after the timeout the client server's circuit breaker
    # fails tablet-2's keys fast until its probe finds the server answering again.
    _wait_until(lambda: api("GET", "/tables/products/rows/1000")[0] == 200, timeout=15)


def test_the_master_collects_acknowledged_writes_into_its_copy(cluster, api):
    assert api("PATCH", "/tables/products/rows/10", {"cells": {"price": "£10.10"}})[0] == 200
    assert api("PATCH", "/tables/products/rows/990", {"cells": {"price": "£99.90"}})[0] == 200
    code = (
        "from master_app.models import ConsolidatedRow as R;"
        "from distdb.keys import encode_key as e;"
        "print(R.objects.get(table__name='products', key=e('int', 10)).cells['price'],"
        " R.objects.get(table__name='products', key=e('int', 990)).cells['price'])"
    )

    def collected():
        return cluster.shell("master", code).split() == ["£10.10", "£99.90"]

    _wait_until(collected, timeout=60)


# --- helpers ----------------------------------------------------------------------------------


def _owner(cluster, table: str) -> str:
    return cluster.shell(
        "master",
        f"from master_app.models import Tablet;"
        f"print(Tablet.objects.get(table__name='{table}').server.node_id)",
    )


def _tablet_owns(cluster, node: str, table: str) -> bool:
    out = cluster.shell(
        node,
        "from tablet_app.models import OwnedRange;"
        f"print(OwnedRange.objects.filter(table='{table}').count())",
    )
    return out == "1"


def _tablet_rows(cluster, node: str, table: str) -> int:
    out = cluster.shell(
        node,
        f"from tablet_app.models import Row;print(Row.objects.filter(table='{table}').count())",
    )
    return int(out)


def _wait_until(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_keyless_adds_after_explicit_integer_keys_get_keys_above_them(api):
    """Issue #9: explicit keys 1-4 did not move the generated-key counter, and a keyless
    add (or a keyless insert in a batch) then answered 409."""
    status, body, _ = api("POST", "/tables/", {"name": "explicit_then_keyless", "key_type": "int"})
    assert status == 201, body
    rows = [{"key": k, "cells": {"k": k}} for k in (1, 2, 3, 4)]
    assert api("POST", "/tables/explicit_then_keyless/rows", rows)[0] == 201
    for client in (0, 1):
        status, body, _ = api("POST", "/tables/explicit_then_keyless/rows", [{"cells": {}}], client)
        assert status == 201, body
        assert body["results"][0]["key"] > 4
        batch = {"mutations": [{"op": "insert", "cells": {"via": "batch"}}]}
        status, body, _ = api("POST", "/tables/explicit_then_keyless/rows:batch", batch, client)
        assert status == 200 and body["results"][0]["status"] == "created", body


def test_a_deleted_tables_rows_do_not_come_back_in_a_new_table_of_its_name(api, cluster):
    """Issue #9 defect 6: deleting a table left its rows on the tablet servers, and a new
    table of the same name showed them."""
    assert api("POST", "/tables/", {"name": "reborn", "key_type": "int"})[0] == 201
    rows = [{"key": k, "cells": {"old": True}} for k in range(1, 30)]
    assert api("POST", "/tables/reborn/rows", rows)[0] == 201
    cluster.shell(
        "master",
        "from master_app.services.tables import table_delete; table_delete('reborn'); print(1)",
    )
    deadline = time.monotonic() + 60
    while True:  # recreating waits until every server has dropped the old rows
        status, body, _ = api("POST", "/tables/", {"name": "reborn", "key_type": "int"})
        if status == 201 or time.monotonic() > deadline:
            break
        assert status == 409 and body["error"]["code"] == "table_being_dropped", body
        time.sleep(0.5)
    assert status == 201, body
    for client in (0, 1):
        status, body, _ = api("GET", "/tables/reborn/rows?start=0&limit=100", client=client)
        assert status == 200 and body["rows"] == [], body

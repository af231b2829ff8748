"""The original system's endpoint: same shapes, every id handled, failures reported."""

from __future__ import annotations

URL = "/api/v1/client/send-db-query"


def query(title: str, **body):
    return {"queryTitle": title, "queryBody": body}


async def test_add_rows_adds_every_row_with_or_without_an_id(api, cluster):
    data = [{"id": 1, "price": "£1"}, {"id": 150, "price": "£2"}, {"price": "£3"}]
    answer = await api("POST", URL, query("add-rows", data=data))
    assert answer.status == 200
    assert answer.json["status"] == "success"
    assert answer.json["count"] == 3
    ids = [row["id"] for row in answer.json["data"]]
    assert ids[:2] == [1, 150]
    assert [row["status"] for row in answer.json["data"]] == ["created"] * 3
    assert cluster.get("products", "int", ids[2]) == {"price": "£3"}
    assert cluster.get("products", "int", 150) == {"price": "£2"}


async def test_read_rows_answers_every_id_in_order_and_reports_missing_ones(api, cluster):
    cluster.put("products", "int", 1, {"price": "£1"})
    cluster.put("products", "int", 150, {"price": "£2"})
    answer = await api("POST", URL, query("read-rows", ids=[150, 999, 1]))
    assert answer.status == 200
    assert answer.json == {
        "status": "success",
        "count": 2,
        "data": [{"price": "£2", "id": 150}, {"price": "£1", "id": 1}],
        "errors": [],
        "missing": [999],
    }


async def test_ids_may_be_numeric_strings_as_the_original_clients_sent(api, cluster):
    cluster.put("products", "int", 7, {"a": 1})
    answer = await api("POST", URL, query("read-rows", ids=["7"]))
    assert answer.json["data"] == [{"a": 1, "id": 7}]


async def test_set_sets_the_cells_on_every_id_and_reports_absent_rows_as_failures(api, cluster):
    cluster.put("products", "int", 1, {"price": "£1", "name": "a"})
    cluster.put("products", "int", 150, {"price": "£2"})
    answer = await api("POST", URL, query("set", ids=[1, 150, 42], data={"price": "£9"}))
    assert answer.status == 200
    assert answer.json["status"] == "partial"
    assert answer.json["count"] == 2
    assert answer.json["errors"] == [
        {"id": 42, "code": "row_not_found", "message": "row not found", "retryable": False}
    ]
    assert cluster.get("products", "int", 1) == {"price": "£9", "name": "a"}
    assert cluster.get("products", "int", 150) == {"price": "£9"}


async def test_delete_cells_removes_the_columns_on_every_id(api, cluster):
    cluster.put("products", "int", 1, {"price": "£1", "name": "a"})
    cluster.put("products", "int", 150, {"price": "£2", "name": "b"})
    answer = await api("POST", URL, query("delete-cells", ids=[1, 150], data=["price"]))
    assert (answer.status, answer.json["status"], answer.json["count"]) == (200, "success", 2)
    assert cluster.get("products", "int", 1) == {"name": "a"}
    assert cluster.get("products", "int", 150) == {"name": "b"}


async def test_delete_rows_deletes_every_id(api, cluster):
    cluster.put("products", "int", 1, {})
    cluster.put("products", "int", 150, {})
    answer = await api("POST", URL, query("delete-rows", ids=[1, 150]))
    assert (answer.status, answer.json["status"], answer.json["count"]) == (200, "success", 2)
    assert cluster.rows["products"] == {}


async def test_deleting_only_absent_rows_is_an_error_not_a_success(api, cluster):
    answer = await api("POST", URL, query("delete-rows", ids=[5, 6]))
    assert answer.status == 404
    assert answer.json["status"] == "error"
    assert answer.json["count"] == 0
    assert answer.json["error"]["code"] == "row_not_found"
    assert [e["id"] for e in answer.json["errors"]] == [5, 6]


async def test_ids_on_a_down_tablet_are_failures_and_the_others_succeed(api, cluster):
    cluster.put("products", "int", 1, {"a": 1})
    await api("GET", "/api/v1/tables/products/rows/1")
    await cluster.tablets["tablet-2"].stop()
    answer = await api("POST", URL, query("read-rows", ids=[1, 150]))
    assert answer.status == 200
    assert answer.json["status"] == "partial"
    assert answer.json["data"] == [{"a": 1, "id": 1}]
    assert answer.json["errors"][0]["id"] == 150
    assert answer.json["errors"][0]["code"] == "tablet_unavailable"

    only_down = await api("POST", URL, query("delete-rows", ids=[150, 151]))
    assert only_down.status == 503
    assert only_down.headers["retry-after"] == "1"
    assert only_down.json["status"] == "error"


async def test_a_malformed_query_is_a_400(api, cluster):
    for body in (
        {"queryTitle": "drop-table", "queryBody": {}},
        {"queryTitle": "read-rows", "queryBody": {"ids": []}},
        {"queryTitle": "read-rows", "queryBody": {"ids": [1], "where": {}}},
        {"queryTitle": "read-rows"},
        {"queryTitle": "set", "queryBody": {"ids": [1], "data": ["a"]}},
        {"queryTitle": "delete-cells", "queryBody": {"ids": [1], "data": {"a": 1}}},
        {"queryTitle": "add-rows", "queryBody": {"data": [1, 2]}},
        {"queryTitle": "read-rows", "queryBody": {"ids": [{"id": 1}]}},
    ):
        answer = await api("POST", URL, body)
        assert answer.status == 400, body
        assert answer.json["error"]["code"] == "validation_failed"
    answer = await api("POST", URL, query("read-rows", ids=["abc"]))
    assert (answer.status, answer.json["error"]["code"]) == (400, "invalid_key")

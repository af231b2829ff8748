"""Bad input gets its 4xx in the one error shape, never a 500."""

from __future__ import annotations

import json

import pytest

ROWS = "/api/v1/tables/products/rows"


def assert_error(answer, status: int, code: str) -> None:
    assert (answer.status, answer.error_code) == (status, code), answer.body
    error = answer.json["error"]
    assert set(error) == {"code", "message", "detail", "retryable"}
    assert answer.headers["content-type"] == "application/json"


async def test_bad_json_is_a_400(api, cluster):
    answer = await api("POST", ROWS, body=b'[{"key": 1, "cells": ')
    assert_error(answer, 400, "invalid_json")


async def test_an_empty_body_is_a_400(api, cluster):
    answer = await api("POST", ROWS, body=b"")
    assert_error(answer, 400, "invalid_json")


async def test_a_body_that_is_not_json_typed_is_a_415(api, cluster):
    answer = await api(
        "POST", ROWS, body=b"key=1", content_type="application/x-www-form-urlencoded"
    )
    assert_error(answer, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", ROWS, [{"key": 1, "cells": {}, "colour": "red"}]),
        ("POST", ROWS, {"key": 1, "cells": {}}),
        ("POST", ROWS, []),
        ("POST", ROWS, [{"key": 1}]),
        ("POST", ROWS, [{"key": 1, "cells": ["a"]}]),
        ("POST", ROWS, [{"key": 1.5, "cells": {}}]),
        ("POST", ROWS, [{"key": True, "cells": {}}]),
        ("PATCH", f"{ROWS}/1", {"cells": {"a": 1}, "extra": 1}),
        ("PATCH", f"{ROWS}/1", {"cells": {}}),
        ("PATCH", f"{ROWS}/1", {"cells": {"": 1}}),
        ("PATCH", f"{ROWS}/1", {"cells": {"c" * 129: 1}}),
        ("POST", f"{ROWS}:batch", {"mutations": [{"op": "merge", "key": 1}]}),
        ("POST", f"{ROWS}:batch", {"mutations": [{"op": "set", "key": 1}]}),
        ("POST", f"{ROWS}:batch", {"mutations": [{"op": "delete_row", "key": 1, "cells": {}}]}),
        ("POST", f"{ROWS}:batch", {"mutations": [{"op": "delete_row"}]}),
        ("POST", f"{ROWS}:batch", {"mutations": []}),
        ("POST", f"{ROWS}:batch", {"mutations": [], "atomic": True}),
        ("POST", "/api/v1/tables/", {"name": "bad name!", "key_type": "int"}),
        ("POST", "/api/v1/tables/", {"name": "t", "key_type": "float"}),
    ],
)
async def test_a_body_that_does_not_match_the_schema_is_a_400(api, cluster, method, path, body):
    answer = await api(method, path, body)
    assert_error(answer, 400, "validation_failed")
    assert answer.json["error"]["detail"]["errors"]


async def test_an_unknown_query_parameter_is_a_400(api, cluster):
    assert_error(await api("GET", f"{ROWS}?keys=1&limit=3"), 400, "validation_failed")
    assert_error(await api("GET", f"{ROWS}?colour=red"), 400, "validation_failed")
    assert_error(await api("DELETE", f"{ROWS}/1/cells?columns=a&x=1"), 400, "validation_failed")
    assert_error(await api("DELETE", f"{ROWS}/1/cells"), 400, "validation_failed")


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", f"{ROWS}/abc", None),
        ("GET", f"{ROWS}?keys=1,abc", None),
        ("GET", f"{ROWS}?keys=1,,2", None),
        ("GET", f"{ROWS}?start=abc", None),
        ("GET", f"{ROWS}/99999999999999999999", None),
        ("POST", ROWS, [{"key": "12", "cells": {}}]),
        ("POST", ROWS, [{"key": 2**63, "cells": {}}]),
        ("POST", f"{ROWS}:batch", {"mutations": [{"op": "delete_row", "key": "x"}]}),
    ],
)
async def test_a_key_of_the_wrong_type_or_out_of_range_is_a_400(api, cluster, method, path, body):
    answer = await (api(method, path, body) if body is not None else api(method, path))
    assert answer.status == 400, answer.body
    assert answer.error_code in ("invalid_key", "validation_failed")


async def test_string_keys_that_are_too_long_empty_or_numbers_are_rejected(api, cluster):
    cluster.layout("names", "str", [(None, "tablet-1")])
    path = "/api/v1/tables/names/rows"
    assert_error(await api("POST", path, [{"key": "é" * 129, "cells": {}}]), 400, "invalid_key")
    assert_error(await api("POST", path, [{"key": "", "cells": {}}]), 400, "invalid_key")
    assert_error(await api("POST", path, [{"key": 5, "cells": {}}]), 400, "invalid_key")
    assert_error(await api("GET", f"{path}/{'k' * 257}"), 400, "invalid_key")
    assert_error(await api("GET", f"{path}?keys=a,"), 400, "invalid_key")
    assert (await api("POST", path, [{"key": "é" * 128, "cells": {}}])).status == 201


async def test_a_column_the_table_does_not_allow_is_a_400(api, cluster):
    cluster.layout("strict", "int", [(None, "tablet-1")], columns=["name", "price"])
    path = "/api/v1/tables/strict/rows"
    assert_error(
        await api("POST", path, [{"key": 1, "cells": {"colour": 1}}]), 400, "column_not_allowed"
    )
    assert_error(
        await api("PATCH", f"{path}/1", {"cells": {"colour": 1}}), 400, "column_not_allowed"
    )
    assert_error(await api("DELETE", f"{path}/1/cells?columns=colour"), 400, "column_not_allowed")
    batch = {"mutations": [{"op": "upsert", "key": 1, "cells": {"name": "a", "colour": 1}}]}
    answer = await api("POST", f"{path}:batch", batch)
    assert_error(answer, 400, "column_not_allowed")
    assert answer.json["error"]["detail"]["columns"] == ["colour"]
    assert cluster.rows["strict"] == {}
    assert (await api("POST", path, [{"key": 1, "cells": {"name": "a"}}])).status == 201


async def test_an_unknown_table_is_a_404_after_one_metadata_refresh(api, cluster):
    await api("GET", f"{ROWS}/1")
    before = cluster.master_calls["metadata"]
    answer = await api("GET", "/api/v1/tables/nope/rows/1")
    assert_error(answer, 404, "table_not_found")
    assert cluster.master_calls["metadata"] == before + 1


async def test_a_table_created_elsewhere_is_found_by_that_refresh(api, cluster):
    await api("GET", f"{ROWS}/1")
    cluster.layout("fresh", "int", [(None, "tablet-2")])
    cluster.put("fresh", "int", 1, {"a": 1})
    assert (await api("GET", "/api/v1/tables/fresh/rows/1")).status == 200


async def test_a_body_over_the_limit_is_a_413(api, cluster, settings):
    settings.DISTDB_MAX_BODY_BYTES = 2048
    rows = [{"key": 1, "cells": {"blob": "x" * 4096}}]
    assert_error(await api("POST", ROWS, rows), 413, "payload_too_large")


async def test_too_many_rows_is_a_413(api, cluster, settings):
    settings.DISTDB_MAX_ROWS_PER_REQUEST = 3
    assert_error(await api("GET", f"{ROWS}?keys=1,2,3,4"), 413, "payload_too_large")
    rows = [{"cells": {}} for _ in range(4)]
    assert_error(await api("POST", ROWS, rows), 413, "payload_too_large")
    assert cluster.rows["products"] == {}


async def test_a_method_the_endpoint_lacks_is_a_405(api, cluster):
    answer = await api("PUT", f"{ROWS}/1", {"cells": {}})
    assert_error(answer, 405, "method_not_allowed")
    assert "PATCH" in answer.headers["allow"]


async def test_an_unknown_path_under_the_api_is_a_404_in_the_error_shape(api, cluster):
    for path in ("/api/v2/tables/", "/api/v1/tables/products/rows/a/b/c", "/api/"):
        assert_error(await api("GET", path), 404, "not_found")


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", ROWS, [{"key": 1, "cells": {"a": nested(101)}}]),
        ("PATCH", f"{ROWS}/1", {"cells": {"a": {"b": nested(100)}}}),
        (
            "POST",
            f"{ROWS}:batch",
            {"mutations": [{"op": "upsert", "key": 1, "cells": {"a": nested(600)}}]},
        ),
        (
            "POST",
            "/api/v1/client/send-db-query",
            {"queryTitle": "add-rows", "queryBody": {"data": [{"id": 1, "a": nested(300)}]}},
        ),
    ],
)
async def test_a_cell_value_nested_over_100_deep_is_a_400_not_an_unreadable_row(
    api, cluster, method, path, body
):
    # Accepted, such a value broke every later read of its row (and a 251-deep one was a 500).
    answer = await api(method, path, body=json.dumps(body).encode())  # orjson stops at 254
    assert_error(answer, 400, "validation_failed")
    assert "100" in answer.json["error"]["message"]
    assert cluster.rows.get("products", {}) == {}


async def test_a_cell_value_nested_exactly_100_deep_is_stored_and_read_back(api, cluster):
    cells = {"a": nested(100), "b": {"c": nested(99)}}
    assert (await api("POST", ROWS, [{"key": 1, "cells": cells}])).status == 201
    answer = await api("GET", f"{ROWS}/1")
    assert (answer.status, answer.json["cells"]) == (200, cells)


@pytest.mark.parametrize("name", ["users\n", " users", "users ", "us ers"])
async def test_a_table_name_with_whitespace_is_a_400_not_another_name(api, cluster, name):
    answer = await api("POST", "/api/v1/tables/", {"name": name, "key_type": "str"})
    assert_error(answer, 400, "validation_failed")
    assert "users" not in {t["name"] for t in (await api("GET", "/api/v1/tables/")).json["tables"]}

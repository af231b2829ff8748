"""Every row operation over keys on two tablets, through the real ASGI stack."""

from __future__ import annotations

import asyncio

ROWS = "/api/v1/tables/products/rows"


def stored(cluster, key):
    return cluster.get("products", "int", key)


async def test_it_reads_one_row(api, cluster):
    cluster.put("products", "int", 150, {"price": "£3.42"})
    answer = await api("GET", "/api/v1/tables/products/rows/150")
    assert answer.status == 200
    assert answer.json == {"key": 150, "cells": {"price": "£3.42"}}


async def test_it_reads_many_rows_from_two_tablets_in_request_order(api, cluster):
    for key in (1, 50, 150, 250):
        cluster.put("products", "int", key, {"n": key})
    answer = await api("GET", "/api/v1/tables/products/rows?keys=250,1,150,50")
    assert answer.status == 200
    assert [row["key"] for row in answer.json["rows"]] == [250, 1, 150, 50]
    assert [row["cells"]["n"] for row in answer.json["rows"]] == [250, 1, 150, 50]
    assert cluster.tablets["tablet-1"].calls and cluster.tablets["tablet-2"].calls


async def test_it_reports_missing_keys_instead_of_dropping_them(api, cluster):
    cluster.put("products", "int", 1, {"n": 1})
    answer = await api("GET", "/api/v1/tables/products/rows?keys=7,1,170")
    assert answer.status == 200
    assert answer.json["rows"] == [{"key": 1, "cells": {"n": 1}}]
    assert answer.json["missing"] == [7, 170]
    assert answer.json["failed"] == []


async def test_it_accepts_repeated_key_parameters_and_duplicate_keys(api, cluster):
    cluster.put("products", "int", 3, {"n": 3})
    answer = await api("GET", "/api/v1/tables/products/rows?key=3&key=3")
    assert [row["key"] for row in answer.json["rows"]] == [3, 3]


async def test_it_adds_rows_on_two_tablets_and_answers_201(api, cluster):
    rows = [{"key": 5, "cells": {"a": 1}}, {"key": 500, "cells": {"a": 2}}]
    answer = await api("POST", "/api/v1/tables/products/rows", rows)
    assert answer.status == 201
    assert answer.json == {
        "results": [
            {"key": 5, "status": "created", "error": None},
            {"key": 500, "status": "created", "error": None},
        ],
        "failed": 0,
    }
    assert stored(cluster, 5) == {"a": 1} and stored(cluster, 500) == {"a": 2}


async def test_it_gives_rows_without_a_key_a_new_unique_key(api, cluster):
    answer = await api(
        "POST", "/api/v1/tables/products/rows", [{"cells": {"a": i}} for i in range(5)]
    )
    assert answer.status == 201
    keys = [r["key"] for r in answer.json["results"]]
    assert len(set(keys)) == 5 and all(isinstance(k, int) for k in keys)
    assert [stored(cluster, k) for k in keys] == [{"a": i} for i in range(5)]


async def test_a_keyless_add_after_explicit_keys_at_the_counter_gets_a_key_above_them(api, cluster):
    """Issue #9: explicit keys never advanced the generated-key counter, so a keyless add
    after explicit keys 1,000,000.. answered 409 once its retries hit them too."""
    explicit = [{"key": 1_000_000 + i, "cells": {"x": i}} for i in range(8)]
    assert (await api("POST", "/api/v1/tables/products/rows", explicit)).status == 201
    answer = await api("POST", "/api/v1/tables/products/rows", [{"cells": {"new": 1}}])
    assert answer.status == 201, answer.json
    (result,) = answer.json["results"]
    assert result["status"] == "created" and result["key"] > 1_000_000
    assert stored(cluster, result["key"]) == {"new": 1}
    assert cluster.key_requests[-1]["above"] == 1_000_000  # the next block starts above it


async def test_a_keyless_insert_in_a_batch_is_retried_past_an_explicit_key(api, cluster):
    await api("POST", "/api/v1/tables/products/rows", [{"key": 1_000_000, "cells": {}}])
    body = {
        "mutations": [{"op": "insert", "cells": {"n": 1}}, {"op": "upsert", "key": 7, "cells": {}}]
    }
    answer = await api("POST", "/api/v1/tables/products/rows:batch", body)
    assert answer.status == 200, answer.json
    assert [r["status"] for r in answer.json["results"]] == ["created", "created"]
    assert answer.json["results"][0]["key"] > 1_000_000


async def test_concurrent_adds_without_keys_never_reuse_a_key(api, cluster):
    async def add(batch):
        body = [{"cells": {"batch": batch, "i": i}} for i in range(7)]
        return await api("POST", "/api/v1/tables/products/rows", body)

    answers = await asyncio.gather(*(add(b) for b in range(20)))
    keys = [r["key"] for a in answers for r in a.json["results"]]
    assert all(a.status == 201 for a in answers)
    assert len(keys) == len(set(keys)) == 140
    assert len(cluster.rows["products"]) == 140


async def test_adding_an_existing_key_fails_only_that_row(api, cluster):
    cluster.put("products", "int", 5, {"old": True})
    rows = [{"key": 5, "cells": {"a": 1}}, {"key": 150, "cells": {"a": 2}}]
    answer = await api("POST", "/api/v1/tables/products/rows", rows)
    assert answer.status == 200
    assert answer.json["failed"] == 1
    first, second = answer.json["results"]
    assert first["status"] == "error" and first["error"]["code"] == "row_exists"
    assert second["status"] == "created"
    assert stored(cluster, 5) == {"old": True}


async def test_adding_only_existing_keys_answers_409_with_the_results(api, cluster):
    cluster.put("products", "int", 5, {"old": True})
    answer = await api("POST", "/api/v1/tables/products/rows", [{"key": 5, "cells": {}}])
    assert answer.status == 409
    assert answer.error_code == "row_exists"
    assert answer.json["error"]["detail"]["results"][0]["key"] == 5


async def test_it_sets_cells_by_merging(api, cluster):
    cluster.put("products", "int", 150, {"a": 1, "b": 2})
    answer = await api("PATCH", "/api/v1/tables/products/rows/150", {"cells": {"b": 3, "c": 4}})
    assert answer.status == 200
    assert answer.json == {"key": 150, "status": "updated"}
    assert stored(cluster, 150) == {"a": 1, "b": 3, "c": 4}


async def test_it_deletes_cells(api, cluster):
    cluster.put("products", "int", 7, {"a": 1, "b": 2, "c": 3})
    answer = await api("DELETE", "/api/v1/tables/products/rows/7/cells?columns=a,c")
    assert answer.status == 200
    assert stored(cluster, 7) == {"b": 2}


async def test_it_deletes_a_row(api, cluster):
    cluster.put("products", "int", 170, {"a": 1})
    answer = await api("DELETE", "/api/v1/tables/products/rows/170")
    assert answer.status == 200
    assert answer.json == {"key": 170, "status": "deleted"}
    assert stored(cluster, 170) is None


async def test_it_answers_404_for_a_row_that_does_not_exist(api, cluster):
    for method, path, body in [
        ("GET", "/api/v1/tables/products/rows/42", None),
        ("PATCH", "/api/v1/tables/products/rows/42", {"cells": {"a": 1}}),
        ("DELETE", "/api/v1/tables/products/rows/42", None),
        ("DELETE", "/api/v1/tables/products/rows/42/cells?columns=a", None),
    ]:
        answer = await (api(method, path, body) if body else api(method, path))
        assert (answer.status, answer.error_code) == (404, "row_not_found"), (method, path)
        assert answer.json["error"]["detail"]["key"] == 42


async def test_a_batch_applies_mutations_on_two_tablets_with_per_row_results(api, cluster):
    cluster.put("products", "int", 150, {"a": 1, "b": 2})
    mutations = [
        {"op": "insert", "key": 1, "cells": {"x": 1}},
        {"op": "set", "key": 1, "cells": {"y": 2}},  # same key: applies after the insert
        {"op": "delete_cells", "key": 150, "columns": ["a"]},
        {"op": "upsert", "key": 151, "cells": {"z": 3}},
        {"op": "delete_row", "key": 2},
        {"op": "insert", "cells": {"generated": True}},
    ]
    answer = await api("POST", "/api/v1/tables/products/rows:batch", {"mutations": mutations})
    assert answer.status == 200
    results = answer.json["results"]
    assert [r["status"] for r in results] == [
        "created",
        "updated",
        "updated",
        "created",
        "error",
        "created",
    ]
    assert results[4]["error"]["code"] == "row_not_found"
    assert [r["key"] for r in results[:5]] == [1, 1, 150, 151, 2]
    assert stored(cluster, 1) == {"x": 1, "y": 2}
    assert stored(cluster, 150) == {"b": 2}
    assert stored(cluster, results[5]["key"]) == {"generated": True}


async def test_a_batch_reports_failed_rows_and_keeps_the_others(api, cluster):
    mutations = [
        {"op": "set", "key": 3, "cells": {"a": 1}},
        {"op": "upsert", "key": 300, "cells": {"a": 1}},
    ]
    answer = await api("POST", "/api/v1/tables/products/rows:batch", {"mutations": mutations})
    assert answer.status == 200
    assert answer.json["failed"] == 1
    assert answer.json["results"][0]["error"]["code"] == "row_not_found"
    assert answer.json["results"][1]["status"] == "created"


async def test_many_rows_spread_over_both_tablets_all_arrive(api, cluster, settings):
    rows = [{"key": k, "cells": {"k": k}} for k in range(0, 3000)]
    answer = await api("POST", "/api/v1/tables/products/rows", rows)
    assert answer.status == 201
    assert len(cluster.rows["products"]) == 3000
    keys = ",".join(str(k) for k in range(2999, -1, -1))
    read = await api("GET", f"/api/v1/tables/products/rows?keys={keys}")
    assert [r["key"] for r in read.json["rows"]] == list(range(2999, -1, -1))


async def test_it_works_on_string_keyed_tables(api, cluster):
    cluster.layout("names", "str", [(None, "tablet-1"), ("m", "tablet-2")])
    rows = [{"key": "alice", "cells": {"n": 1}}, {"key": "zoe", "cells": {"n": 2}}, {"cells": {}}]
    answer = await api("POST", "/api/v1/tables/names/rows", rows)
    assert answer.status == 201
    generated = answer.json["results"][2]["key"]
    assert isinstance(generated, str) and len(generated) == 26
    read = await api("GET", "/api/v1/tables/names/rows?keys=zoe,alice")
    assert [r["cells"]["n"] for r in read.json["rows"]] == [2, 1]


async def test_a_read_with_more_query_fields_than_django_parses_is_a_413(api, cluster):
    """Django parses at most DATA_UPLOAD_MAX_NUMBER_FIELDS (1,000) query fields and raises
    beyond; that was a 500 ``internal_error``."""
    answer = await api("GET", f"{ROWS}?" + "&".join(f"key={k}" for k in range(1_001)))
    assert (answer.status, answer.error_code) == (413, "payload_too_large")
    assert answer.json["error"]["detail"] == {"limit": 1000}
    assert (await api("GET", f"{ROWS}?keys=" + ",".join(map(str, range(1_001))))).status == 200

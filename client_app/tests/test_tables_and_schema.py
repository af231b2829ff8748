"""Listing, creating, showing tables and changing their rf; the OpenAPI schema and the docs."""

from __future__ import annotations

import time

import orjson
import pytest
from drf_spectacular.validation import validate_schema

from ..authentication import revoked_tokens


async def test_it_lists_tables_sorted_by_name(api, cluster):
    cluster.layout("accounts", "str", [(None, "tablet-2")], columns=["email"], rf=3)
    answer = await api("GET", "/api/v1/tables/")
    assert answer.status == 200
    assert answer.json == {
        "tables": [
            {"name": "accounts", "key_type": "str", "columns": ["email"], "rf": 3},
            {"name": "products", "key_type": "int", "columns": None, "rf": 1},
        ]
    }


async def test_it_creates_a_table_that_is_usable_at_once(api, cluster):
    body = {"name": "users", "key_type": "str", "columns": ["email", "name"]}
    answer = await api("POST", "/api/v1/tables", body)
    assert answer.status == 201
    assert answer.json == {**body, "rf": 2}  # the master's default
    added = await api(
        "POST", "/api/v1/tables/users/rows", [{"key": "bob", "cells": {"email": "b@x"}}]
    )
    assert added.status == 201
    refused = await api("POST", "/api/v1/tables/users/rows", [{"key": "al", "cells": {"age": 3}}])
    assert refused.json["error"]["code"] == "column_not_allowed"


async def test_a_table_is_created_with_the_rf_asked_for(api, cluster):
    body = {"name": "orders", "key_type": "int", "rf": 3}
    answer = await api("POST", "/api/v1/tables/", body)
    assert answer.status == 201
    assert answer.json == {"name": "orders", "key_type": "int", "columns": None, "rf": 3}
    assert cluster.metadata.tables["orders"].rf == 3


@pytest.mark.parametrize("rf", [0, 6, -1, "x", "3", 2.5, True, [2], {"n": 2}])
async def test_creating_a_table_with_an_rf_outside_one_to_five_is_a_400(api, cluster, rf):
    answer = await api("POST", "/api/v1/tables/", {"name": "o", "key_type": "int", "rf": rf})
    assert (answer.status, answer.error_code) == (400, "validation_failed")
    assert answer.json["error"]["detail"]["errors"][0]["loc"] == "rf"
    assert cluster.master_calls["create"] == 0


async def test_one_table_is_shown_with_its_rf(api, cluster):
    answer = await api("GET", "/api/v1/tables/products")
    assert answer.status == 200
    assert answer.json == {"name": "products", "key_type": "int", "columns": None, "rf": 1}
    missing = await api("GET", "/api/v1/tables/nope")
    assert (missing.status, missing.error_code) == (404, "table_not_found")
    system = await api("GET", "/api/v1/tables/_idempotency")
    assert (system.status, system.error_code) == (404, "table_not_found")


async def test_patching_rf_changes_it_at_the_master_and_shows_it_at_once(api, cluster):
    answer = await api("PATCH", "/api/v1/tables/products", {"rf": 3})
    assert answer.status == 200
    assert answer.json == {"name": "products", "key_type": "int", "columns": None, "rf": 3}
    assert cluster.master_calls["rf"] == 1
    assert cluster.metadata.tables["products"].rf == 3
    listed = await api("GET", "/api/v1/tables/")
    assert listed.json["tables"][0]["rf"] == 3  # adopted, not stale


@pytest.mark.parametrize(
    "body", [{"rf": 0}, {"rf": 6}, {"rf": "x"}, {"rf": None}, {}, {"rf": 2, "name": "x"}, [2]]
)
async def test_patching_rf_with_bad_input_is_a_400_that_never_reaches_the_master(
    api, cluster, body
):
    answer = await api("PATCH", "/api/v1/tables/products", body)
    assert (answer.status, answer.error_code) == (400, "validation_failed")
    assert cluster.master_calls["rf"] == 0
    assert cluster.metadata.tables["products"].rf == 1


async def test_patching_rf_of_an_unknown_or_system_table_is_a_404(api, cluster):
    answer = await api("PATCH", "/api/v1/tables/nope", {"rf": 2})
    assert (answer.status, answer.error_code) == (404, "table_not_found")
    system = await api("PATCH", "/api/v1/tables/_idempotency", {"rf": 2})
    assert (system.status, system.error_code) == (404, "table_not_found")
    assert cluster.master_calls["rf"] == 1  # only the first asked the master


async def test_patching_rf_without_a_body_or_a_token_is_refused(api, cluster):
    empty = await api("PATCH", "/api/v1/tables/products", body=b"")
    assert (empty.status, empty.error_code) == (400, "invalid_json")
    anonymous = await api("PATCH", "/api/v1/tables/products", {"rf": 2}, token=None)
    assert (anonymous.status, anonymous.error_code) == (401, "unauthenticated")


async def test_creating_an_existing_table_is_a_409(api, cluster):
    answer = await api("POST", "/api/v1/tables/", {"name": "products", "key_type": "int"})
    assert (answer.status, answer.error_code) == (409, "table_exists")


async def test_a_master_that_is_down_is_a_503_with_retry_after(api, cluster):
    await cluster.master.stop()
    answer = await api("GET", "/api/v1/tables/products/rows/1")
    # A fresh client server cannot load the revoked tokens either: it fails closed.
    assert (answer.status, answer.error_code) == (503, "revocations_unavailable")
    assert answer.headers["retry-after"] == "1"
    revoked = revoked_tokens.get()
    revoked.loaded, revoked.checked_at = True, time.monotonic()  # as if loaded before
    answer = await api("GET", "/api/v1/tables/products/rows/1")
    assert (answer.status, answer.error_code) == (503, "master_unavailable")
    assert answer.headers["retry-after"] == "1"


async def test_the_openapi_schema_is_valid_openapi_3_and_documents_every_endpoint(api, cluster):
    answer = await api("GET", "/api/v1/schema/?format=json", token=None)
    assert answer.status == 200
    schema = orjson.loads(answer.body)
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    assert set(paths) >= {
        "/api/v1/tables/",
        "/api/v1/tables/{table}",
        "/api/v1/tables/{table}/rows",
        "/api/v1/tables/{table}/rows/{key}",
        "/api/v1/tables/{table}/rows/{key}/cells",
        "/api/v1/tables/{table}/rows:batch",
        "/api/v1/client/send-db-query",
    }
    add = paths["/api/v1/tables/{table}/rows"]["post"]
    assert {"201", "400", "401", "403", "404", "413", "503"} <= set(add["responses"])
    assert add["security"] == [{"ApiToken": []}]
    assert "Retry-After" in add["responses"]["503"]["headers"]


async def test_the_docs_page_answers(api, cluster):
    answer = await api("GET", "/api/docs/", token=None)
    assert answer.status == 200
    assert b"swagger" in answer.body.lower()


async def test_the_schema_documents_what_request_bodies_must_be(api, cluster):
    schema = orjson.loads((await api("GET", "/api/v1/schema/?format=json", token=None)).body)
    components = schema["components"]["schemas"]
    objects = [
        schema
        for name, component in components.items()
        if name.endswith("Request")
        for schema in component.get("oneOf", [component])
    ]
    assert len(objects) > 5 and all(s["additionalProperties"] is False for s in objects)
    patch = schema["paths"]["/api/v1/tables/{table}/rows/{key}"]["patch"]["requestBody"]
    assert patch["required"] is True
    cells_set = components[patch["content"]["application/json"]["schema"]["$ref"].split("/")[-1]]
    assert cells_set["required"] == ["cells"]
    assert cells_set["properties"]["cells"]["minProperties"] == 1
    assert components["BatchRequest"]["properties"]["mutations"]["minItems"] == 1
    assert components["TableCreateRequest"]["properties"]["columns"]["minItems"] == 1
    variants = {
        v["properties"]["op"]["pattern"].strip("^$"): v
        for v in components["MutationRequest"]["oneOf"]
    }
    assert {op: sorted(v["required"]) for op, v in variants.items()} == {
        "insert": ["cells", "op"],
        "upsert": ["cells", "key", "op"],
        "set": ["cells", "key", "op"],
        "delete_cells": ["columns", "key", "op"],
        "delete_row": ["key", "op"],
    }
    assert all(v["additionalProperties"] is False for v in variants.values())
    assert variants["set"]["properties"]["cells"]["minProperties"] == 1
    assert "minProperties" not in variants["upsert"]["properties"]["cells"]


async def test_an_error_of_the_schema_endpoint_is_json_in_the_error_shape(api, cluster):
    answer = await api("POST", "/api/v1/schema/", {}, token=None)
    assert (answer.status, answer.headers["content-type"]) == (405, "application/json")
    assert answer.error_code == "method_not_allowed"
    assert (await api("GET", "/api/v1/schema/", token=None)).status == 200

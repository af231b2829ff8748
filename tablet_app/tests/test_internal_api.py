"""The tablet server's internal HTTP API, driven through its ASGI app (auth and parsing too)."""

from __future__ import annotations

import orjson
import pytest

from distdb import auth, protocol
from tablet_app.models import ChangeLogEntry
from tablet_app.services import rows_ingest
from tablet_app.tests.conftest import freeze, in_thread

READ, SCAN, MUTATE = "/internal/v1/read", "/internal/v1/scan", "/internal/v1/mutate"
HEALTH, EXPORT = "/internal/v1/health", "/internal/v1/export"


def read_body(table: str, keys: list[str]) -> dict:
    return {"type": "read", "table": table, "meta_version": 1, "keys": keys}


def mutate_body(table: str, *mutations: dict) -> dict:
    return {"type": "mutate", "table": table, "meta_version": 1, "mutations": list(mutations)}


async def seed(table: str, **rows: dict) -> None:
    data = [protocol.Row(key=k, cells=v) for k, v in rows.items()]
    await in_thread(rows_ingest, table, data, log_changes=False)


# --- read ----------------------------------------------------------------------------------------


async def test_read_returns_rows_in_request_order_in_the_read_response_shape(api, owned):
    await seed("t", a={"x": 1}, b={"y": [1, "é"]})
    response = await api("POST", READ, read_body("t", ["b", "missing", "a"]))
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {
        "v": 1,
        "type": "read_result",
        "rows": [{"key": "b", "cells": {"y": [1, "é"]}}, {"key": "a", "cells": {"x": 1}}],
        "outdated": [],
        "metadata": None,
    }
    assert protocol.ReadResponse.model_validate(body).model_dump(mode="json") == body


async def test_a_text_read_answers_each_rows_cells_as_the_stored_json_text(api, owned):
    await seed("t", a={"x": 1}, b={"y": [1, "é"]})
    body = (
        await api("POST", READ, {**read_body("t", ["b", "missing", "a"]), "cells": "text"})
    ).json()
    assert body["type"] == "read_text_result" and body["outdated"] == []
    parsed = protocol.ReadTextResponse.model_validate(body)
    assert [key for key, _ in parsed.rows] == ["b", "a"]
    assert [orjson.loads(text) for _, text in parsed.rows] == [{"y": [1, "é"]}, {"x": 1}]


async def test_a_text_scan_answers_the_range_with_cells_as_the_stored_json_text(api, owned):
    await seed("t", a={"x": 1}, b={"y": "é"}, c={"z": None})
    body = {"type": "scan", "table": "t", "meta_version": 1, "start": "a", "end": "c"}
    answer = (await api("POST", SCAN, {**body, "limit": 10, "cells": "text"})).json()
    parsed = protocol.ScanTextResponse.model_validate(answer)
    assert [(k, orjson.loads(t)) for k, t in parsed.rows] == [("a", {"x": 1}), ("b", {"y": "é"})]
    assert parsed.outdated is False


async def test_a_text_read_of_keys_not_owned_answers_outdated_with_the_metadata(api, owned):
    body = (await api("POST", READ, {**read_body("u", ["b"]), "cells": "text"})).json()
    parsed = protocol.ReadTextResponse.model_validate(body)
    assert parsed.rows == [] and parsed.outdated == ["b"] and parsed.metadata.version == 3


async def test_read_of_keys_not_owned_answers_outdated_with_the_metadata(api, owned):
    await seed("u", x={"n": 1})
    body = (await api("POST", READ, read_body("u", ["x", "b"]))).json()
    parsed = protocol.ReadResponse.model_validate(body)
    assert [r.key for r in parsed.rows] == ["x"]
    assert parsed.outdated == ["b"]
    assert parsed.metadata.version == 3
    assert body["metadata"] == owned.model_dump(mode="json")


async def test_read_without_any_metadata_answers_version_zero(api):
    body = (await api("POST", READ, read_body("t", ["a"]))).json()
    assert body["outdated"] == ["a"]
    assert body["metadata"] == protocol.Metadata(version=0).model_dump(mode="json")


# --- scan ----------------------------------------------------------------------------------------


async def test_scan_returns_rows_in_key_order_up_to_the_limit(api, owned):
    await seed("t", c={}, a={"k": "a"}, b={}, d={})
    request = {
        "type": "scan",
        "table": "t",
        "meta_version": 3,
        "start": "a",
        "end": "d",
        "limit": 2,
    }
    body = (await api("POST", SCAN, request)).json()
    assert body == {
        "v": 1,
        "type": "scan_result",
        "rows": [{"key": "a", "cells": {"k": "a"}}, {"key": "b", "cells": {}}],
        "outdated": False,
        "metadata": None,
    }
    assert protocol.ScanResponse.model_validate(body).model_dump(mode="json") == body


async def test_scan_across_a_tablet_boundary_answers_outdated(api, owned):
    request = {"type": "scan", "table": "u", "meta_version": 3, "start": "", "limit": 10}
    body = (await api("POST", SCAN, request)).json()
    assert (body["outdated"], body["rows"], body["metadata"]["version"]) == (True, [], 3)


# --- mutate --------------------------------------------------------------------------------------


async def test_mutate_applies_every_op_and_answers_per_row_results(api, owned):
    response = await api(
        "POST",
        MUTATE,
        mutate_body(
            "t",
            {"op": "insert", "key": "a", "cells": {"x": 1}},
            {"op": "upsert", "key": "b", "cells": {"y": 1}},
            {"op": "set", "key": "a", "cells": {"z": 2}},
            {"op": "delete_cells", "key": "a", "columns": ["x"]},
            {"op": "delete_cells", "key": "a", "columns": ["x"]},
            {"op": "delete_row", "key": "b"},
            {"op": "insert", "key": "a", "cells": {}},
            {"op": "set", "key": "nope", "cells": {}},
        ),
    )
    assert response.status == 200
    body = response.json()
    parsed = protocol.MutateResponse.model_validate(body)
    assert [r.status for r in parsed.results] == [
        "created",
        "created",
        "updated",
        "updated",
        "unchanged",
        "deleted",
        "error",
        "error",
    ]
    assert [r.error.code for r in parsed.results if r.error] == ["row_exists", "row_not_found"]
    assert body["metadata"] is None
    read = (await api("POST", READ, read_body("t", ["a", "b"]))).json()
    assert read["rows"] == [{"key": "a", "cells": {"z": 2}}]


async def test_mutate_of_keys_not_owned_answers_outdated_and_writes_nothing(api, owned):
    body = (
        await api("POST", MUTATE, mutate_body("u", {"op": "upsert", "key": "b", "cells": {}}))
    ).json()
    assert body["results"] == [{"key": "b", "status": "outdated", "error": None}]
    assert body["metadata"]["version"] == 3
    assert await in_thread(ChangeLogEntry.objects.count) == 0


async def test_mutate_in_a_frozen_range_answers_range_frozen_retryable(api, owned):
    await in_thread(freeze, "t", "", None)
    body = (
        await api("POST", MUTATE, mutate_body("t", {"op": "upsert", "key": "a", "cells": {}}))
    ).json()
    assert body["results"][0]["status"] == "error"
    assert body["results"][0]["error"]["code"] == "range_frozen"
    assert body["results"][0]["error"]["retryable"] is True


async def test_every_server_role_may_call_the_data_plane(api, owned):
    for role in ("client", "tablet", "master"):
        response = await api("POST", READ, read_body("t", []), role=role)
        assert response.status == 200, role


# --- health and export ---------------------------------------------------------------------------


async def test_health_reports_the_node_and_its_metadata_version(api, owned):
    response = await api("GET", HEALTH, role="master")
    assert response.status == 200
    assert response.json() == {
        "v": 1,
        "type": "tablet_health",
        "node_id": "test",
        "metadata_version": 3,
    }


async def test_export_pages_rows_for_tablet_and_master_tokens(api, owned):
    await seed("t", a={"i": 1}, b={"i": 2}, c={"i": 3})
    request = {"table": "t", "start": "", "end": None, "after": "a", "limit": 10}
    response = await api("POST", EXPORT, request, role="tablet")
    assert response.status == 200
    body = protocol.ExportResponse.model_validate(response.json())
    assert [(r.key, r.cells) for r in body.rows] == [("b", {"i": 2}), ("c", {"i": 3})]
    assert (await api("POST", EXPORT, request, role="master")).status == 200


async def test_export_refuses_a_client_token(api, owned):
    response = await api("POST", EXPORT, {"table": "t"}, role="client")
    assert response.status == 403
    assert response.json()["error"]["code"] == "token_wrong_role"


# --- rejections ----------------------------------------------------------------------------------


async def test_a_request_without_a_token_is_401_unauthenticated(api):
    response = await api("POST", READ, read_body("t", []), role=None)
    assert response.status == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_an_api_role_token_for_the_cluster_audience_is_403_token_wrong_role(api):
    token = auth.token_sign("someone", "api", audience=auth.server_audience())
    response = await api("POST", READ, read_body("t", []), token=token)
    assert response.status == 403
    assert response.json()["error"]["code"] == "token_wrong_role"


async def test_a_public_api_token_is_403_token_wrong_audience(api):
    response = await api("POST", READ, read_body("t", []), role="api")
    assert response.status == 403
    assert response.json()["error"]["code"] == "token_wrong_audience"


async def test_a_garbage_token_is_401_token_invalid(api):
    response = await api("POST", READ, read_body("t", []), token="not.a.jwt")
    assert response.status == 401
    assert response.json()["error"]["code"] == "token_invalid"


async def test_a_body_that_is_not_json_is_400_invalid_json(api):
    response = await api("POST", MUTATE, b"{not json")
    assert response.status == 400
    assert response.json()["error"]["code"] == "invalid_json"


async def test_an_unknown_field_is_400_validation_failed(api):
    body = {**read_body("t", ["a"]), "surprise": 1}
    response = await api("POST", READ, body)
    assert response.status == 400
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert error["detail"]["errors"][0]["loc"] == "surprise"


async def test_an_unknown_op_is_400_validation_failed(api):
    response = await api("POST", MUTATE, mutate_body("t", {"op": "explode", "key": "a"}))
    assert response.status == 400
    assert response.json()["error"]["code"] == "validation_failed"


async def test_a_body_over_the_limit_is_413(api, settings):
    settings.DISTDB_MAX_BODY_BYTES = 2048
    response = await api("POST", READ, read_body("t", ["k" * 100] * 30))
    assert response.status == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", READ, 405, "method_not_allowed"),
        ("POST", "/internal/v1/nope", 404, "not_found"),
    ],
)
async def test_unknown_routes_and_methods_are_refused(api, method, path, status, code):
    response = await api(method, path, read_body("t", []))
    assert (response.status, response.json()["error"]["code"]) == (status, code)


async def test_export_changes_returns_the_ranges_entries_after_a_seq(api, owned):
    from tablet_app.services import rows_mutate

    for key in ("a", "b", "x"):
        await in_thread(rows_mutate, "t", [protocol.Mutation(op="upsert", key=key, cells={"k": 1})])
    await in_thread(rows_mutate, "t", [protocol.Mutation(op="delete_row", key="a")])
    request = {"table": "t", "start": "", "end": "m", "after_seq": 0, "limit": 10}
    response = await api("POST", "/internal/v1/export-changes", request, role="tablet")
    assert response.status == 200
    body = protocol.ExportChangesResponse.model_validate(response.json())
    assert [(e.key, e.op) for e in body.entries] == [("a", "put"), ("b", "put"), ("a", "delete")]
    after = body.entries[1].seq
    request["after_seq"] = after
    again = protocol.ExportChangesResponse.model_validate(
        (await api("POST", "/internal/v1/export-changes", request, role="master")).json()
    )
    assert [(e.key, e.op) for e in again.entries] == [("a", "delete")]
    refused = await api("POST", "/internal/v1/export-changes", request, role="client")
    assert refused.status == 403


# --- revoked server tokens ------------------------------------------------------------------------


async def test_every_token_is_refused_until_the_master_has_sent_the_revoked_list(api, owned):
    from tablet_app.models import ServerTokenRevocations

    await in_thread(ServerTokenRevocations.objects.all().delete)
    for role in ("client", "tablet", "master"):
        response = await api("GET", HEALTH, role=role)
        assert response.status == 503
        assert response.json()["error"]["code"] == "revocations_unavailable"
        assert response.headers["retry-after"] == "1"


async def test_a_revoked_client_token_is_refused_and_other_tokens_still_pass(api, owned, tokens):
    from tablet_app.internal_api import app
    from tablet_app.services import revocations_store

    jti = auth.token_verify(tokens["client"], roles=("client",)).jti
    await in_thread(revocations_store, [jti])
    app.revoked.reset()  # as if a cache period went by
    response = await api("POST", READ, read_body("t", ["a"]), role="client")
    assert (response.status, response.json()["error"]["code"]) == (401, "token_revoked")
    assert (await api("GET", HEALTH, role="tablet")).status == 200
    rotated = auth.token_sign("client-1", "client")  # the same node's new token
    assert (await api("POST", READ, read_body("t", ["a"]), token=rotated)).status == 200

"""``Idempotency-Key`` on writes: a retried write is applied at most once (issue #9, defect 6).

The defect: a keyless add that the client retries after a 503 or a timeout made a second
row. With a key, every attempt inserts the same planned rows, and a finished request's
answer is returned again without applying anything.
"""

from __future__ import annotations

import pytest

from client_app.services import idempotency

ROWS = "/api/v1/tables/products/rows"


def rows_with(cluster, cells) -> list[str]:
    return [k for k, c in cluster.rows.get("products", {}).items() if c == cells]


def once(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def test_a_keyless_add_sent_twice_with_a_key_makes_one_row(api, cluster):
    first = await api("POST", ROWS, [{"cells": {"n": "a"}}], headers=once("k-1"))
    again = await api("POST", ROWS, [{"cells": {"n": "a"}}], headers=once("k-1"))
    assert first.status == again.status == 201
    assert again.json == first.json  # the same generated key, not a second row
    assert again.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(rows_with(cluster, {"n": "a"})) == 1


async def test_without_a_key_a_retried_add_makes_a_second_row_as_before(api, cluster):
    await api("POST", ROWS, [{"cells": {"n": "b"}}])
    await api("POST", ROWS, [{"cells": {"n": "b"}}])
    assert len(rows_with(cluster, {"n": "b"})) == 2


async def test_a_first_attempt_that_died_after_applying_is_completed_not_repeated(
    api, cluster, monkeypatch
):
    """The record says "pending" (the client server died before recording the answer):
    the retry applies the same plan, finds its own rows and reports them created."""
    real_write = idempotency._record_write
    calls = {"n": 0}

    async def dies_once(rkey, cells):
        if cells["state"] == "done" and calls["n"] == 0:
            calls["n"] += 1
            raise RuntimeError("the client server died here")
        await real_write(rkey, cells)

    monkeypatch.setattr(idempotency, "_record_write", dies_once)
    died = await api(
        "POST", ROWS, [{"cells": {"n": "c"}}, {"cells": {"n": "d"}}], headers=once("k-3")
    )
    assert died.status == 500
    assert len(rows_with(cluster, {"n": "c"})) == 1  # applied before it died
    retried = await api(
        "POST", ROWS, [{"cells": {"n": "c"}}, {"cells": {"n": "d"}}], headers=once("k-3")
    )
    assert retried.status == 201, retried.json
    assert [r["status"] for r in retried.json["results"]] == ["created", "created"]
    assert len(rows_with(cluster, {"n": "c"})) == len(rows_with(cluster, {"n": "d"})) == 1


async def test_a_planned_key_taken_by_other_cells_gets_a_new_key_recorded_first(api, cluster):
    taken = cluster.next_key  # the next fresh key: a user inserted it explicitly
    cluster.put("products", "int", taken, {"someone": "else"})
    answer = await api("POST", ROWS, [{"cells": {"n": "e"}}], headers=once("k-4"))
    assert answer.status == 201, answer.json
    [result] = answer.json["results"]
    assert result["key"] != taken and result["status"] == "created"
    assert cluster.get("products", "int", result["key"]) == {"n": "e"}
    assert cluster.get("products", "int", taken) == {"someone": "else"}
    again = await api("POST", ROWS, [{"cells": {"n": "e"}}], headers=once("k-4"))
    assert again.json == answer.json
    assert len(rows_with(cluster, {"n": "e"})) == 1


async def test_the_same_key_with_another_request_is_refused(api, cluster):
    assert (await api("POST", ROWS, [{"cells": {"n": 1}}], headers=once("k-5"))).status == 201
    other = await api("POST", ROWS, [{"cells": {"n": 2}}], headers=once("k-5"))
    assert (other.status, other.error_code) == (422, "idempotency_key_reused")
    elsewhere = await api("PATCH", f"{ROWS}/1", {"cells": {"n": 1}}, headers=once("k-5"))
    assert elsewhere.status == 422


async def test_a_finished_patch_is_answered_again_without_being_applied_again(api, cluster):
    cluster.put("products", "int", 7, {"v": 0})
    first = await api("PATCH", f"{ROWS}/7", {"cells": {"v": 1}}, headers=once("k-6"))
    assert first.status == 200
    await api("PATCH", f"{ROWS}/7", {"cells": {"v": 2}})  # someone else's later write
    again = await api("PATCH", f"{ROWS}/7", {"cells": {"v": 1}}, headers=once("k-6"))
    assert (again.status, again.json) == (200, first.json)
    assert cluster.get("products", "int", 7) == {"v": 2}  # not overwritten by the replay


async def test_a_final_error_is_recorded_and_answered_again(api, cluster):
    first = await api("DELETE", f"{ROWS}/424242", headers=once("k-7"))
    assert (first.status, first.error_code) == (404, "row_not_found")
    cluster.put("products", "int", 424242, {"late": True})
    again = await api("DELETE", f"{ROWS}/424242", headers=once("k-7"))
    assert (again.status, again.json) == (404, first.json)
    assert cluster.get("products", "int", 424242) == {"late": True}


async def test_batch_inserts_without_keys_are_planned_too(api, cluster):
    body = {
        "mutations": [{"op": "insert", "cells": {"b": 1}}, {"op": "upsert", "key": 3, "cells": {}}]
    }
    first = await api("POST", f"{ROWS}:batch", body, headers=once("k-8"))
    again = await api("POST", f"{ROWS}:batch", body, headers=once("k-8"))
    assert first.status == again.status == 200
    assert again.json == first.json
    assert len(rows_with(cluster, {"b": 1})) == 1


@pytest.mark.parametrize("bad", ["", "x" * 256, "naïve", "tab\there"])
async def test_a_bad_key_is_a_400(api, cluster, bad):
    answer = await api("POST", ROWS, [{"cells": {}}], headers={"Idempotency-Key": bad})
    assert (answer.status, answer.error_code) == (400, "invalid_idempotency_key")


async def test_the_system_table_is_hidden_and_its_prefix_reserved(api, cluster):
    await api("POST", ROWS, [{"cells": {"n": "f"}}], headers=once("k-9"))
    listed = await api("GET", "/api/v1/tables/")
    assert "_idempotency" not in [t["name"] for t in listed.json["tables"]]
    refused = await api("POST", "/api/v1/tables/", {"name": "_mine", "key_type": "int"})
    assert (refused.status, refused.error_code) == (400, "validation_failed")
    assert idempotency.TABLE in cluster.metadata.tables


async def test_an_answer_with_rows_that_failed_retryably_is_not_final(monkeypatch):
    """Some rows on a tablet server that was down: the retry must apply them, not get the
    partial answer back."""
    written: list[dict] = []

    async def record(rkey, cells):
        written.append(cells)

    monkeypatch.setattr(idempotency, "_record_write", record)
    partial = {
        "results": [
            {"key": 1, "status": "created", "error": None},
            {
                "key": 2,
                "status": "error",
                "error": {"code": "tablet_unavailable", "retryable": True},
            },
        ],
        "failed": 1,
    }

    async def run(planned, replaying):
        return idempotency.Answer(200, partial, {})

    await idempotency._finish("r", "fp", {}, run, replaying=False)
    assert written == []  # pending: a retry applies the plan again
    partial["results"][1]["error"]["retryable"] = False  # a definite refusal is final
    await idempotency._finish("r", "fp", {}, run, replaying=False)
    assert [c["state"] for c in written] == ["done"]

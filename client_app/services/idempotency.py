"""``Idempotency-Key`` on writes: a retried request is applied at most once (issue #9).

A client that sends a write, gets a timeout or a 503, and sends it again cannot know
whether the first one was applied; for a keyless add, sending it again made a second
row. As payment APIs do (Stripe's ``Idempotency-Key``), the client names the request
with a key of its choosing and may then send it as often as it likes:

* the first time, the request is recorded, *with the keys chosen for its keyless rows*
  (the "plan"), before anything is applied; then it is applied and its answer recorded;
* a retry finds the record: if the answer is there it is returned as it was, marked
  ``Idempotent-Replayed: true``, and nothing is applied again; if not (the first attempt
  died, or answered 5xx), the *same plan* is applied again. A planned row that exists
  with the planned cells is the first attempt's row, so it counts as created, not as a
  duplicate; a planned key taken by other cells (a user's explicit key) gets a new key,
  recorded before it is used;
* the same key with another request (method, path or body) is refused with 422
  ``idempotency_key_reused``.

Records are rows of the system table ``_idempotency`` (string keys: a hash of the API
token's subject and the client's key, so clients cannot see each other's), stored,
moved and collected like any row: any client server finds them, and they survive every
fault the data does. They are honoured ``DISTDB_IDEMPOTENCY_TTL_S`` (a day); an older
record is ignored, and the tablet server leading its range deletes it
(``tablet_app.services.expiry``).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings

from distdb.errors import DistdbError, IdempotencyKeyInvalid, IdempotencyKeyReused, TableExists
from distdb.keys import decode_key
from distdb.protocol import IDEMPOTENCY_TABLE, TableInfo

from .. import internal_client
from ..metadata_cache import metadata_cache
from .results import RowResult
from .rows import KEYGEN_RETRIES, keys_generate, rows_add, rows_batch, rows_read
from .tables import table_resolve

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TABLE = IDEMPOTENCY_TABLE
KEY_MAX = 255


@dataclass
class Answer:
    """What the API answered (or will answer): the status and the JSON body."""

    status: int
    body: Any
    headers: dict[str, str]


Plan = dict[str, Any]  # the request as it will be applied: its keyless rows given keys
Run = Callable[[Plan, bool], Awaitable[Answer]]  # (plan, replaying) -> answer


def idempotency_key(raw: str | None) -> str | None:
    """The header's value, checked; None when the request has none."""
    if raw is None:
        return None
    if not 1 <= len(raw) <= KEY_MAX or not raw.isascii() or not raw.isprintable():
        raise IdempotencyKeyInvalid()
    return raw


def fingerprint(method: str, path: str, body: Any) -> str:
    """What makes two requests the same request."""
    canonical = orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def record_key(subject: str, key: str) -> str:
    return hashlib.sha256(f"{subject}\0{key}".encode()).hexdigest()


async def idempotent(
    subject: str,
    key: str,
    fp: str,
    plan: Callable[[], Awaitable[Plan]],
    run: Run,
) -> Answer:
    """Answer a write at most once per (subject, key); see the module docstring."""
    await _table_ensure()
    rkey = record_key(subject, key)
    record = await _record_read(rkey)
    if record is None:
        planned = await plan()
        if await _record_create(rkey, fp, planned):
            return await _finish(rkey, fp, planned, run, replaying=False)
        record = await _record_read(rkey)  # another attempt created it meanwhile
        if record is None:
            raise DistdbError("the idempotency record vanished while it was being created")
    if record["fp"] != fp:
        raise IdempotencyKeyReused(key=key)
    if record["state"] == "done":
        headers = {**record.get("headers", {}), REPLAYED_HEADER: "true"}
        return Answer(record["status"], record["body"], headers)
    return await _finish(rkey, fp, record["plan"], run, replaying=True)


async def _finish(rkey: str, fp: str, planned: Plan, run: Run, *, replaying: bool) -> Answer:
    answer = await run(planned, replaying)
    # Final only if nothing in it is worth retrying: a 5xx, or rows that failed retryably
    # (a tablet server down), leave the record pending, so a retry applies the plan again
    # (its rows already in count as created) instead of returning the partial answer.
    if answer.status < 500 and not _retryable_rows(answer.body):
        await _record_write(rkey, {**_record(fp, planned, "done"), **_answer(answer)})
    return answer


def _retryable_rows(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    results = body.get("results")
    if results is None:  # every row failed alike: the error shape carries them
        results = ((body.get("error") or {}).get("detail") or {}).get("results") or []
    return any((r.get("error") or {}).get("retryable") for r in results if isinstance(r, dict))


async def plan_update(subject: str, key: str, fp: str, planned: Plan) -> None:
    """Record a changed plan (a planned key was taken) before the new keys are used."""
    await _record_write(record_key(subject, key), _record(fp, planned, "pending"))


# --- records -----------------------------------------------------------------------------------


def _record(fp: str, planned: Plan, state: str) -> dict[str, Any]:
    return {"fp": fp, "state": state, "plan": planned, "at": time.time()}


def _answer(answer: Answer) -> dict[str, Any]:
    return {"status": answer.status, "body": answer.body, "headers": answer.headers}


async def _table_ensure() -> None:
    if (await metadata_cache.get().get()).table(TABLE) is not None:
        return
    with contextlib.suppress(TableExists):  # made by another client server meanwhile
        await internal_client.master_table_create(TABLE, "str", None)
    await metadata_cache.get().refresh()


async def _record_read(rkey: str) -> dict[str, Any] | None:
    result = await rows_read(TABLE, [rkey])
    if result.failed:
        raise result.failed[0][1]
    if not result.rows:
        return None
    cells: dict[str, Any] = result.rows[0][1]
    if time.time() - float(cells.get("at", 0)) > settings.DISTDB_IDEMPOTENCY_TTL_S:
        return None  # expired: the key may name a new request
    return cells


async def _record_create(rkey: str, fp: str, planned: Plan) -> bool:
    """Insert the pending record; False if one exists (another attempt was first)."""
    [result] = await rows_add(TABLE, [{"key": rkey, "cells": _record(fp, planned, "pending")}])
    if result.error is None:
        return True
    if result.error.code == "row_exists":
        existing = await _record_read(rkey)
        if existing is None:  # an expired record: replace it
            await _record_write(rkey, _record(fp, planned, "pending"))
            return True
        return False
    raise result.error


async def _record_write(rkey: str, cells: dict[str, Any]) -> None:
    [result] = await rows_batch(TABLE, [{"op": "upsert", "key": rkey, "cells": cells}])
    if result.error is not None:
        raise result.error


# --- planned keys -----------------------------------------------------------------------------

Inserts = Callable[[dict[str, Any]], bool]  # which items are inserts (may need a fresh key)
Apply = Callable[[list[dict[str, Any]]], Awaitable[list[RowResult]]]
Replan = Callable[[Plan], Awaitable[None]]


async def keys_planned(table: str, items: list[dict[str, Any]], inserts: Inserts) -> Plan:
    """The request's items with a fresh key for every keyless insert, chosen now, so that
    every attempt inserts the same rows."""
    info = await table_resolve(table)
    need = [i for i, item in enumerate(items) if inserts(item) and item.get("key") is None]
    planned = [dict(item) for item in items]
    for i, key in zip(need, await _user_keys(table, info, len(need)), strict=True):
        planned[i]["key"] = key
    return {"items": planned, "generated": need}


async def planned_apply(table: str, planned: Plan, apply: Apply, replan: Replan) -> list[RowResult]:
    """Apply the planned items; a planned insert that meets its own row (an earlier
    attempt's) counts as created; one that meets other cells gets a new key, recorded
    (``replan``) before it is used."""
    info = await table_resolve(table)
    items: list[dict[str, Any]] = planned["items"]
    generated: list[int] = planned["generated"]
    results = await apply(items)
    for _ in range(KEYGEN_RETRIES):
        taken = [i for i in generated if _exists(results[i])]
        if not taken:
            break
        found = dict((await rows_read(table, [items[i]["key"] for i in taken])).rows)
        retry = []
        for i in taken:
            if found.get(items[i]["key"]) == items[i].get("cells"):
                results[i] = RowResult(items[i]["key"], "created")  # ours, from before
            else:
                retry.append(i)
        if not retry:
            break
        for i, key in zip(retry, await _user_keys(table, info, len(retry)), strict=True):
            items[i]["key"] = key
        await replan(planned)
        for i, result in zip(retry, await apply([items[i] for i in retry]), strict=True):
            results[i] = result
    return results


def _exists(result: RowResult) -> bool:
    return result.error is not None and result.error.code == "row_exists"


async def _user_keys(table: str, info: TableInfo, count: int) -> list[int | str]:
    return [decode_key(info.key_type, k) for k in await keys_generate(table, info, count)]


__all__ = [
    "HEADER",
    "REPLAYED_HEADER",
    "TABLE",
    "Answer",
    "IdempotencyKeyInvalid",
    "IdempotencyKeyReused",
    "Plan",
    "fingerprint",
    "idempotency_key",
    "idempotent",
    "keys_planned",
    "plan_update",
    "planned_apply",
]

"""Row services of the client server: read, add, set/delete cells, delete rows, batch.

Each service resolves the table, validates and encodes the keys (user keys -> stored keys,
``distdb.keys``), routes the work to the tablets through ``engine.route_keys`` and answers
with user keys, one result per requested row, in request order. Nothing is dropped: a row
is found, missing, or failed with an error saying why.

Mutations of one request are sent in "waves": the n-th mutation of each key goes in wave
n, so several mutations of one key apply in request order even when some are retried,
while everything inside a wave (distinct keys) runs concurrently, in chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.conf import settings

from distdb.errors import (
    DistdbError,
    InvalidKey,
    Outdated,
    PayloadTooLarge,
    RowNotFound,
    error_from_code,
)
from distdb.keys import decode_key, encode_key, parse_key_text
from distdb.protocol import (
    MutateRequest,
    MutateResponse,
    Mutation,
    MutationOp,
    MutationResult,
    ReadRequest,
    TableInfo,
    TabletAssignment,
)

from .. import validation
from ..coalesce import coalescer
from ..internal_client import tablet_call, tablet_read
from ..keygen import key_allocator
from .engine import WAIT_CODES, Batch, Send, route_keys
from .results import OK_STATUSES, RowResult
from .tables import table_resolve

# Mutations per tablet call: keeps each internal body far below the tablet's body limit
# and lets a big request use several of the tablet's worker threads.
CHUNK = 1000
# A generated key that somehow exists already (a user inserted it explicitly) is replaced.
KEYGEN_RETRIES = 3


# --- keys ---------------------------------------------------------------------------------------


def key_store(
    info: TableInfo, value: Any, loc: str, *, text: bool = False, lenient: bool = False
) -> str:
    """Validate a user key for this table and return its stored form.

    ``text``: the key came from a URL or query string. ``lenient``: accept integer keys
    written as JSON strings (the compatibility endpoint; its clients sent either).
    """
    try:
        if text or (lenient and info.key_type == "int" and isinstance(value, str)):
            return parse_key_text(info.key_type, value)
        validation.user_key(value, loc)
        return encode_key(info.key_type, value)
    except InvalidKey as exc:
        raise InvalidKey(exc.message, **exc.detail, loc=loc) from None


def rows_count_check(count: int, what: str = "rows") -> None:
    limit = settings.DISTDB_MAX_ROWS_PER_REQUEST
    if count > limit:
        raise PayloadTooLarge(f"at most {limit} {what} per request", limit=limit, count=count)
    if count == 0:
        raise validation.invalid(what, f"give at least one of {what}")


async def keys_generate(table: str, info: TableInfo, count: int) -> list[str]:
    """Stored forms of ``count`` fresh keys (see ``client_app.keygen``)."""
    if info.key_type == "int":
        return [encode_key("int", k) for k in await key_allocator.get().int_keys(table, count)]
    return key_allocator.get().str_keys(count)


# --- reads --------------------------------------------------------------------------------------


@dataclass
class ReadResult:
    # cells: a dict, or with ``raw_cells`` the stored JSON as an ``orjson.Fragment``
    rows: list[tuple[int | str, Any]] = field(default_factory=list)
    missing: list[int | str] = field(default_factory=list)
    failed: list[tuple[int | str, DistdbError]] = field(default_factory=list)


def _read_sender(table: str, keys: list[str]) -> Send:
    async def send(
        tablet: TabletAssignment, version: int, indexes: list[int], timeout_s: float
    ) -> Batch:
        request = ReadRequest(
            table=table, meta_version=version, keys=[keys[i] for i in indexes], cells="text"
        )
        merger = coalescer()
        if merger is not None:  # merged with concurrent reads of the same tablet server
            answer = await merger.read(tablet, request, timeout_s)
        else:
            answer = await tablet_read(tablet.url, tablet.server, request, timeout_s)
        found = dict(answer.rows)  # key -> cells as JSON text
        outdated = set(answer.outdated)
        batch = Batch(metadata=answer.metadata)
        for i in indexes:
            if keys[i] in outdated:
                batch.retry[i] = Outdated()
            else:
                batch.done[i] = found.get(keys[i])  # None: the row does not exist
        return batch

    return send


async def rows_read(
    table: str,
    keys: Sequence[Any],
    *,
    text: bool = False,
    lenient: bool = False,
    raw_cells: bool = False,
) -> ReadResult:
    """Read rows by key: found rows in request order, missing and failed keys reported.

    ``raw_cells``: each row's cells as the JSON the tablet stored (``orjson.Fragment``,
    for an answer encoded with orjson) instead of a dict - no parse and re-encode.
    """
    info = await table_resolve(table)
    rows_count_check(len(keys), "keys")
    stored = [
        key_store(info, k, f"keys.{i}", text=text, lenient=lenient) for i, k in enumerate(keys)
    ]
    unique = list(dict.fromkeys(stored))
    answers = dict(
        zip(unique, await route_keys(table, unique, _read_sender(table, unique)), strict=True)
    )
    result = ReadResult()
    for key in stored:
        user_key, answer = decode_key(info.key_type, key), answers[key]
        if isinstance(answer, DistdbError):
            result.failed.append((user_key, answer))
        elif answer is None:
            result.missing.append(user_key)
        else:
            result.rows.append(
                (user_key, orjson.Fragment(answer) if raw_cells else orjson.loads(answer))
            )
    return result


async def row_read(table: str, key: str, *, raw_cells: bool = False) -> dict[str, Any]:
    """One row by its key as text; ``row_not_found`` if it does not exist."""
    result = await rows_read(table, [key], text=True, raw_cells=raw_cells)
    if result.failed:
        raise result.failed[0][1]
    if result.missing:
        raise RowNotFound(f"no row {result.missing[0]!r} in table {table!r}", key=result.missing[0])
    user_key, cells = result.rows[0]
    return {"key": user_key, "cells": cells}


# --- mutations ----------------------------------------------------------------------------------


def waves(keys: Sequence[str]) -> list[list[int]]:
    """Indexes grouped so that wave n holds the n-th mutation of each key."""
    seen: dict[str, int] = {}
    grouped: list[list[int]] = []
    for i, key in enumerate(keys):
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n == len(grouped):
            grouped.append([])
        grouped[n].append(i)
    return grouped


def _mutate_sender(table: str, mutations: list[Mutation]) -> Send:
    async def call(
        version: int, tablet: TabletAssignment, indexes: list[int], timeout_s: float
    ) -> Batch:
        request = MutateRequest(
            table=table, meta_version=version, mutations=[mutations[i] for i in indexes]
        )
        try:
            answer = await tablet_call(
                tablet.url, tablet.server, request, MutateResponse, timeout_s=timeout_s
            )
        except DistdbError as exc:
            return Batch.failed(exc, indexes)
        if len(answer.results) != len(indexes):
            error = DistdbError(
                f"{tablet.server} answered {len(answer.results)} results"
                f" for {len(indexes)} mutations"
            )
            return Batch.failed(error, indexes)
        batch = Batch(metadata=answer.metadata)
        for i, result in zip(indexes, answer.results, strict=True):
            if result.status == "outdated":
                batch.retry[i] = Outdated()
            elif result.status == "error" and result.error and result.error.code in WAIT_CODES:
                batch.retry[i] = error_from_code(result.error.code, result.error.message)
            else:
                batch.done[i] = result
        return batch

    async def send(
        tablet: TabletAssignment, version: int, indexes: list[int], timeout_s: float
    ) -> Batch:
        chunks = [indexes[i : i + CHUNK] for i in range(0, len(indexes), CHUNK)]
        batch = Batch()
        for part in await asyncio.gather(*(call(version, tablet, c, timeout_s) for c in chunks)):
            batch.merge(part)
        return batch

    return send


async def mutations_apply(
    table: str, mutations: list[Mutation]
) -> list[MutationResult | DistdbError]:
    """Apply mutations (stored keys) on their tablets; one answer per mutation, in order."""
    results: list[Any] = [None] * len(mutations)
    for wave in waves([m.key for m in mutations]):
        batch = [mutations[i] for i in wave]
        answers = await route_keys(table, [m.key for m in batch], _mutate_sender(table, batch))
        for i, answer in zip(wave, answers, strict=True):
            results[i] = answer
    return results


def row_result(user_key: int | str, answer: MutationResult | DistdbError) -> RowResult:
    if isinstance(answer, DistdbError):
        return RowResult(user_key, "error", answer)
    if answer.status in OK_STATUSES:
        return RowResult(user_key, answer.status)
    info = answer.error
    if answer.status == "error" and info is not None:
        error = error_from_code(
            info.code, info.message, {"key": user_key}, retryable=info.retryable
        )
    elif answer.status == "error":
        error = DistdbError("the tablet server reported an error without details", key=user_key)
    else:
        error = DistdbError(f"unexpected status {answer.status!r}")
    return RowResult(user_key, "error", error)


async def _apply(table: str, info: TableInfo, mutations: list[Mutation]) -> list[RowResult]:
    answers = await mutations_apply(table, mutations)
    return [
        row_result(decode_key(info.key_type, m.key), a)
        for m, a in zip(mutations, answers, strict=True)
    ]


async def rows_add(
    table: str, rows: Sequence[dict[str, Any]], *, lenient: bool = False
) -> list[RowResult]:
    """Insert rows ``{"key"?, "cells"}``; rows without a key get a fresh unique one.

    An explicit key that exists fails that row with ``row_exists``.
    """
    info = await table_resolve(table)
    rows_count_check(len(rows))
    ops: list[Op] = []
    for i, row in enumerate(rows):
        validation.columns_allowed(info, row["cells"])
        key = row.get("key")
        stored = key_store(info, key, f"{i}.key", lenient=lenient) if key is not None else None
        ops.append(("insert", stored, row["cells"], None))
    return await _apply_with_fresh_keys(table, info, ops)


# (op, stored key or None for a fresh one, cells, columns)
Op = tuple[MutationOp, str | None, dict[str, Any] | None, list[str] | None]


async def _apply_with_fresh_keys(table: str, info: TableInfo, ops: list[Op]) -> list[RowResult]:
    """Apply ``ops`` in order; those without a key get fresh keys.

    A fresh key that exists already (a user gave it explicitly: the table's key counter
    knows nothing of explicit keys) is replaced by another, at most ``KEYGEN_RETRIES``
    times, and the allocator is told, so its next keys start above it. Fresh keys are
    unique, so retrying them alone keeps every explicit key's mutations in order.
    """
    stored = {i: key for i, (_, key, _, _) in enumerate(ops) if key is not None}
    fresh = {i for i in range(len(ops)) if i not in stored}
    results: list[RowResult | None] = [None] * len(ops)
    todo = list(range(len(ops)))
    for attempt in range(KEYGEN_RETRIES + 1):
        need = [i for i in todo if i not in stored]
        for i, key in zip(need, await keys_generate(table, info, len(need)), strict=True):
            stored[i] = key
        wire = [
            Mutation(op=ops[i][0], key=stored[i], cells=ops[i][2], columns=ops[i][3]) for i in todo
        ]
        again = []
        for i, result in zip(todo, await _apply(table, info, wire), strict=True):
            collided = result.error is not None and result.error.code == "row_exists"
            if i in fresh and collided and attempt < KEYGEN_RETRIES:
                _key_taken(table, info, stored.pop(i))
                again.append(i)
            else:
                results[i] = result
        todo = again
        if not todo:
            break
    return [r for r in results if r is not None]


def _key_taken(table: str, info: TableInfo, stored: str) -> None:
    if info.key_type == "int":
        key = decode_key("int", stored)
        assert isinstance(key, int)
        key_allocator.get().collided(table, key)


async def _apply_to_keys(
    table: str,
    keys: Sequence[Any],
    op: MutationOp,
    *,
    cells: dict[str, Any] | None = None,
    columns: list[str] | None = None,
    text: bool,
    lenient: bool,
) -> list[RowResult]:
    """Apply one mutation (``op`` with these cells or columns) to the row of every key."""
    info = await table_resolve(table)
    rows_count_check(len(keys), "keys")
    validation.columns_allowed(info, cells or columns or ())
    mutations = [
        Mutation(
            op=op,
            key=key_store(info, k, f"keys.{i}", text=text, lenient=lenient),
            cells=cells,
            columns=columns,
        )
        for i, k in enumerate(keys)
    ]
    return await _apply(table, info, mutations)


async def cells_set(
    table: str,
    keys: Sequence[Any],
    cells: dict[str, Any],
    *,
    text: bool = False,
    lenient: bool = False,
) -> list[RowResult]:
    """Merge ``cells`` into each row (``row_not_found`` for a row that does not exist)."""
    return await _apply_to_keys(table, keys, "set", cells=cells, text=text, lenient=lenient)


async def cells_delete(
    table: str,
    keys: Sequence[Any],
    columns: list[str],
    *,
    text: bool = False,
    lenient: bool = False,
) -> list[RowResult]:
    """Remove ``columns`` from each row."""
    return await _apply_to_keys(
        table, keys, "delete_cells", columns=columns, text=text, lenient=lenient
    )


async def rows_delete(
    table: str, keys: Sequence[Any], *, text: bool = False, lenient: bool = False
) -> list[RowResult]:
    """Delete rows; a row that does not exist fails with ``row_not_found``."""
    results = await _apply_to_keys(table, keys, "delete_row", text=text, lenient=lenient)
    for r in results:
        if r.status == "unchanged":  # nothing was there to delete
            r.status, r.error = "error", RowNotFound(f"no row {r.key!r} in table {table!r}")
    return results


async def rows_batch(table: str, mutations: Sequence[dict[str, Any]]) -> list[RowResult]:
    """Apply many mutations ``{"op", "key", "cells"?, "columns"?}`` (shape already checked).

    ``insert`` without a key gets a fresh one. Mutations of one key apply in order.
    """
    info = await table_resolve(table)
    rows_count_check(len(mutations), "mutations")
    ops: list[Op] = []
    for i, m in enumerate(mutations):
        validation.columns_allowed(info, m.get("cells") or ())
        validation.columns_allowed(info, m.get("columns") or ())
        key = m.get("key")
        stored = key_store(info, key, f"mutations.{i}.key") if key is not None else None
        ops.append((m["op"], stored, m.get("cells"), m.get("columns")))
    return await _apply_with_fresh_keys(table, info, ops)

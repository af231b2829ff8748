"""The compatibility endpoint of the original system: ``POST /api/v1/client/send-db-query``.

Clients of the original Node.js system sent ``{"queryTitle", "queryBody": {"ids", "data"}}``
and got ``{"status": "success", "count": n, "data": [...]}``. Same request and answer shape
here, on the original's only table ``products``, but correct: every id is handled (on
any number of tablets), and rows that failed are reported as failures (``errors``, and
``status`` "partial" or "error") instead of being counted as successes.

Row objects are the original's documents: ``{"id": <key>, <column>: <value>, ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distdb.errors import DistdbError

from .. import validation
from .results import RowResult, error_brief, results_outcome
from .rows import cells_delete, cells_set, rows_add, rows_delete, rows_read

TABLE = "products"
TITLES = ("read-rows", "add-rows", "set", "delete-cells", "delete-rows")


@dataclass
class CompatAnswer:
    status: int
    body: dict[str, Any]
    error: DistdbError | None  # every id failed alike: rendered with its headers


def _ids(body: dict[str, Any]) -> list[Any]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids:
        raise validation.invalid("queryBody.ids", "give a non-empty list of ids")
    for i, value in enumerate(ids):
        validation.user_key(value, f"queryBody.ids.{i}")
    return ids


def _no_data(body: dict[str, Any], title: str) -> None:
    if body.get("data") is not None:
        raise validation.invalid("queryBody.data", f"{title} takes no data")


def _rows_from_data(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not data:
        raise validation.invalid("queryBody.data", "give a non-empty list of row objects")
    rows = []
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise validation.invalid(f"queryBody.data.{i}", "a row is an object")
        cells = {name: value for name, value in obj.items() if name != "id"}
        validation.cells(cells, f"queryBody.data.{i}")
        rows.append({"key": obj.get("id"), "cells": cells})
    return rows


def _answer(
    data: list[dict[str, Any]], errors: list[dict[str, Any]], results: list[RowResult], **extra: Any
) -> CompatAnswer:
    outcome = results_outcome(results)
    status = "success" if not errors else ("error" if not data else "partial")
    body: dict[str, Any] = {
        "status": status,
        "count": len(data),
        "data": data,
        "errors": errors,
        **extra,
    }
    if outcome.error is not None:
        body.update(outcome.error.as_dict())
        return CompatAnswer(outcome.error.status, body, outcome.error)
    return CompatAnswer(200, body, None)


def _write_answer(results: list[RowResult]) -> CompatAnswer:
    data = [{"id": r.key, "status": r.status} for r in results if r.error is None]
    errors = [{"id": r.key, **error_brief(r.error)} for r in results if r.error is not None]
    return _answer(data, errors, results)


async def db_query(title: str, body: dict[str, Any]) -> CompatAnswer:
    """Run one query of the original system (``title`` is one of ``TITLES``)."""
    validation.only_fields(body, ("ids", "data"), "queryBody")
    if title == "read-rows":
        _no_data(body, title)
        read = await rows_read(TABLE, _ids(body), lenient=True)
        data = [{**cells, "id": key} for key, cells in read.rows]
        errors = [{"id": key, **error_brief(error)} for key, error in read.failed]
        # Missing rows are not failures; only failures decide the HTTP status.
        results = [RowResult(key, "error", error) for key, error in read.failed]
        results += [RowResult(key, "unchanged") for key, _ in read.rows]
        results += [RowResult(key, "unchanged") for key in read.missing]
        return _answer(data, errors, results, missing=read.missing)
    if title == "add-rows":
        if body.get("ids"):
            raise validation.invalid("queryBody.ids", "add-rows takes the ids inside data")
        return _write_answer(await rows_add(TABLE, _rows_from_data(body.get("data")), lenient=True))
    if title == "set":
        cells = validation.cells(body.get("data"), "queryBody.data", allow_empty=False)
        return _write_answer(await cells_set(TABLE, _ids(body), cells, lenient=True))
    if title == "delete-cells":
        columns = validation.columns(body.get("data"), "queryBody.data")
        return _write_answer(await cells_delete(TABLE, _ids(body), columns, lenient=True))
    if title == "delete-rows":
        _no_data(body, title)
        return _write_answer(await rows_delete(TABLE, _ids(body), lenient=True))
    raise validation.invalid("queryTitle", f"queryTitle is one of {', '.join(TITLES)}")

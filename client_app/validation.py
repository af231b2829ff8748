"""Plain, fast checks of user input shared by the serializers and the services.

Loaded by the client server role. A request may carry 10,000 rows, so per-row checks
are plain Python (no serializer per row). Every failure raises ``ValidationFailed``
naming where it happened (``errors: [{"loc", "msg"}]``, the shape of the internal APIs).
Checks against a table (key type, allowed columns) live in the services, which know it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from distdb.errors import ColumnNotAllowed, ValidationFailed
from distdb.protocol import TableInfo

MAX_COLUMN_CHARS = 128
# Arrays and objects a cell value may nest (MongoDB's limit for a document, which the
# original system stored). Every server re-encodes cells inside its wire messages, and
# pydantic and orjson refuse JSON nested ~200-250 deep: a deeper value would be accepted
# here, then make its row unreadable and stop the master collecting its tablet's changes.
MAX_VALUE_DEPTH = 100


def invalid(loc: str, msg: str) -> ValidationFailed:
    return ValidationFailed(f"{loc}: {msg}" if loc else msg, errors=[{"loc": loc, "msg": msg}])


def user_key(value: Any, loc: str) -> int | str:
    """A row key as JSON gives it: an integer or a string (the table decides which)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise invalid(loc, "a key is an integer or a string")
    return value


def column_name(value: Any, loc: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid(loc, "a column name is a non-empty string")
    if len(value) > MAX_COLUMN_CHARS:
        raise invalid(loc, f"a column name has at most {MAX_COLUMN_CHARS} characters")
    return value


def cells(value: Any, loc: str, *, allow_empty: bool = True) -> dict[str, Any]:
    """Cells: an object of column name -> any JSON value (stored as given)."""
    if not isinstance(value, dict):
        raise invalid(loc, "cells is an object of column name -> JSON value")
    if not value and not allow_empty:
        raise invalid(loc, "give at least one cell")
    for name, cell in value.items():
        column_name(name, f"{loc}.{name}" if isinstance(name, str) else loc)
        if isinstance(cell, dict | list) and _nests_deeper(cell, MAX_VALUE_DEPTH):
            raise invalid(
                f"{loc}.{name}".strip("."),
                f"a cell value nests at most {MAX_VALUE_DEPTH} arrays and objects",
            )
    return value


def _nests_deeper(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether a JSON array/object nests more than ``limit`` arrays and objects."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def columns(value: Any, loc: str) -> list[str]:
    """A non-empty list of column names."""
    if not isinstance(value, list) or not value:
        raise invalid(loc, "give a non-empty list of column names")
    for i, name in enumerate(value):
        column_name(name, f"{loc}.{i}")
    return value


def only_fields(value: dict[str, Any], allowed: Iterable[str], loc: str) -> None:
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise invalid(f"{loc}.{unknown[0]}" if loc else unknown[0], "unknown field")


def columns_allowed(info: TableInfo, names: Iterable[str]) -> None:
    """Reject columns the table does not allow (``TableInfo.columns``; None = any)."""
    if info.columns is None:
        return
    allowed = set(info.columns)
    bad = sorted({name for name in names if name not in allowed})
    if bad:
        raise ColumnNotAllowed(
            f"the table does not allow column(s) {', '.join(map(repr, bad[:10]))}",
            columns=bad[:50],
            allowed=list(info.columns),
        )

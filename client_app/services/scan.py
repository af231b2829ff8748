"""Range scans of the client server: rows of [start, end) in key order, page by page.

Tablets are visited in key order, one after the other, each asked for no more than
what the page still needs (plus one row, to know whether more follow): a page of 100
rows costs one call when it fits in one tablet. Integer keys are stored zero-padded
(``distdb.keys``), so byte order is numeric order.

The continuation ``cursor`` is opaque to users: URL-safe base64 of the table, the stored
key the next page starts at, and the end of the range.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings

from distdb.errors import DistdbError, InvalidCursor
from distdb.keys import decode_key, parse_key_text
from distdb.protocol import ScanRequest, ScanTextResponse

from .. import validation
from ..internal_client import is_not_sent, tablet_scan
from ..metadata_cache import metadata_cache
from .engine import (
    RETRY_CODES,
    WAIT_CODES,
    backoff_s,
    call_timeout_s,
    exhausted,
    master_reroute,
    metadata_in,
)
from .tables import table_resolve

DEFAULT_LIMIT = 100


@dataclass
class ScanPage:
    rows: list[dict[str, Any]]
    cursor: str | None  # None: the range is exhausted


def cursor_encode(table: str, start: str, end: str | None) -> str:
    raw = orjson.dumps({"t": table, "s": start, "e": end})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def cursor_decode(table: str, cursor: str) -> tuple[str, str | None]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
        start, end = data["s"], data["e"]
        if data["t"] != table or not isinstance(start, str) or not isinstance(end, str | None):
            raise ValueError
    except (binascii.Error, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise InvalidCursor() from None
    return start, end


async def rows_scan(
    table: str,
    *,
    start: str | None = None,
    end: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> ScanPage:
    """One page of the rows of [start, end) (keys as text; None: open end) in key order."""
    info = await table_resolve(table)
    if not 1 <= limit <= settings.DISTDB_MAX_SCAN_LIMIT:
        raise validation.invalid(
            "limit", f"limit is between 1 and {settings.DISTDB_MAX_SCAN_LIMIT}"
        )
    if cursor is not None:
        if start is not None or end is not None:
            raise validation.invalid("cursor", "a cursor replaces start and end; send it alone")
        position, end_key = cursor_decode(table, cursor)
    else:
        position = "" if start is None else parse_key_text(info.key_type, start)
        end_key = None if end is None else parse_key_text(info.key_type, end)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.DISTDB_ROUTING_DEADLINE_S
    cache = metadata_cache.get()
    routing = await cache.get()
    rows: list[Any] = []
    next_cursor: str | None = None
    failures = 0
    while end_key is None or position < end_key:
        tablet = routing.locate(table, position)
        error: DistdbError | None = None
        answer: ScanTextResponse | None = None
        if tablet is not None:
            sub_end = tablet.end if end_key is None else min(end_key, tablet.end or end_key)
            want = limit - len(rows)
            request = ScanRequest(
                table=table,
                meta_version=routing.version,
                start=position,
                end=sub_end,
                limit=want + 1,
                cells="text",  # passed on as the stored JSON text, never parsed here
            )
            try:
                answer = await tablet_scan(
                    tablet.url, tablet.server, request, timeout_s=call_timeout_s(deadline)
                )
            except DistdbError as exc:
                if exc.code not in RETRY_CODES and not is_not_sent(exc):
                    raise
                error = exc
        if answer is not None and not answer.outdated:
            rows.extend(answer.rows[:want])
            if len(answer.rows) > want:  # the page is full and this row comes next
                next_cursor = cursor_encode(table, answer.rows[want][0], end_key)
                break
            if tablet is None or tablet.end is None:
                break
            position = tablet.end
            continue

        # Outdated, not served in this version, or unreachable: re-route this position.
        failures += 1
        before = routing.version
        metadata = (
            answer.metadata if answer is not None else (metadata_in(error) if error else None)
        )
        routing = cache.adopt(metadata) or routing
        if routing.version == before:
            # A dead or frozen tablet asks the master at most once a second.
            unreachable = error is not None and (is_not_sent(error) or error.code in WAIT_CODES)
            routing = await master_reroute(routing, table, unreachable=unreachable)
        if error is not None and is_not_sent(error) and routing.version == before:
            raise error  # the tablet is down and the range did not move
        delay = 0.0 if routing.version > before else backoff_s(failures)
        if failures >= settings.DISTDB_ROUTING_MAX_TRIES or loop.time() + delay >= deadline:
            raise exhausted(error or DistdbError(), failures)
        if delay:
            await asyncio.sleep(delay)
    return ScanPage(
        [
            {"key": decode_key(info.key_type, key), "cells": orjson.Fragment(text)}
            for key, text in rows
        ],
        next_cursor,
    )

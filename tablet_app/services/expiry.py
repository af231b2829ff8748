"""Delete Idempotency-Key records older than ``DISTDB_IDEMPOTENCY_TTL_S``.

A client server records every write sent with an ``Idempotency-Key`` as a row of the
system table ``_idempotency`` (``client_app.services.idempotency``) and ignores a record
once it is older than the TTL, but nothing deleted them: the table grew by a row per
keyed write, forever. Each tablet server deletes the expired records of the ranges it
*leads*, through the ordinary write path (``rows_mutate``): the deletes are logged,
replicated to the followers and collected by the master like any other write, and a
follower never deletes on its own. The delete is conditional on the row, read under the
write lock, still being expired: a record a client rewrote meanwhile is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings

from distdb import protocol
from distdb.protocol import IDEMPOTENCY_TABLE
from tablet_app.models import OwnedRange, Row
from tablet_app.services.rows import rows_mutate

log = logging.getLogger(__name__)
BATCH = 500  # deletes per write: short transactions between the clients' writes


def _expired_before(cutoff: float) -> Callable[[dict[str, Any]], bool]:
    def expired(cells: dict[str, Any]) -> bool:
        try:
            return float(cells.get("at", 0)) < cutoff
        except (TypeError, ValueError):
            return False  # not a record this code wrote: never deleted

    return expired


def idempotency_records_expire(now: float | None = None) -> int:
    """Delete the expired records of the ranges led here; returns how many went."""
    cutoff = (time.time() if now is None else now) - settings.DISTDB_IDEMPOTENCY_TTL_S
    expired = _expired_before(cutoff)
    deleted = 0
    for start, end in OwnedRange.objects.filter(table=IDEMPOTENCY_TABLE).values_list(
        "start_key", "end_key"
    ):
        rows = Row.objects.filter(table=IDEMPOTENCY_TABLE, key__gte=start)
        if end is not None:
            rows = rows.filter(key__lt=end)
        keys = [
            key
            for key, text in rows.order_by("key").values_list("key", "cells").iterator()
            if expired(orjson.loads(text) if text else {})
        ]
        for i in range(0, len(keys), BATCH):
            deletes = [protocol.Mutation(op="delete_row", key=k) for k in keys[i : i + BATCH]]
            result = rows_mutate(IDEMPOTENCY_TABLE, deletes, only_if=expired)
            deleted += sum(r["status"] == "deleted" for r in result.results)
    if deleted:
        log.info("deleted %d expired idempotency record(s)", deleted)
    return deleted

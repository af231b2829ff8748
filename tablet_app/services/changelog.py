"""The change log's writers and the one way entries are applied to rows.

Loaded by the tablet server role. Split from ``control`` so that ``ownership`` (a new
leader's snapshot) and ``replication`` (a follower's apply) can use it without import
cycles.

The log is the master's only view of writes, so its order matters:
``ChangeLogEntry.seq`` must grow in *commit* order, or a reader that has seen seq N
could later miss an entry N-1 committed after it. SQLite serializes writers, so it
does. PostgreSQL hands out sequence values at insert time, so appends take an
exclusive advisory lock held until commit (``changes_append``): the tail of
concurrent writes commits one at a time, in seq order.

Entries are full row images, plus ``clear`` (delete every row of [key, cells["end"])),
which a new leader of a replicated range writes before a full image of each of its rows
(``changes_snapshot``): whoever applies the log — the master's copy, a follower, a move's
catch-up — ends with exactly the leader's rows, whatever it held before.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from distdb import protocol
from distdb.journal import enabled as journal_enabled
from distdb.journal import journal
from distdb.sqlbulk import insert_many
from tablet_app.models import ChangeLogEntry, Row
from tablet_app.services.locks import advisory_lock

BATCH = 1000
_LOG_LOCK = "distdb.tablet.changelog"


def changes_append(table: str, changes: Sequence[tuple[str, str, str | None]]) -> int:
    """Append (key, op, cells JSON text or None) entries; call inside the row's transaction.
    Returns the seq of the last entry (0 if none).

    On PostgreSQL this takes the change-log lock until commit (module docstring), so
    call it last in the transaction, after the row work.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("changes_append must run in the transaction of the row change")
    if not changes:
        return 0
    advisory_lock([_LOG_LOCK], shared=False)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    insert_many(
        ChangeLogEntry,
        ["table", "key", "op", "cells", "created_at"],
        [(table, k, op, text, now) for k, op, text in changes],
    )
    return _last_seq()


def _last_seq() -> int:
    """The highest seq (in this transaction, which holds the log's write lock)."""
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MAX({qn('seq')}) FROM {qn(ChangeLogEntry._meta.db_table)}")
        return int(cursor.fetchone()[0] or 0)


def changes_snapshot(table: str, start: str, end: str | None) -> int:
    """Log a ``clear`` of [start, end) and then a ``put`` of each of its rows; returns the
    last seq. Call inside the transaction that makes this server the range's leader."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("changes_snapshot must run in the transaction of the ownership change")
    advisory_lock([_LOG_LOCK], shared=False)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    log, rows, qn = ChangeLogEntry._meta.db_table, Row._meta.db_table, connection.ops.quote_name
    insert_many(
        ChangeLogEntry,
        ["table", "key", "op", "cells", "created_at"],
        [(table, start, "clear", orjson.dumps({"end": end}).decode(), now)],
    )
    cols = ", ".join(qn(c) for c in ("table", "key", "op", "cells", "created_at"))
    sql = (
        f"INSERT INTO {qn(log)} ({cols}) SELECT {qn('table')}, {qn('key')}, 'put', "
        f"{qn('cells')}, %s FROM {qn(rows)} WHERE {qn('table')} = %s AND {qn('key')} >= %s"
    )
    params: list[Any] = [now, table, start]
    if end is not None:
        sql += f" AND {qn('key')} < %s"
        params.append(end)
    with connection.cursor() as cursor:
        cursor.execute(sql + f" ORDER BY {qn('key')}", params)
    return _last_seq()


def clear_end(entry: protocol.ChangeEntry) -> str | None:
    """The end of a ``clear`` entry's range (None: the end of the key space)."""
    end = (entry.cells or {}).get("end")
    return end if isinstance(end, str) else None


def entries_apply(
    table: str, entries: Sequence[protocol.ChangeEntry], start: str = "", end: str | None = None
) -> int:
    """Apply entries of ``table`` (any order given; applied in seq order) to the rows,
    without logging them, limited to [start, end). Call inside a transaction.

    Full images: only each key's last entry since the last ``clear`` matters, so the work
    is one bulk upsert and one delete per stretch between clears. Returns how many entries.
    """
    pending: dict[str, protocol.ChangeEntry] = {}

    def flush() -> None:
        puts = {k: orjson.dumps(e.cells).decode() for k, e in pending.items() if e.op == "put"}
        deletes = sorted(k for k, e in pending.items() if e.op == "delete")
        rows_upsert(table, puts)
        for i in range(0, len(deletes), BATCH):
            Row.objects.filter(table=table, key__in=deletes[i : i + BATCH]).delete()
        pending.clear()

    def inside(key: str) -> bool:
        return key >= start and (end is None or key < end)

    for entry in sorted(entries, key=lambda e: e.seq):
        if entry.op == "clear":
            flush()
            lo, hi = max(entry.key, start), _min_end(clear_end(entry), end)
            if hi is None or lo < hi:
                qs = Row.objects.filter(table=table, key__gte=lo)
                qs = qs if hi is None else qs.filter(key__lt=hi)
                if journal_enabled():
                    gone = list(qs.values_list("key", flat=True))
                    journal("clear", table=table, seq=entry.seq, start=lo, end=hi, keys=gone)
                qs.delete()
        elif inside(entry.key):
            pending[entry.key] = entry
    flush()
    return len(entries)


def _min_end(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def rows_upsert(table: str, cells_by_key: dict[str, str]) -> None:
    """Insert or replace rows (key -> cells JSON text); call inside a transaction."""
    qn = connection.ops.quote_name
    # INSERT ... ON CONFLICT (table, key) DO UPDATE: the same SQL on SQLite and
    # PostgreSQL, and race-free against a concurrent insert of the same key.
    insert_many(
        Row,
        ["table", "key", "cells"],
        [(table, k, text) for k, text in sorted(cells_by_key.items())],  # lock order: by key
        suffix=(
            f" ON CONFLICT ({qn('table')}, {qn('key')})"
            f" DO UPDATE SET {qn('cells')} = excluded.{qn('cells')}"
        ),
    )


# --- how far the leader's shipper got (``replication``) -----------------------------------------


def shipped_path() -> Path:
    return Path(settings.DISTDB_DATA_DIR) / "run" / f"{settings.DISTDB_NODE_ID}.shipped"


def shipped_store(seq: int) -> None:
    """Record that every entry up to ``seq`` is on every in-sync follower (the shipper).

    A file, not a row: it is written after every batch and needs no durability — after a
    crash an older value only holds trims back more (the shipper starts over from the
    oldest entry anyway)."""
    path = shipped_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(str(seq))
    tmp.replace(path)


def shipped_read() -> int:
    """The shipper's last recorded position (0: none recorded)."""
    try:
        return int(shipped_path().read_text().strip() or 0)
    except (OSError, ValueError):
        return 0

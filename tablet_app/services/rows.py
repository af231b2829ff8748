"""The tablet server's data plane: read, scan and mutate rows of the ranges it owns.

Loaded by the tablet server role; called from ``tablet_app.internal_api`` in one
worker-thread hop per request. Performance notes (DESIGN §9): rows are fetched with
one ``IN (...)`` query per 500 keys, cells stay the JSON text they were stored as
(rendered with ``orjson.Fragment``, never parsed on a read), and a whole mutate
request is one transaction with bulk inserts, updates and deletes.

Consistency:

* A write checks ownership and freezes inside its own transaction, under the lock
  described in ``ownership`` — a freeze or ownership change committed by the link
  agent never interleaves with it. The row changes and their change-log entries
  commit together; results are returned only after the commit.
* Reads run in autocommit (on SQLite a transaction would take the write lock). A read
  of up to ``CHUNK`` keys reads the owned ranges and the rows in ONE statement
  (``_snapshot``), so both come from one snapshot of the database: the ranges it
  checks are exactly those that held when the rows were read. Bigger reads and scans
  take the owned ranges, then the rows, then the owned ranges again, and start over if
  ownership changed meanwhile. Either way a read never answers for a range that was
  given away (and possibly dropped) while it ran. The one statement also saves two
  queries: a read of 1-16 keys costs the tablet ~30-50% less (measured in-process,
  ``docs/performance.md``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, ClassVar

import orjson
from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction

from distdb import protocol
from distdb.errors import (
    LeaderUnavailable,
    RangeFrozen,
    ReplicationUnconfirmed,
    ValidationFailed,
)
from distdb.journal import enabled as journal_enabled
from distdb.journal import journal
from distdb.sqlbulk import insert_many
from tablet_app.models import Row
from tablet_app.services.changelog import changes_append
from tablet_app.services.ownership import (
    SPAN_COLUMNS,
    Span,
    Spans,
    metadata_wire,
    span_of_row,
    spans_for_write,
    spans_read,
    spans_select,
)
from tablet_app.services.replication import Ticket, shipper, spans_serving

__all__ = [
    "MustWait",
    "MutateResult",
    "ReadResult",
    "ScanResult",
    "WireResult",
    "rows_mutate",
    "rows_read",
    "rows_scan",
]

log = logging.getLogger(__name__)

CHUNK = 500  # keys per IN (...) query: well under every database's bound-parameter limit
_READ_TRIES = 5
_WRITE_TRIES = 10
_RETRY_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock (PostgreSQL)
PENDING_WAIT_S = 1.0  # a read of a key whose write is being replicated waits this long


class MustWait(Exception):
    """A read called with ``wait=False`` would have to wait for a write of its keys that
    is still being replicated. The caller reads again where waiting holds up no one
    (``tablet_app.internal_api``: the reads' one thread hands such a read to the general
    pool). Not an error of the request: it never reaches a client."""


# --- results --------------------------------------------------------------------------------------


@dataclass(slots=True)
class WireResult:
    """Base of the results: ``as_wire`` is the reply body, ``v`` and ``type`` then the
    fields in order, with ``rows`` as (key, cells JSON text) pairs whose cells are
    embedded without re-encoding."""

    wire_type: ClassVar[str]

    def as_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"v": protocol.PROTOCOL_VERSION, "type": self.wire_type}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "rows":
                value = [{"key": k, "cells": orjson.Fragment(c)} for k, c in value]
            body[f.name] = value
        return body


@dataclass(slots=True)
class ReadResult(WireResult):
    """Rows as (key, cells JSON text) in request order, keys not owned, and metadata if any:
    a ``protocol.ReadResponse``."""

    wire_type = "read_result"
    rows: list[tuple[str, str]]
    outdated: list[str]
    metadata: dict[str, Any] | None = None

    def as_text_wire(self) -> dict[str, Any]:
        """The reply body as a ``protocol.ReadTextResponse``: cells stay JSON text."""
        return {
            "v": protocol.PROTOCOL_VERSION,
            "type": "read_text_result",
            "rows": self.rows,
            "outdated": self.outdated,
            "metadata": self.metadata,
        }


@dataclass(slots=True)
class ScanResult(WireResult):
    """Rows of the range in key order, or ``outdated`` with the metadata: a
    ``protocol.ScanResponse``."""

    wire_type = "scan_result"
    rows: list[tuple[str, str]]
    outdated: bool = False
    metadata: dict[str, Any] | None = None

    def as_text_wire(self) -> dict[str, Any]:
        """The reply body as a ``protocol.ScanTextResponse``: cells stay JSON text."""
        return {
            "v": protocol.PROTOCOL_VERSION,
            "type": "scan_text_result",
            "rows": self.rows,
            "outdated": self.outdated,
            "metadata": self.metadata,
        }


@dataclass(slots=True)
class MutateResult(WireResult):
    """One ``protocol.MutationResult`` (as its wire dict) per mutation, in request order: a
    ``protocol.MutateResponse``."""

    wire_type = "mutate_result"
    results: list[dict[str, Any]]
    metadata: dict[str, Any] | None = None


# --- reads ----------------------------------------------------------------------------------------


def rows_read(table: str, keys: Sequence[str], *, wait: bool = True) -> ReadResult:
    """Read rows by stored key.

    Rows come in request order, one per request position (a key asked twice is
    returned twice); keys without a row are absent. Keys this server does not own
    are listed once each in ``outdated`` and the newest metadata is attached. A key
    in a range frozen for a move raises ``RangeFrozen`` (the client server retries):
    the new owner may already serve it, so this copy must not answer (``freezes``).
    A key of a replicated range whose write is still being replicated is waited for
    (``PENDING_WAIT_S``), or, with ``wait=False``, raises ``MustWait`` at once.
    """
    for _ in range(_READ_TRIES):
        snapshot = _snapshot(table, keys)
        spans = snapshot.spans if snapshot is not None else spans_read(table)
        owned: list[str] = []
        outdated: dict[str, None] = {}  # an ordered set
        replicated: dict[int, Span] = {}
        for key in keys:
            span = spans.find(key)
            if span is None:
                outdated[key] = None
            elif span.frozen:
                raise RangeFrozen("the key range is being moved; retry shortly", key=key)
            else:
                owned.append(key)
                if span.replicated:
                    replicated[id(span)] = span
        found = snapshot.rows if snapshot is not None else _fetch(table, owned)
        if replicated:
            # Never answer with a write a failover could still take back: a write marks its
            # keys pending before it commits, so one the fetch may have seen shows here.
            if shipper.any_pending(table, owned):
                if not wait:
                    raise MustWait()
                if not shipper.wait_keys(table, owned, PENDING_WAIT_S):
                    raise LeaderUnavailable("a write of this key is still being replicated")
                continue  # read again, now that it is on every in-sync follower
            spans_serving(replicated.values())  # the lease held after the rows were read
        if snapshot is not None or _stable(table, spans):
            break
    else:
        raise RangeFrozen("the ranges changed during every read attempt; retry shortly")
    rows = [(k, found[k]) for k in owned if k in found]
    metadata = metadata_wire() if outdated else None
    return ReadResult(rows, list(outdated), metadata)


def rows_scan(
    table: str, start: str, end: str | None, limit: int, *, wait: bool = True
) -> ScanResult:
    """Rows of [start, end) in key order, at most ``limit``.

    The whole range must lie inside one owned range (the client server splits scans
    per tablet); otherwise the answer is ``outdated`` with the newest metadata. A frozen
    range raises ``RangeFrozen``, and a pending write is waited for (or ``MustWait``
    raised), as for ``rows_read``.
    """
    if end is not None and end <= start:
        return ScanResult([])
    sql = _scan_select(bounded=end is not None)
    params: list[Any] = [table, start, *([end] if end is not None else []), limit]
    for _ in range(_READ_TRIES):
        spans = spans_read(table)
        if not _covered(spans, start, end):
            return ScanResult([], outdated=True, metadata=metadata_wire())
        if any(s.frozen and s.overlaps(start, end) for s in spans.items):
            raise RangeFrozen("the key range is being moved; retry shortly")
        replicated = [s for s in spans.items if s.replicated and s.overlaps(start, end)]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if replicated:
            if shipper.any_pending_in(table, start, end):  # as in rows_read
                if not wait:
                    raise MustWait()
                if not shipper.wait_range(table, start, end, PENDING_WAIT_S):
                    raise LeaderUnavailable("a write in this range is still being replicated")
                continue
            spans_serving(replicated)
        if _stable(table, spans):
            break
    else:
        raise RangeFrozen("the ranges changed during every scan attempt; retry shortly")
    return ScanResult(rows)


@cache
def _scan_select(bounded: bool) -> str:
    """``rows_scan``'s statement: rows of a table from a key, below an end if ``bounded``,
    in key order, up to a limit (built once per shape, as the reads' statements)."""
    qn = connection.ops.quote_name
    sql = f"SELECT {qn('key')}, {qn('cells')} FROM {qn(Row._meta.db_table)} "
    sql += f"WHERE {qn('table')} = %s AND {qn('key')} >= %s"
    if bounded:
        sql += f" AND {qn('key')} < %s"
    return sql + f" ORDER BY {qn('key')} LIMIT %s"


def _covered(spans: Spans, start: str, end: str | None) -> bool:
    """Whether owned ranges cover [start, end) without a gap (a freeze may split a range)."""
    position: str | None = start
    for span in spans.items:
        if position is None or (end is not None and position >= end):
            break
        if span.contains(position):
            position = span.end
    return position is None or (end is not None and position >= end)


@dataclass(slots=True)
class _Snapshot:
    spans: Spans
    rows: dict[str, str]  # key -> cells text, for the asked keys that have a row


def _snapshot(table: str, keys: Sequence[str]) -> _Snapshot | None:
    """The owned ranges of ``table`` and the rows of ``keys``, read by one statement.

    One statement reads from one snapshot (SQLite runs each statement of an autocommit
    connection in its own read transaction; PostgreSQL takes one snapshot per statement
    in READ COMMITTED), so no second look at the ranges is needed (module docstring).
    The ranges and the rows come as one ``UNION ALL``, the rows padded to the ranges'
    columns: a range has an ``id``, a row has none. None for no keys or more than
    ``CHUNK`` distinct keys: the caller then reads in three statements.
    """
    unique = list(dict.fromkeys(keys))
    if not unique or len(unique) > CHUNK:
        return None
    with connection.cursor() as cursor:
        cursor.execute(_snapshot_select(len(unique)), [table, table, *unique])
        results = cursor.fetchall()
    spans = Spans([span_of_row(*values) for values in results if values[0] is not None])
    return _Snapshot(spans, {values[1]: values[2] for values in results if values[0] is None})


@cache
def _snapshot_select(count: int) -> str:
    """``_snapshot``'s statement for ``count`` keys: the ranges, then the rows in the
    ranges' columns (``NULL`` id, key, cells, ``NULL``...)."""
    qn = connection.ops.quote_name
    padding = ", NULL" * (len(SPAN_COLUMNS) - 3)
    rows = f"SELECT NULL, {qn('key')}, {qn('cells')}{padding} {_rows_from(count)}"
    return f"{spans_select()} UNION ALL {rows}"


@cache
def _rows_from(count: int) -> str:
    """``FROM <rows> WHERE table = %s AND key IN (%s, ...)`` for ``count`` keys (at most
    ``CHUNK``: one cached text per key count)."""
    qn = connection.ops.quote_name
    marks = ", ".join(["%s"] * count)
    return f"FROM {qn(Row._meta.db_table)} WHERE {qn('table')} = %s AND {qn('key')} IN ({marks})"


def _fetch(table: str, keys: Sequence[str]) -> dict[str, str]:
    """key -> cells text for the keys that have a row, ``IN`` queries of ``CHUNK`` keys."""
    if not keys:
        return {}
    unique = list(dict.fromkeys(keys))
    found: dict[str, str] = {}
    with connection.cursor() as cursor:
        for i in range(0, len(unique), CHUNK):
            chunk = unique[i : i + CHUNK]
            cursor.execute(_rows_select(len(chunk)), [table, *chunk])
            found.update(cursor.fetchall())
    return found


@cache
def _rows_select(count: int) -> str:
    """``_fetch``'s statement for ``count`` keys: key and cells of the rows that exist."""
    qn = connection.ops.quote_name
    return f"SELECT {qn('key')}, {qn('cells')} {_rows_from(count)}"


def _stable(table: str, before: Spans) -> bool:
    return spans_read(table).identity() == before.identity()


# --- writes ---------------------------------------------------------------------------------------


def rows_mutate(
    table: str,
    mutations: Sequence[protocol.Mutation],
    *,
    only_if: Callable[[dict[str, Any]], bool] | None = None,
) -> MutateResult:
    """Apply mutations in one transaction; one result per mutation, in request order.

    Each mutation is atomic on its row; mutations of the same key apply in request
    order. Keys not owned come back ``outdated`` (with metadata), keys in a frozen
    range ``error``/``range_frozen`` (retryable), bad mutations ``error``. Returns
    only after the commit, and for a replicated table only once every in-sync follower
    has the write (``replication``): a returned success is durable on every copy.

    ``only_if`` (internal callers): a mutation of an existing row applies only if its
    cells, read under the write lock, pass; else it is ``unchanged`` (a delete of rows
    found expired must not delete one rewritten since: ``expiry``).
    """
    for attempt in range(_WRITE_TRIES):
        tickets: list[Ticket] = []
        try:
            with transaction.atomic():
                result = _mutate(table, mutations, tickets, only_if)
        except IntegrityError:
            # PostgreSQL: a concurrent transaction created one of our new keys first
            # (SQLite serializes writers, so cannot get here). Retry: the row now exists
            # and is locked like any other.
            _release(tickets)
            if attempt == _WRITE_TRIES - 1:
                raise
            log.info("mutate on %s raced a concurrent insert; retrying", table)
        except OperationalError as exc:
            _release(tickets)
            if getattr(exc.__cause__, "sqlstate", None) not in _RETRY_SQLSTATES:
                raise
            if attempt == _WRITE_TRIES - 1:
                raise
        except BaseException:
            _release(tickets)
            raise
        else:
            for ticket in tickets:  # committed: acknowledged once on every in-sync follower
                _replicated_or_unconfirmed(ticket, result)
            return result
        time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # outside the transaction
    raise AssertionError("unreachable")


def _release(tickets: list[Ticket]) -> None:
    """The transaction did not commit: its keys are no longer pending."""
    for ticket in tickets:
        shipper.release(ticket)


def _replicated_or_unconfirmed(ticket: Ticket, result: MutateResult) -> None:
    """Wait for the ticket's replication; if it failed, its keys' successes become
    ``replication_unconfirmed`` (the write may have been applied: not retryable)."""
    why = shipper.wait(ticket, settings.DISTDB_REPLICATE_WAIT_S)
    if journal_enabled():
        journal("ack", table=ticket.table, seqs=[ticket.first_seq, ticket.last_seq], why=why)
    if why is None:
        return
    log.warning("a write to %s (%d keys) is unconfirmed: %s", ticket.table, len(ticket.keys), why)
    keys = set(ticket.keys)
    message = f"{ReplicationUnconfirmed.default_message} ({why})"
    for i, r in enumerate(result.results):
        if r["key"] in keys and r["status"] in ("created", "updated", "deleted"):
            result.results[i] = _error(r["key"], ReplicationUnconfirmed.code, message)


@dataclass(slots=True)
class _State:
    """A row as the batch sees it: its database id and text, and its cells now."""

    id: int | None
    text: str | None  # JSON text as stored (None: no row in the database)
    exists: bool
    cells: dict[str, Any] | None = None  # parsed on demand
    dirty: bool = False

    def parsed(self) -> dict[str, Any]:
        if self.cells is None:
            self.cells = orjson.loads(self.text) if self.text else {}
        return self.cells


def _mutate(
    table: str,
    mutations: Sequence[protocol.Mutation],
    tickets: list[Ticket],
    only_if: Callable[[dict[str, Any]], bool] | None = None,
) -> MutateResult:
    spans = spans_for_write(table)  # under the shared ownership lock until commit
    results: list[dict[str, Any] | None] = [None] * len(mutations)
    todo: list[int] = []
    replicated_keys: set[str] = set()
    any_outdated = False
    for i, m in enumerate(mutations):
        missing = _missing_field(m)
        span = spans.find(m.key)
        if missing:
            results[i] = _error(m.key, "validation_failed", f"{m.op} needs {missing}")
        elif span is None:
            results[i] = {"key": m.key, "status": "outdated", "error": None}
            any_outdated = True
        elif span.frozen:  # expired too, until settled with the master (see freezes)
            results[i] = _error(
                m.key, "range_frozen", "the key range is being moved; retry shortly", True
            )
        elif span.replicated and not shipper.serving(span):
            results[i] = _error(m.key, LeaderUnavailable.code,
                                LeaderUnavailable.default_message, True)  # fmt: skip
        else:
            todo.append(i)
            if span.replicated:
                replicated_keys.add(m.key)

    states = _lock_rows(table, sorted({mutations[i].key for i in todo}))
    for i in todo:
        m = mutations[i]
        state = states.get(m.key) or states.setdefault(m.key, _State(None, None, False))
        if only_if is not None and state.exists and not only_if(state.parsed()):
            results[i] = {"key": m.key, "status": "unchanged", "error": None}
            continue
        results[i] = _apply(state, m)

    if replicated_keys:  # pending before the commit: no read may see them unreplicated
        tickets.append(shipper.begin(table, sorted(replicated_keys)))
    first, last = _write(table, states)
    if tickets:
        tickets[0].first_seq, tickets[0].last_seq = first, last
        if not last:  # nothing was written (a delete of a missing row...): nothing to wait for
            shipper.release(tickets[0])
    return MutateResult(
        [r for r in results if r is not None], metadata_wire() if any_outdated else None
    )


def _missing_field(m: protocol.Mutation) -> str | None:
    if m.op in ("insert", "upsert", "set") and m.cells is None:
        return "cells"
    if m.op == "delete_cells" and m.columns is None:
        return "columns"
    return None


def _error(key: str, code: str, message: str, retryable: bool = False) -> dict[str, Any]:
    error = {"code": code, "message": message, "retryable": retryable}
    return {"key": key, "status": "error", "error": error}


def _lock_rows(table: str, keys: list[str]) -> dict[str, _State]:
    """Existing rows of ``keys``, locked until commit on PostgreSQL.

    Keys are sorted and locked in key order (``ORDER BY`` + ``FOR UPDATE`` locks rows
    as it returns them), so two batches never wait on each other in a cycle. SQLite
    ignores ``select_for_update``: its IMMEDIATE transaction holds the write lock.
    """
    states: dict[str, _State] = {}
    for i in range(0, len(keys), CHUNK):
        qs = (
            Row.objects.select_for_update()
            .filter(table=table, key__in=keys[i : i + CHUNK])
            .order_by("key")
            .values_list("id", "key", "cells")
        )
        for pk, key, text in qs:
            states[key] = _State(pk, text, True)
    return states


def _apply(state: _State, m: protocol.Mutation) -> dict[str, Any]:
    op, key = m.op, m.key
    if op == "insert":
        if state.exists:
            return _error(key, "row_exists", "a row with this key already exists")
        state.cells, state.exists, state.dirty = dict(m.cells or {}), True, True
        return {"key": key, "status": "created", "error": None}
    if op == "upsert":
        status = "updated" if state.exists else "created"
        state.cells, state.exists, state.dirty = dict(m.cells or {}), True, True
        return {"key": key, "status": status, "error": None}
    if not state.exists:
        return _error(key, "row_not_found", "no such row")
    if op == "set":
        state.parsed().update(m.cells or {})
        state.dirty = True
        return {"key": key, "status": "updated", "error": None}
    if op == "delete_cells":
        cells = state.parsed()
        gone = [c for c in dict.fromkeys(m.columns or ()) if c in cells]  # a column named twice
        if not gone:
            return {"key": key, "status": "unchanged", "error": None}
        for column in gone:
            del cells[column]
        state.dirty = True
        return {"key": key, "status": "updated", "error": None}
    # delete_row
    state.cells, state.exists, state.dirty = None, False, True
    return {"key": key, "status": "deleted", "error": None}


def _write(table: str, states: dict[str, _State]) -> tuple[int, int]:
    """Bulk insert/update/delete the changed rows, then append their change-log entries;
    returns the first and last seq appended ((0, 0): none)."""
    inserts: list[tuple[str, str, str]] = []
    updates: list[tuple[str, int]] = []
    deletes: list[int] = []
    changes: list[tuple[str, str, str | None]] = []  # (key, op, cells text)
    for key, state in states.items():
        if not state.dirty:
            continue
        if not state.exists:
            if state.id is not None:
                deletes.append(state.id)
                changes.append((key, "delete", None))
            continue  # created and deleted in the same batch: nothing to store or log
        try:
            text = orjson.dumps(state.cells).decode()
        except TypeError as exc:  # only Python callers can pass values JSON cannot hold
            raise ValidationFailed(f"the cells of {key!r} are not JSON: {exc}", key=key) from None
        if state.id is None:
            inserts.append((table, key, text))
        else:
            updates.append((text, state.id))
        changes.append((key, "put", text))
    # New keys in key order, like the locks of _lock_rows: on PostgreSQL two batches
    # inserting the same new keys then conflict on the first one instead of deadlocking.
    insert_many(Row, ["table", "key", "cells"], sorted(inserts))
    if updates:
        r, qn = Row._meta, connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.executemany(
                f"UPDATE {qn(r.db_table)} SET {qn('cells')} = %s WHERE {qn('id')} = %s", updates
            )
    for i in range(0, len(deletes), CHUNK):
        Row.objects.filter(id__in=deletes[i : i + CHUNK]).delete()
    if not changes:
        return 0, 0
    last = changes_append(table, changes)
    if journal_enabled():
        first, ops = last - len(changes) + 1, [(k, op) for k, op, _ in changes]
        transaction.on_commit(lambda: journal("write", table=table, seqs=[first, last], keys=ops))
    return last - len(changes) + 1, last

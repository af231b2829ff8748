"""Collect: pull each tablet server's change log into the master's consolidated copy.

Entries carry the row's full image after the change and are applied in sequence
order, so applying a batch twice changes nothing. The acknowledged sequence number
is advanced in the same transaction as the rows; only then is the tablet told to
trim, so a crash anywhere re-sends entries instead of losing them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from distdb.keys import decode_key
from distdb.protocol import ChangeEntry, ChangesRequest, ChangesResponse, TrimCommand
from distdb.sqlbulk import insert_many
from master_app.models import ConsolidatedRow, Table, TabletServer
from master_app.services.link import link_call, new_command_id
from master_app.services.tables import keys_reserve_above
from master_app.services.tablet_api import tablet_post

log = logging.getLogger(__name__)
BATCH = 5000


def changes_collect(
    server: TabletServer, *, batch: int = BATCH, timeout_s: float = 30, trim: bool = True
) -> int:
    """Apply every change ``server`` logged since the last acknowledged one; returns the count.

    With ``trim`` the server is then told it may delete the applied entries — but never
    past its ``trim_floor``, the position a move of one of its ranges still catches up from.
    """
    total = 0
    server.refresh_from_db(fields=["acked_seq"])
    after = server.acked_seq
    while True:
        # Over HTTP: a page may hold rows of any size (``tablet_api``'s docstring).
        request = ChangesRequest(after_seq=after, limit=batch)
        reply = tablet_post(
            server.node_id, server.url, "/internal/v1/changes", request, ChangesResponse,
            timeout_s=timeout_s,
        )  # fmt: skip
        if reply.entries:
            after = changes_apply(server, reply.entries)
            if trim:
                changes_trim(server, after, timeout_s=timeout_s)
            total += len(reply.entries)
        # Stop at what was there when asked: under steady writes "until empty" never ends.
        if not reply.more:
            return total


def changes_trim(server: TabletServer, upto_seq: int, *, timeout_s: float = 30) -> None:
    """Let ``server`` delete its log up to ``upto_seq`` (applied here), capped at its floor.

    No lock is held across the call (the tablet's reply travels through the master's
    server, which needs the database). It is safe anyway: ``upto_seq`` was committed as
    ``acked_seq`` before the floor is read, and ``log_pin`` sets the floor to the
    ``acked_seq`` of its moment, so a trim that missed a new floor stops at or below it.
    """
    floor = TabletServer.objects.filter(pk=server.pk).values_list("trim_floor", flat=True)[0]
    if floor is not None:
        upto_seq = min(upto_seq, floor)
    if upto_seq > 0:
        link_call(
            server.node_id, TrimCommand(id=new_command_id(), upto_seq=upto_seq), timeout_s=timeout_s
        )


def log_pin(server: TabletServer) -> int:
    """Stop trimming ``server``'s log past what the master has applied so far; returns that
    position. A move catches up from it, so every change it needs is still in the log."""
    with transaction.atomic():
        TabletServer.objects.filter(pk=server.pk).update(trim_floor=F("acked_seq"))
        floor = TabletServer.objects.filter(pk=server.pk).values_list("trim_floor", flat=True)[0]
    assert floor is not None  # just set from acked_seq, which is never NULL
    return floor


def changes_apply(server: TabletServer, entries: Sequence[ChangeEntry]) -> int:
    """Apply entries (seq order) to the consolidated copy and advance ``acked_seq`` atomically.

    Entries are full row images, so only each key's last entry matters: one bulk upsert
    and one delete per table, however long the batch — the transaction holds SQLite's
    write lock, which the master's heartbeats also need.
    """
    entries = sorted(entries, key=lambda e: e.seq)
    tables = {t.name: t for t in Table.objects.filter(name__in={e.table for e in entries})}
    with transaction.atomic():
        locked = TabletServer.objects.select_for_update().get(pk=server.pk)
        deposed = locked.deposed or []
        last: dict[tuple[str, str], ChangeEntry] = {}
        for entry in entries:
            if entry.seq <= locked.acked_seq:  # a replayed batch changes nothing
                continue
            if deposed and _deposed(deposed, entry):
                continue  # written by a leader since deposed: the new leader's snapshot rules
            if entry.op == "clear":  # a new leader's snapshot follows: apply what came before
                _apply_last(server, tables, last)
                last.clear()
                _clear(tables, entry)
                continue
            last[(entry.table, entry.key)] = entry
        _apply_last(server, tables, last)
        last_seq = entries[-1].seq
        if last_seq > locked.acked_seq:
            TabletServer.objects.filter(pk=server.pk).update(acked_seq=last_seq)
            settled = [d for d in deposed if d.get("upto") is not None and d["upto"] <= last_seq]
            if settled:
                TabletServer.objects.filter(pk=server.pk).update(
                    deposed=[d for d in deposed if d not in settled]
                )
    return last_seq


def _deposed(deposed: list[dict[str, Any]], entry: ChangeEntry) -> bool:
    """Whether ``entry`` lies in a range failed over away from its writer, written before
    the writer heard of it (``replicas.deposed_settle``)."""
    for d in deposed:
        if d["table"] != entry.table or (d["upto"] is not None and entry.seq > d["upto"]):
            continue
        if entry.key >= d["start"] and (d["end"] is None or entry.key < d["end"]):
            return True
    return False


def _clear(tables: dict[str, Table], entry: ChangeEntry) -> None:
    table = tables.get(entry.table)
    if table is None:
        return
    end = (entry.cells or {}).get("end")
    rows = ConsolidatedRow.objects.filter(table=table, key__gte=entry.key)
    (rows if end is None else rows.filter(key__lt=end)).delete()


def _apply_last(
    server: TabletServer, tables: dict[str, Table], last: dict[tuple[str, str], ChangeEntry]
) -> None:
    """Apply each key's last entry: one bulk upsert and deletes per table."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    puts: list[tuple[Any, ...]] = []
    deletes: dict[int, list[str]] = defaultdict(list)
    highest: dict[str, str] = {}  # int table -> its largest stored key in this batch
    for (name, key), entry in last.items():
        table = tables.get(name)
        if table is None:
            continue  # the table was dropped
        if entry.op == "delete":
            deletes[table.pk].append(key)
        else:
            cells = orjson.dumps(entry.cells).decode()
            puts.append((table.pk, key, cells, server.node_id, entry.seq, now))
            if table.key_type == "int":  # stored int keys sort as the integers do
                highest[name] = max(key, highest.get(name, key))
    _upsert_rows(puts)
    # Keys given explicitly move the generated-key counter past them, so keyless adds
    # stop colliding with them (client servers also skip past a collision at once).
    for name, key in highest.items():
        stored_max = decode_key("int", key)
        assert isinstance(stored_max, int)
        keys_reserve_above(tables[name], stored_max)
    for table_id, keys in deletes.items():
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            ConsolidatedRow.objects.filter(table_id=table_id, key__in=chunk).delete()


def _upsert_rows(values: list[tuple[Any, ...]]) -> None:
    qn = connection.ops.quote_name
    columns = ["table_id", "key", "cells", "source_server", "source_seq", "updated_at"]
    updated = ", ".join(f"{qn(c)} = excluded.{qn(c)}" for c in columns[2:])
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    insert_many(
        ConsolidatedRow,
        columns,
        values,
        placeholders=["%s", "%s", f"%s{cast}", "%s", "%s", "%s"],
        suffix=f" ON CONFLICT ({qn('table_id')}, {qn('key')}) DO UPDATE SET {updated}",
    )


def changes_collect_all(*, trim: bool = True) -> dict[str, Any]:
    """Collect from every live server; a failing server is reported, not fatal."""
    report: dict[str, Any] = {}
    for server in TabletServer.objects.filter(state=TabletServer.State.UP):
        try:
            report[server.node_id] = changes_collect(server, trim=trim)
        except Exception as exc:  # noqa: BLE001 - one server's failure must not stop the others
            log.warning("collect from %s failed: %s", server.node_id, exc)
            report[server.node_id] = f"error: {exc}"
    return report


def log_unpin(server: TabletServer) -> None:
    TabletServer.objects.filter(pk=server.pk).update(trim_floor=None)

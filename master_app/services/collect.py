"""Collect: pull each tablet server's change log into the master's consolidated copy.

Entries carry the row's full image after the change and are applied in sequence
order, so applying a batch twice changes nothing. The acknowledged sequence number
is advanced in the same transaction as the rows; only then is the tablet told to
trim, so a crash anywhere re-sends entries instead of losing them.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import F

from distdb.protocol import ChangesCommand, TrimCommand
from master_app.models import ConsolidatedRow, Table, TabletServer
from master_app.services.link import link_call, new_command_id

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
        command = ChangesCommand(id=new_command_id(), after_seq=after, limit=batch)
        entries = link_call(server.node_id, command, timeout_s=timeout_s)["entries"]
        if not entries:
            return total
        after = changes_apply(server, entries)
        if trim:
            changes_trim(server, after, timeout_s=timeout_s)
        total += len(entries)
        if len(entries) < batch:
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
        return TabletServer.objects.filter(pk=server.pk).values_list("trim_floor", flat=True)[0]


def changes_apply(server: TabletServer, entries: list[dict[str, Any]]) -> int:
    """Apply entries (seq order) to the consolidated copy and advance ``acked_seq`` atomically."""
    entries = sorted(entries, key=lambda e: e["seq"])
    tables = {t.name: t for t in Table.objects.filter(name__in={e["table"] for e in entries})}
    with transaction.atomic():
        locked = TabletServer.objects.select_for_update().get(pk=server.pk)
        for entry in entries:
            if entry["seq"] <= locked.acked_seq:
                continue  # already applied: a replayed batch changes nothing
            table = tables.get(entry["table"])
            if table is None:
                continue  # the table was dropped
            if entry["op"] == "delete":
                ConsolidatedRow.objects.filter(table=table, key=entry["key"]).delete()
            else:
                ConsolidatedRow.objects.update_or_create(
                    table=table,
                    key=entry["key"],
                    defaults={
                        "cells": entry["cells"],
                        "source_server": server.node_id,
                        "source_seq": entry["seq"],
                    },
                )
        last = entries[-1]["seq"]
        if last > locked.acked_seq:
            TabletServer.objects.filter(pk=server.pk).update(acked_seq=last)
    return last


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

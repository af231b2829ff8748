"""The tablet server's state for operators: its link's status file and its storage figures.

Loaded by the tablet server role. The link agent (``manage.py tablet_link``) is a process
of its own, so it tells the server whether it is linked through a small JSON file
beside the databases, rewritten on the master's welcome, on every heartbeat and on
loss: ``/readyz`` turns not-ready when the file says "down" or has not been refreshed
for three heartbeats (a killed or paused agent writes nothing more). Times in it are
``time.monotonic()`` readings, which Linux keeps system-wide (CLOCK_MONOTONIC): every
process on the host compares them, and a wall-clock step cannot fake freshness.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from tablet_app.models import ChangeLogEntry, OwnedRange, Row

STALE_HEARTBEATS = 3  # the link counts as down after this many missed heartbeats
STALE_SLACK_S = 2.0


def link_status_path() -> Path:
    return Path(settings.DISTDB_DATA_DIR) / "run" / f"{settings.DISTDB_NODE_ID}.link.json"


def link_status_write(up: bool, heartbeat_s: float) -> None:
    """Record the link's state now (atomically: a reader never sees half a file)."""
    path = link_status_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"up": up, "at": time.monotonic(), "heartbeat_s": heartbeat_s}))
    tmp.replace(path)


@dataclass(frozen=True)
class LinkStatus:
    up: bool
    age_s: float | None  # since the agent last wrote (None: never)
    reason: str


def link_status_read(now: float | None = None) -> LinkStatus:
    """Whether the link is up now, from the agent's file."""
    now = time.monotonic() if now is None else now
    try:
        data: dict[str, Any] = json.loads(link_status_path().read_text())
        at, heartbeat_s, up = float(data["at"]), float(data["heartbeat_s"]), bool(data["up"])
    except (OSError, ValueError, KeyError, TypeError):
        return LinkStatus(False, None, "the link agent has not reported (is tablet_link running?)")
    age = now - at
    if not up:
        return LinkStatus(False, age, "the link to the master is down")
    if age < 0 or age > STALE_HEARTBEATS * heartbeat_s + STALE_SLACK_S:
        return LinkStatus(False, age, f"the link agent has been silent for {age:.0f} s")
    return LinkStatus(True, age, "up")


def link_ready() -> None:
    """Readiness check (``settings.DISTDB_READINESS_CHECKS``): the link to the master is up."""
    status = link_status_read()
    if not status.up:
        raise RuntimeError(status.reason)


@dataclass(frozen=True)
class TableFigures:
    rows: int
    bytes: int
    ranges: int
    frozen: int


def storage_figures() -> dict[str, TableFigures]:
    """Rows, bytes of cells (UTF-8), owned and frozen ranges per table (one pass each)."""
    size = (
        "octet_length(cells)"
        if connection.vendor == "postgresql"
        else "length(CAST(cells AS BLOB))"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT "table", COUNT(*), COALESCE(SUM({size}), 0) FROM {Row._meta.db_table} '
            'GROUP BY "table"'
        )
        stored = {t: (int(n), int(b)) for t, n, b in cursor.fetchall()}
    ranges: dict[str, tuple[int, int]] = {}
    for table, frozen in OwnedRange.objects.values_list("table", "frozen_deadline"):
        n, f = ranges.get(table, (0, 0))
        ranges[table] = (n + 1, f + (frozen is not None))
    return {
        t: TableFigures(*stored.get(t, (0, 0)), *ranges.get(t, (0, 0)))
        for t in sorted(set(stored) | set(ranges))
    }


@dataclass(frozen=True)
class ChangeLogFigures:
    entries: int
    last_seq: int
    oldest_age_s: float  # how long the oldest entry not yet trimmed has waited (0 if none)


def changelog_figures() -> ChangeLogFigures:
    """The change log's length and how far collection lags behind it.

    Entries are trimmed once the master has applied them, so the oldest entry left is the
    oldest change the master's copy does not have yet (or one a move still needs)."""
    from django.db.models import Count, Max, Min
    from django.utils import timezone

    agg = ChangeLogEntry.objects.aggregate(n=Count("seq"), last=Max("seq"), first=Min("seq"))
    oldest_age = 0.0
    if agg["first"] is not None:
        created = ChangeLogEntry.objects.filter(seq=agg["first"]).values_list(
            "created_at", flat=True
        )
        first = created.first()
        if first is not None:
            oldest_age = max(0.0, (timezone.now() - first).total_seconds())
    return ChangeLogFigures(agg["n"] or 0, agg["last"] or 0, oldest_age)

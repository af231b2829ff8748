"""The cluster at a glance (``manage.py cluster_status``, the admin): MongoDB's ``sh.status()``.

With replication: each range's leader, in-sync set and followers' lag (asked of the live
tablet servers with a short deadline, ``replication_view``) and the recent failovers.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.utils import timezone

from master_app.models import RebalanceRun, Table, Tablet, TabletServer
from master_app.services.consolidated import count_in
from master_app.services.leases import MAINTENANCE, lease_current
from master_app.services.metadata import metadata_version_current
from master_app.services.replication_view import failovers_recent, replication_ranges


def run_as_dict(run: RebalanceRun) -> dict[str, Any]:
    duration = run.duration_s or 0
    return {
        "id": run.pk,
        "trigger": run.trigger,
        "dry_run": run.dry_run,
        "outcome": run.outcome,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_s": run.duration_s,
        "rows_moved": run.rows_moved,
        "rows_per_s": run.rows_moved / duration if duration else 0.0,
        "longest_freeze_ms": run.longest_freeze_ms,
        "step": run.step,
        "plan": run.plan,
        "moves": run.moves,
        "error": run.error,
    }


def tablet_rows() -> list[tuple[Tablet, int]]:
    """Every tablet (table and server loaded) with its rows in the master's copy."""
    tablets = Tablet.objects.select_related("table", "server").order_by("table__name", "start_key")
    return [(t, count_in(t.table, t.start_key, t.end_key)) for t in tablets]


def server_rows(counted: list[tuple[Tablet, int]] | None = None) -> dict[int, int]:
    """Rows per tablet server (by pk), from the master's copy."""
    totals: dict[int, int] = {}
    for tablet, rows in counted if counted is not None else tablet_rows():
        totals[tablet.server_id] = totals.get(tablet.server_id, 0) + rows
    return totals


def cluster_status(*, probe: bool = True) -> dict[str, Any]:
    """Everything ``cluster_status --json`` prints. ``probe``: ask the live tablet servers
    for their followers' lag (at most about a second; unknown for a server that is slow)."""
    counted = tablet_rows()  # one COUNT per tablet, shared by the totals and the listing
    rows = server_rows(counted)
    servers = []
    for server in TabletServer.objects.order_by("node_id"):
        servers.append(
            {
                "node_id": server.node_id,
                "url": server.url,
                "state": server.state,
                "draining": server.draining,
                "last_heartbeat": server.last_heartbeat.isoformat()
                if server.last_heartbeat
                else None,
                "acked_seq": server.acked_seq,
                "rows": rows.get(server.pk, 0),
                "tablets": [
                    {
                        "table": t.table.name,
                        "start": t.start_display(),
                        "end": t.end_display(),
                        "rows": n,
                        "version": t.version,
                        "in_sync": list(t.in_sync or ()),
                    }
                    for t, n in counted
                    if t.server_id == server.pk
                ],
            }
        )
    last = RebalanceRun.objects.order_by("-started_at").first()
    lease = lease_current(MAINTENANCE)
    return {
        "now": timezone.now().isoformat(),
        "metadata_version": metadata_version_current(),
        "tables": {
            t.name: {"key_type": t.key_type, "rf": t.rf} for t in Table.objects.order_by("name")
        },
        "servers": servers,
        "running": lease.holder if lease else None,
        "last_run": run_as_dict(last) if last else None,
        "replication": [r.as_dict() for r in replication_ranges(probe=probe)],
        "failovers": [asdict(f) for f in failovers_recent()],
    }

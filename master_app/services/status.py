"""The cluster at a glance (``manage.py cluster_status``, the admin): MongoDB's ``sh.status()``."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from master_app.models import RebalanceRun, Table, Tablet, TabletServer
from master_app.services.consolidated import count_in
from master_app.services.leases import MAINTENANCE, lease_current
from master_app.services.metadata import metadata_version_current
from master_app.services.rebalance import display_key


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


def server_rows() -> dict[int, int]:
    """Rows per tablet server (by pk), from the master's copy."""
    totals: dict[int, int] = {}
    for t in Tablet.objects.select_related("table"):
        totals[t.server_id] = totals.get(t.server_id, 0) + count_in(t.table, t.start_key, t.end_key)
    return totals


def cluster_status() -> dict[str, Any]:
    rows = server_rows()
    servers = []
    for server in TabletServer.objects.order_by("node_id"):
        tablets = Tablet.objects.filter(server=server).select_related("table")
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
                        "start": display_key(t.table.name, t.start_key or ""),
                        "end": display_key(t.table.name, t.end_key),
                        "rows": count_in(t.table, t.start_key, t.end_key),
                        "version": t.version,
                    }
                    for t in tablets.order_by("table__name", "start_key")
                ],
            }
        )
    last = RebalanceRun.objects.order_by("-started_at").first()
    lease = lease_current(MAINTENANCE)
    return {
        "now": timezone.now().isoformat(),
        "metadata_version": metadata_version_current(),
        "tables": {t.name: {"key_type": t.key_type} for t in Table.objects.order_by("name")},
        "servers": servers,
        "running": lease.holder if lease else None,
        "last_run": run_as_dict(last) if last else None,
    }

"""Celery tasks of the master (beat fires them; the admin and commands can too)."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from distdb.errors import LeaseHeld
from master_app.services.collect import changes_collect_all
from master_app.services.servers import tablet_servers_expire
from master_app.services.tables import tables_dropped_settle

log = logging.getLogger(__name__)


@shared_task(name="distdb.collect_changes", ignore_result=True, time_limit=300, soft_time_limit=240)
def collect_changes() -> dict[str, Any]:
    """Refresh the master's consolidated copy from every live tablet server's change log."""
    tablet_servers_expire()
    collected = changes_collect_all()
    tables_dropped_settle()  # deleted tables that a server has not dropped yet
    return collected


@shared_task(
    name="distdb.rebalance",
    ignore_result=True,
    acks_late=False,  # a run killed half-way is recovered by the next, not re-delivered
    time_limit=settings.DISTDB_REBALANCE_TIME_LIMIT_S,
    soft_time_limit=settings.DISTDB_REBALANCE_TIME_LIMIT_S - 60,
)
def rebalance(trigger: str = "beat", dry_run: bool = False) -> dict[str, Any]:
    """One rebalance run; a run that is already going is reported, not doubled."""
    from master_app.services.rebalance import rebalance_run

    try:
        run = rebalance_run(trigger, dry_run=dry_run)
    except LeaseHeld as exc:
        log.info("rebalance (%s) not started: %s", trigger, exc.message)
        return {"outcome": "already_running", "error": exc.message}
    return {"run": run.pk, "outcome": run.outcome, "rows_moved": run.rows_moved}


@shared_task(name="distdb.repair_replicas", ignore_result=True, time_limit=3600,
             soft_time_limit=3540)  # fmt: skip
def repair_replicas() -> dict[str, Any]:
    """Restore every replicated range to its rf copies (after a failover, a dropped
    follower, a raised rf); skipped while a rebalance run holds the maintenance lease."""
    from master_app.services.replicas import replicas_repair

    try:
        report = replicas_repair()
    except LeaseHeld as exc:
        log.info("re-replication not started: %s", exc.message)
        return {"outcome": "already_running"}
    return {"added": report.added, "failed": report.failed}

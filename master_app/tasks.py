"""Celery tasks of the master (beat fires them; the admin and commands can too)."""

from __future__ import annotations

from celery import shared_task

from master_app.services.collect import changes_collect_all
from master_app.services.servers import tablet_servers_expire


@shared_task(name="distdb.collect_changes", ignore_result=True, time_limit=300, soft_time_limit=240)
def collect_changes() -> dict:
    """Refresh the master's consolidated copy from every live tablet server's change log."""
    tablet_servers_expire()
    return changes_collect_all()

"""The registry of tablet servers, maintained from their link's hello/heartbeats."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from distdb.errors import TabletServerNotFound
from master_app.models import TabletServer


def tablet_server_connect(node_id: str, url: str) -> TabletServer:
    """Record that a tablet server's link is up (a new server joins here)."""
    server, _ = TabletServer.objects.update_or_create(
        node_id=node_id,
        defaults={"url": url, "state": TabletServer.State.UP, "last_heartbeat": timezone.now()},
    )
    return server


def tablet_server_heartbeat(node_id: str) -> None:
    TabletServer.objects.filter(node_id=node_id).update(
        state=TabletServer.State.UP, last_heartbeat=timezone.now()
    )


def tablet_server_disconnect(node_id: str) -> None:
    TabletServer.objects.filter(node_id=node_id).update(state=TabletServer.State.DOWN)


def tablet_servers_expire() -> int:
    """Mark servers whose heartbeats stopped (e.g. the master's process died) as down."""
    cutoff = timezone.now() - timedelta(seconds=settings.DISTDB_HEARTBEAT_TIMEOUT_S)
    return TabletServer.objects.filter(
        state=TabletServer.State.UP, last_heartbeat__lt=cutoff
    ).update(state=TabletServer.State.DOWN)


def tablet_servers_down() -> list[str]:
    """Servers marked down, or whose heartbeats stopped (read only: nothing is marked)."""
    cutoff = timezone.now() - timedelta(seconds=settings.DISTDB_HEARTBEAT_TIMEOUT_S)
    down = TabletServer.objects.exclude(state=TabletServer.State.UP) | TabletServer.objects.filter(
        last_heartbeat__lt=cutoff
    )
    return sorted(set(down.values_list("node_id", flat=True)))


def tablet_servers_live() -> list[TabletServer]:
    return list(TabletServer.objects.filter(state=TabletServer.State.UP).order_by("node_id"))


def tablet_server_drain(node_id: str, draining: bool = True) -> TabletServer:
    """Mark a server to be emptied (or no longer) by the next rebalance run.

    Draining moves a server's ranges to the others (decommissioning, maintenance); it is
    what the admin's "Drain" action and ``manage.py drain`` do.
    """
    updated = TabletServer.objects.filter(node_id=node_id).update(draining=draining)
    if not updated:
        raise TabletServerNotFound(f"no tablet server {node_id!r}", node_id=node_id)
    return TabletServer.objects.get(node_id=node_id)

"""What this tablet server follows and leads, for the master's replication view.

Loaded by the tablet server role, for ``GET /internal/v1/replication`` (role master),
which ``manage.py cluster_status`` and the admin's dashboard ask of every live server.
Read-only and cheap: the followed and owned ranges are a handful of rows; each replicated
range it leads costs one indexed ``MAX(seq)`` over its keys in the change log (which
collection keeps trimmed), so its followers' lag counts that range's entries only, not
writes to other ranges.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from distdb import protocol
from tablet_app.models import ChangeLogEntry, FollowedRange, OwnedRange
from tablet_app.services.control import changes_last_seq


def replication_state() -> protocol.ReplicationState:
    """The followed ranges with the leader's seq each has applied (and how long ago, on
    this host's clock, so no clock skew between hosts enters the age), the replicated
    ranges led here with their newest entry's seq, and this server's newest seq."""
    now = timezone.now()
    followed = [
        protocol.FollowedRangeState(
            table=f.table,
            start=f.start_key,
            end=f.end_key,
            leader=f.leader,
            version=f.version,
            applied_seq=f.applied_seq,
            applied_at=f.applied_at,
            applied_age_s=(now - f.applied_at).total_seconds() if f.applied_at else None,
        )
        for f in FollowedRange.objects.order_by("table", "start_key")
    ]
    led = [
        protocol.LedRangeState(
            table=o.table,
            start=o.start_key,
            end=o.end_key,
            last_seq=_range_last_seq(o.table, o.start_key, o.end_key),
            followers=[f[0] for f in o.followers or ()],
        )
        for o in OwnedRange.objects.filter(replicated=True).order_by("table", "start_key")
    ]
    return protocol.ReplicationState(
        node_id=settings.DISTDB_NODE_ID,
        last_seq=changes_last_seq(),
        followed=followed,
        led=led,
    )


def _range_last_seq(table: str, start: str, end: str | None) -> int:
    """The newest change-log seq of a key range (0 when none is left after trimming)."""
    entries = ChangeLogEntry.objects.filter(table=table, key__gte=start)
    if end is not None:
        entries = entries.filter(key__lt=end)
    last: int | None = entries.aggregate(last=Max("seq"))["last"]
    return last or 0

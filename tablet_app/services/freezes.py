"""Write freezes of ranges being moved away: leases on this host's monotonic clock.

Loaded by the tablet server role (the link agent sets and settles freezes; the data
plane refuses reads and writes of frozen ranges; the admin shows them).

A move freezes its range on the source for ``lease_s`` seconds. While frozen, the source
answers neither reads nor writes for the range (retryably): the target may start serving
it the moment the master commits, so the source must already be silent (DESIGN §4,
invariant 1, "one voice per range").

**Why a monotonic clock.** The master commits a move only while the lease it granted
has a safety margin left, measured on *its* monotonic clock from before it sent the
freeze. The tablet measures the same lease from when it *received* the freeze, later,
so the tablet's lease ends after the master's last possible commit — provided both
measure durations. A wall-clock deadline would end early when this host's clock is
stepped forward, and the range could be reopened while the master still commits
(DESIGN §4, invariant 3). So a freeze stores a deadline on ``CLOCK_MONOTONIC``, which is
one clock for every process of this host (the server and its link agree on it) but
restarts at boot: a freeze also stores the boot it was taken in, and one from an
earlier boot is re-armed for a full lease, since the time that passed is unknown.

**An ended lease does not reopen the range by itself**: the master may have committed
just before it ended. ``ownership.freezes_resolve`` lifts it only with metadata fetched from the
master *after* the lease ended, through a read that waits for any commit in flight
(``master_app.services.metadata.metadata_current(fenced=True)``): the range is then
either given away, or still ours and open again.

The freeze columns live on ``OwnedRange``; changes to them are serialized against writes
by ``ownership``'s locks, so a freeze never interleaves with a write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q, QuerySet

from distdb.boot import boot_id
from tablet_app.models import OwnedRange
from tablet_app.services.locks import ownership_lock_exclusive

clock: Callable[[], float] = time.monotonic  # this host's monotonic clock; tests swap it


@dataclass(frozen=True, slots=True)
class Freeze:
    """One range's write-freeze lease."""

    deadline: float  # on ``clock``, in boot ``boot``
    boot: str
    lease_s: float

    def left_s(self, now: float) -> float | None:
        """Seconds left (None: taken in an earlier boot, not known yet)."""
        return self.deadline - now if self.boot == boot_id() else None

    @classmethod
    def of(cls, row: OwnedRange) -> Freeze | None:
        if row.frozen_deadline is None:
            return None
        return cls(row.frozen_deadline, row.frozen_boot, row.frozen_lease_s or 0.0)

    def fields(self) -> dict[str, object]:
        return {"frozen_deadline": self.deadline, "frozen_boot": self.boot,
                "frozen_lease_s": self.lease_s}  # fmt: skip


NOT_FROZEN: dict[str, object] = {"frozen_deadline": None, "frozen_boot": "", "frozen_lease_s": None}


def latest(freezes: Iterable[Freeze | None]) -> Freeze | None:
    """The freeze that ends last (pieces of a range keep the strictest lease)."""
    found = [f for f in freezes if f is not None]
    return max(found, key=lambda f: (f.boot != boot_id(), f.deadline), default=None)


def range_freeze(
    table: str, start: str, end: str | None, lease_s: float, received_at: float
) -> Freeze:
    """Refuse reads and writes of the owned part of [start, end) for ``lease_s`` seconds
    from ``received_at`` (``clock()`` when the command arrived).

    Owned ranges are split at ``start``/``end`` when those fall inside them. Writes already
    running commit before this returns (the ownership lock).
    """
    freeze = Freeze(received_at + lease_s, boot_id(), lease_s)
    with transaction.atomic():
        ownership_lock_exclusive([table])
        ranges = list(OwnedRange.objects.filter(table=table))
        for boundary in (start, end):
            for r in ranges:
                if (
                    boundary
                    and r.start_key < boundary
                    and (r.end_key is None or boundary < r.end_key)
                ):
                    # The piece is a copy of the range it is cut from, every field but
                    # its start: led under the same lease, replicated to the same
                    # followers, served once the same snapshot is shipped. (Built field
                    # by field it missed the replication ones: the piece above a frozen
                    # middle acknowledged writes unshipped — chaos seed 20261206.)
                    piece = _copy(r)
                    piece.start_key = boundary
                    r.end_key = boundary
                    r.save(update_fields=["end_key"])
                    piece.save()
                    ranges.append(piece)
                    break
        for r in _within(table, start, end):
            # Never shorten a freeze already there (a stale or reconfigured master).
            kept = latest([Freeze.of(r), freeze])
            assert kept is not None
            OwnedRange.objects.filter(pk=r.pk).update(**kept.fields())
    return freeze


def range_unfreeze(table: str, start: str, end: str | None) -> None:
    """Lift the freeze of the owned ranges inside [start, end): only the master says so
    (a move it abandoned before its commit)."""
    with transaction.atomic():
        ownership_lock_exclusive([table])
        _within(table, start, end).update(**NOT_FROZEN)


def freezes_due() -> bool:
    """Whether a freeze lease has ended without being settled (see ``ownership.freezes_resolve``).

    A freeze from an earlier boot is re-armed here for a full lease from now.
    """
    stale = OwnedRange.objects.filter(frozen_deadline__isnull=False).exclude(frozen_boot=boot_id())
    if stale.exists():
        with transaction.atomic():
            for r in stale.select_for_update():
                r.frozen_deadline, r.frozen_boot = clock() + (r.frozen_lease_s or 0.0), boot_id()
                r.save(update_fields=["frozen_deadline", "frozen_boot"])
    return freezes_ended(clock()).exists()


def freezes_ended(now: float) -> QuerySet[OwnedRange]:
    """The frozen ranges whose lease (of this boot) ended by ``now``."""
    return OwnedRange.objects.filter(Q(frozen_deadline__lte=now), frozen_boot=boot_id())


def _within(table: str, start: str, end: str | None) -> QuerySet[OwnedRange]:
    qs = OwnedRange.objects.filter(table=table, start_key__gte=start)
    if end is not None:
        qs = qs.filter(end_key__isnull=False, end_key__lte=end)
    return qs


def _copy(r: OwnedRange) -> OwnedRange:
    """A new, unsaved range with every field of ``r`` but its primary key."""
    fields = OwnedRange._meta.concrete_fields
    return OwnedRange(**{f.attname: getattr(r, f.attname) for f in fields if not f.primary_key})

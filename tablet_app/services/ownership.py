"""Which key ranges this tablet server owns, their write freezes, and the metadata it knows.

Loaded by the tablet server role (internal API worker threads and the link agent).

Ownership is the ``OwnedRange`` table. Every write checks it *inside* its own
transaction, and every change to it (``metadata_apply``, ``range_freeze``,
``range_unfreeze``) is serialized against those writes:

* SQLite: every transaction is ``BEGIN IMMEDIATE`` (settings), so the database's
  single write lock orders them; nothing more is needed.
* PostgreSQL: writers take a *shared* transaction-level advisory lock per table,
  ownership changes take it *exclusively*. We lock an advisory key rather than the
  OwnedRange rows (``SELECT ... FOR UPDATE``) because (1) ``FOR UPDATE`` on the ranges
  would serialize every writer of a table against every other, and (2) a freeze may
  split a range into new rows, which a writer's ``FOR SHARE`` statement, waiting on
  the old row, would not see once it resumes (READ COMMITTED keeps the statement's
  snapshot). Taking the advisory lock first and reading the ranges afterwards gives
  the read a snapshot that includes every committed ownership change.

A freeze may cover part of an owned range: the range is then split into pieces so
that each ``OwnedRange`` row is wholly frozen or not. ``metadata_apply`` keeps
freezes (and the splits they need) when it rewrites the ranges, so a metadata
change never lifts a move's write freeze early.

A freeze is a lease, but an *expired* freeze does not reopen writes by itself: the
master may have committed the move (giving the range away) just before the lease
ended and died before telling this server. So writes stay refused (retryably) until
``freezes_resolve`` has asked the master for its current metadata, fetched after the
lease ended: the range is then either given away (answered ``outdated``) or still
ours and writable again. The master commits a move only while the lease has a safety
margin left (``master_app.services.moves``), so what it answers after the lease is final.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from django.db import connection, transaction
from django.db.models import Q, QuerySet

from distdb import protocol
from distdb.journal import enabled as journal_enabled
from distdb.journal import journal
from distdb.keys import range_cut
from tablet_app.models import FollowedRange, MetadataSnapshot, OwnedRange
from tablet_app.services.changelog import changes_snapshot
from tablet_app.services.freezes import NOT_FROZEN, Freeze, freezes_ended, latest
from tablet_app.services.locks import (
    CONTROL_LOCK,
    advisory_lock,
    ownership_lock_exclusive,
    ownership_lock_shared,
)

log = logging.getLogger(__name__)

KEEP_SNAPSHOTS = 5  # older metadata snapshots are deleted; only the newest is ever served


# --- lookups --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """One owned range as the data plane sees it."""

    start: str
    end: str | None
    frozen: bool = False  # a move's freeze: neither reads nor writes (``freezes``)
    ident: tuple[Any, ...] = ()  # (id, bounds, version, freeze): did ownership change meanwhile
    replicated: bool = False  # rf > 1: served only under the leader lease (``replication``)
    version: int = 0  # the metadata version this server applied for it
    ready_seq: int = 0  # served once the shipper has shipped past this seq

    def contains(self, key: str) -> bool:
        return key >= self.start and (self.end is None or key < self.end)

    def overlaps(self, start: str, end: str | None) -> bool:
        """Whether [start, end) shares a key with this span."""
        return (end is None or self.start < end) and (self.end is None or start < self.end)

    def covers(self, start: str, end: str | None) -> bool:
        """Whether [start, end) lies entirely inside this span."""
        if start < self.start:
            return False
        if self.end is None:
            return True
        return end is not None and end <= self.end


class Spans:
    """The owned ranges of one table, sorted, with a bisect lookup."""

    __slots__ = ("items", "_starts")

    def __init__(self, items: Sequence[Span]) -> None:
        self.items = sorted(items, key=lambda s: s.start)
        self._starts = [s.start for s in self.items]

    def find(self, key: str) -> Span | None:
        i = bisect.bisect_right(self._starts, key) - 1
        if i >= 0 and self.items[i].contains(key):
            return self.items[i]
        return None

    def identity(self) -> list[tuple[Any, ...]]:
        return [s.ident for s in self.items]


# The columns of ``OwnedRange`` a read needs, in ``span_of_row``'s order.
SPAN_COLUMNS = (
    "id",
    "start_key",
    "end_key",
    "version",
    "frozen_deadline",
    "replicated",
    "ready_seq",
)


@cache
def spans_select() -> str:
    """``SELECT <SPAN_COLUMNS> FROM <owned ranges> WHERE table = %s`` (built once: reads
    run it on every request, alone or in ``rows``' one-statement read)."""
    qn = connection.ops.quote_name
    columns = ", ".join(qn(c) for c in SPAN_COLUMNS)
    return f"SELECT {columns} FROM {qn(OwnedRange._meta.db_table)} WHERE {qn('table')} = %s"


def spans_read(table: str) -> Spans:
    """The owned ranges of ``table`` and whether each is frozen: one small query, for reads."""
    with connection.cursor() as cursor:
        cursor.execute(spans_select(), [table])
        return Spans([span_of_row(*row) for row in cursor.fetchall()])


def span_of_row(i: int, s: str, e: str | None, v: int, f: Any, rep: Any, ready: int) -> Span:
    """A ``Span`` from one ``OwnedRange`` row's ``SPAN_COLUMNS`` (``spans_read`` and the
    one-statement read of ``rows``)."""
    return Span(s, e, f is not None, (i, s, e, v, f), bool(rep), v, ready)


def spans_for_write(table: str) -> Spans:
    """The owned ranges of ``table`` with their freezes, for a write transaction.

    Call inside ``transaction.atomic()``: takes the shared ownership lock first (see
    the module docstring), so the answer holds until the transaction commits.
    """
    ownership_lock_shared(table)
    rows = OwnedRange.objects.filter(table=table).values_list(
        "start_key", "end_key", "frozen_deadline", "replicated", "version", "ready_seq"
    )
    return Spans([Span(s, e, f is not None, (), rep, v, ready) for s, e, f, rep, v, ready in rows])


# --- metadata -------------------------------------------------------------------------------------


def metadata_wire() -> dict[str, Any]:
    """The newest metadata snapshot in its wire form (``Metadata(version=0)`` if none)."""
    data = MetadataSnapshot.objects.order_by("-version").values_list("data", flat=True).first()
    if not isinstance(data, dict):  # none yet (JSONField values are untyped)
        return protocol.Metadata(version=0).model_dump(mode="json")
    return data


def metadata_current() -> protocol.Metadata:
    """The newest metadata this server has been given (version 0 when it has none)."""
    return protocol.Metadata.model_validate(metadata_wire())


def metadata_version_current() -> int:
    """The version of the newest metadata snapshot, 0 when there is none."""
    version = MetadataSnapshot.objects.order_by("-version").values_list("version", flat=True)
    return version.first() or 0


def metadata_apply(
    metadata: protocol.Metadata, node_id: str, caught_up: protocol.CaughtUp | None = None
) -> None:
    """Store ``metadata`` and make OwnedRange equal to the tablets it assigns to ``node_id``.

    A version older than the newest stored snapshot is ignored (messages may arrive
    out of order); the same version again is re-applied, which changes nothing.
    Rows of ranges that stop being owned stay until ``range_drop`` (the move protocol
    drops them once the new owner serves). Live freezes are kept (see module docstring).
    """
    with transaction.atomic():
        advisory_lock([CONTROL_LOCK], shared=False)
        newest = metadata_version_current()
        if metadata.version < newest:
            log.info("ignoring metadata v%s: v%s is already applied", metadata.version, newest)
            if caught_up is not None:
                _caught_up_credit(metadata, caught_up)
            return
        mine = [t for t in metadata.tablets if t.server == node_id]
        followed = [t for t in metadata.tablets if any(f.server == node_id for f in t.in_sync)]
        existing = list(OwnedRange.objects.all())
        ownership_lock_exclusive(
            [r.table for r in existing]
            + [t.table for t in mine]
            + [t.table for t in followed]
            + list(FollowedRange.objects.values_list("table", flat=True))
        )
        existing = list(OwnedRange.objects.all())  # now stable: re-read under the lock
        # Ranges this server starts leading (a promotion, a move in) of a replicated
        # table: a snapshot of them goes into the log first (``replication``).
        newly_led = [
            t for t in mine
            if _replicated(metadata, t.table) and not _covered_by(existing, t)
        ]  # fmt: skip
        attrs = {(t.table, t.start, t.end): _replica_fields(metadata, t) for t in mine}

        # Expired freezes are kept too: only ``freezes_resolve`` (which asked the
        # master after the lease ended) or an unfreeze may lift them.
        freezes = [r for r in existing if r.frozen_deadline is not None]
        wanted: dict[tuple[str, str, str | None], Freeze | None] = {}
        replica: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        for tablet in mine:
            tablet_slot = (tablet.table, tablet.start, tablet.end)
            table_freezes = [f for f in freezes if f.table == tablet.table]
            cuts = {f.start_key for f in table_freezes} | {f.end_key for f in table_freezes}
            for start, end in range_cut(tablet.start, tablet.end, cuts):
                covering = (Freeze.of(f) for f in table_freezes if _inside(start, end, f))
                wanted[(tablet.table, start, end)] = latest(covering)
                replica[(tablet.table, start, end)] = attrs[tablet_slot]

        keep: list[OwnedRange] = []
        stale: list[int] = []
        for r in existing:
            slot = (r.table, r.start_key, r.end_key)
            if slot in wanted:
                r.version = metadata.version
                for name, value in _freeze_fields(wanted.pop(slot)).items():
                    setattr(r, name, value)
                for name, value in replica[slot].items():
                    setattr(r, name, value)
                keep.append(r)
            else:
                stale.append(r.pk)
        OwnedRange.objects.filter(pk__in=stale).delete()  # before inserts: unique start keys
        OwnedRange.objects.bulk_update(keep, ["version", *NOT_FROZEN, "replicated", "followers"])
        OwnedRange.objects.bulk_create(
            OwnedRange(
                table=t,
                start_key=s,
                end_key=e,
                version=metadata.version,
                ready_seq=_ready_seq(existing, t, s, e),
                **_freeze_fields(f),
                **replica[(t, s, e)],
            )
            for (t, s, e), f in wanted.items()
        )
        _followed_apply(followed, metadata.version, caught_up)
        snapshots = []
        for tablet in newly_led:
            ready = changes_snapshot(tablet.table, tablet.start, tablet.end)
            _within_tablet(tablet).update(ready_seq=ready)
            snapshots.append((tablet.table, tablet.start, tablet.end, ready))
        if journal_enabled():
            record = {
                "version": metadata.version,
                "led": [(t.table, t.start, t.end, [f.server for f in t.in_sync]) for t in mine],
                "followed": list(
                    FollowedRange.objects.values_list(
                        "table", "start_key", "end_key", "leader", "applied_seq"
                    )
                ),
                "snapshots": snapshots,
                "caught_up": caught_up.model_dump() if caught_up is not None else None,
            }
            transaction.on_commit(lambda: journal("metadata", **record))
        MetadataSnapshot.objects.update_or_create(
            version=metadata.version, defaults={"data": metadata.model_dump(mode="json")}
        )
        old = MetadataSnapshot.objects.order_by("-version")[KEEP_SNAPSHOTS:]
        MetadataSnapshot.objects.filter(
            version__in=list(old.values_list("version", flat=True))
        ).delete()


def _ready_seq(existing: Sequence[OwnedRange], table: str, start: str, end: str | None) -> int:
    """A piece re-cut from ranges led here before waits for their snapshots as they did
    (0 for a range new here: ``newly_led`` sets its own)."""
    return max(
        (
            r.ready_seq
            for r in existing
            if r.table == table and Span(r.start_key, r.end_key).overlaps(start, end)
        ),
        default=0,
    )


def _replicated(metadata: protocol.Metadata, table: str) -> bool:
    info = metadata.tables.get(table)
    return info is not None and info.rf > 1


def _replica_fields(metadata: protocol.Metadata, t: protocol.TabletAssignment) -> dict[str, Any]:
    return {
        "replicated": _replicated(metadata, t.table),
        "followers": [[f.server, f.url] for f in t.in_sync],
    }


def _covered_by(existing: Sequence[OwnedRange], t: protocol.TabletAssignment) -> bool:
    """Whether this server already owned all of tablet ``t`` before this version."""
    spans = Spans([Span(r.start_key, r.end_key) for r in existing if r.table == t.table])
    position: str | None = t.start
    for span in spans.items:
        if position is None or (t.end is not None and position >= t.end):
            break
        if span.contains(position):
            position = span.end
    return position is None or (t.end is not None and position >= t.end)


def _within_tablet(t: protocol.TabletAssignment) -> Any:
    qs = OwnedRange.objects.filter(table=t.table, start_key__gte=t.start)
    if t.end is not None:
        qs = qs.filter(end_key__isnull=False, end_key__lte=t.end)
    return qs


def _followed_apply(
    followed: Sequence[protocol.TabletAssignment],
    version: int,
    caught_up: protocol.CaughtUp | None = None,
) -> None:
    """Make FollowedRange the ranges this server follows in ``version``; a range whose
    leader and bounds are unchanged keeps how far it has applied the leader's log, a new
    one starts at 0 — or, the range of a join, at ``caught_up.seq`` (its copy and
    catch-ups hold the leader's log that far; no other range's copy does)."""
    current = {(r.table, r.start_key, r.end_key, r.leader): r for r in FollowedRange.objects.all()}
    keep: set[int] = set()
    for t in followed:
        credit = _credit(t.table, t.start, t.end, t.server, caught_up)
        row = current.get((t.table, t.start, t.end, t.server))
        if row is not None:
            keep.add(row.pk)
            # The version may have arrived first by a push: the join still says how far
            # the copy got (and it is never less than what was applied since).
            applied = max(row.applied_seq, credit)
            if (row.version, row.applied_seq) != (version, applied):
                FollowedRange.objects.filter(pk=row.pk).update(version=version, applied_seq=applied)
    FollowedRange.objects.exclude(pk__in=keep).delete()
    FollowedRange.objects.bulk_create(
        FollowedRange(
            table=t.table,
            start_key=t.start,
            end_key=t.end,
            leader=t.server,
            version=version,
            applied_seq=_credit(t.table, t.start, t.end, t.server, caught_up),
        )
        for t in followed
        if (t.table, t.start, t.end, t.server) not in current
    )


def _credit(
    table: str, start: str, end: str | None, leader: str, caught_up: protocol.CaughtUp | None
) -> int:
    """``caught_up.seq`` for a range of the join's leader inside the joined range, else 0."""
    if caught_up is None or (table, leader) != (caught_up.table, caught_up.leader):
        return 0
    inside = Span(caught_up.start, caught_up.end).covers(start, end)
    return caught_up.seq if inside else 0


def _caught_up_credit(metadata: protocol.Metadata, caught_up: protocol.CaughtUp) -> None:
    """A join whose version was overtaken by a newer one (a push for another range's
    move): the copy still holds the leader's log up to ``caught_up.seq``, so the joined
    range, still followed from that same leader, has applied at least that far. Without
    it the lag showed the whole log until the next write.

    Seqs only grow within one log, but a leader whose disk was lost starts a new log at
    1; crediting a range of that new log would make the follower skip its entries. A
    lost disk always passes through a version where the server leads nothing, so the
    credit needs every version since the join stored here, each with the joined range
    led by the same server (a version not stored here means no credit: an under-count
    only re-applies images).
    """
    if caught_up.seq <= 0:
        return
    newest = metadata_version_current()
    since = {
        v: protocol.Metadata.model_validate(data)
        for v, data in MetadataSnapshot.objects.filter(
            version__gt=metadata.version, version__lte=newest
        ).values_list("version", "data")
    }
    if len(since) != newest - metadata.version:
        return
    if not all(_led_by(m, caught_up) for m in since.values()):
        return
    inside = FollowedRange.objects.filter(
        table=caught_up.table,
        leader=caught_up.leader,
        start_key__gte=caught_up.start,
        applied_seq__lt=caught_up.seq,
    )
    if caught_up.end is not None:
        inside = inside.filter(end_key__isnull=False, end_key__lte=caught_up.end)
    inside.update(applied_seq=caught_up.seq)


def _led_by(metadata: protocol.Metadata, joined: protocol.CaughtUp) -> bool:
    """Whether every tablet of ``metadata`` overlapping the joined range has its leader
    (a table's tablets partition its key space, so that is all of the range)."""
    return all(
        t.server == joined.leader
        for t in metadata.tablets
        if t.table == joined.table
        and (joined.end is None or t.start < joined.end)
        and (t.end is None or t.end > joined.start)
    )


def _freeze_fields(freeze: Freeze | None) -> dict[str, Any]:
    return freeze.fields() if freeze is not None else dict(NOT_FROZEN)


def _inside(start: str, end: str | None, outer: OwnedRange) -> bool:
    return Span(outer.start_key, outer.end_key).covers(start, end)


def range_owned_overlap(table: str, start: str, end: str | None) -> bool:
    """Whether any range of ``table`` led *or followed* here overlaps [start, end): a
    follower's copy is as precious as the leader's."""
    led = ranges_overlapping(OwnedRange.objects.filter(table=table), start, end)
    followed = ranges_overlapping(FollowedRange.objects.filter(table=table), start, end)
    return led.exists() or followed.exists()


RangeModel = TypeVar("RangeModel", OwnedRange, FollowedRange)


def ranges_overlapping(
    qs: QuerySet[RangeModel], start: str, end: str | None
) -> QuerySet[RangeModel]:
    """``qs`` (owned or followed ranges) restricted to those sharing a key with [start, end)."""
    if end is not None:
        qs = qs.filter(start_key__lt=end)
    return qs.filter(Q(end_key__isnull=True) | Q(end_key__gt=start))


def freezes_resolve(metadata: protocol.Metadata, node_id: str, fetched_at: float) -> int:
    """Apply the master's metadata, then lift the freezes whose lease ended by ``fetched_at``.

    ``metadata`` must have been fetched from the master, with a fenced read, after
    ``fetched_at`` (a ``freezes.clock()`` reading): the master never commits a move once
    the lease may have ended, so it says for good whether each of those ranges was given
    away (``freezes`` explains why). Returns how many freezes were lifted.
    """
    with transaction.atomic():
        metadata_apply(metadata, node_id)
        ownership_lock_exclusive(freezes_ended(fetched_at).values_list("table", flat=True))
        return freezes_ended(fetched_at).update(**NOT_FROZEN)

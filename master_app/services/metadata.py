"""The routing metadata: read it, and commit new versions atomically.

Only the master changes the metadata. A change is one transaction that writes the
new tablet rows and a new ``MetadataVersion``; readers build the wire message from
the committed rows, so a client never sees half a change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

from django.db import OperationalError, connection, transaction
from django.db.models import Max

from distdb.errors import MoveAborted, Unavailable
from distdb.journal import enabled as journal_enabled
from distdb.journal import journal
from distdb.protocol import Follower, KeyType, Metadata, TableInfo, TabletAssignment
from master_app.models import MetadataVersion, Table, Tablet, TabletServer
from master_app.services.link import link_push_metadata

log = logging.getLogger(__name__)
FENCE_WAIT_S = 8.0  # a fenced read's wait for the metadata lock (tablets time out at 10 s)


@dataclass(frozen=True)
class RangeAssignment:
    """A planned tablet: [start, end) of ``table`` led by ``server_id``, replicated to the
    in-sync followers ``in_sync`` (node ids; never the leader)."""

    table: str
    start: str
    end: str | None
    server_id: str
    in_sync: tuple[str, ...] = ()


def metadata_version_current() -> int:
    return MetadataVersion.objects.aggregate(v=Max("version"))["v"] or 0


def metadata_current(*, fenced: bool = False) -> Metadata:
    """The committed metadata as the wire message every node routes with.

    ``fenced``: read under the metadata lock, after any commit in flight has finished. A
    tablet server settling a freeze whose lease ended needs this: a commit that took the
    lock before the lease ended may still be writing, and must be seen (``moves``).
    On SQLite every transaction takes the write lock (IMMEDIATE) and so is fenced anyway.
    The wait for the lock is bounded (``FENCE_WAIT_S``, below the tablet's request
    timeout): past it the caller gets ``Unavailable`` and asks again, rather than
    stacking abandoned requests on the master's threads.
    """
    if not fenced:
        return _metadata_read(fenced=False)
    try:
        with lock_wait_bounded(time.monotonic() + FENCE_WAIT_S, time.monotonic):
            return _metadata_read(fenced=True)
    except OperationalError as exc:  # the lock was not granted in time
        raise Unavailable(f"the metadata is being changed; ask again ({exc})") from None


def _metadata_read(*, fenced: bool) -> Metadata:
    with transaction.atomic():
        if fenced:
            _version_lock()
        version = metadata_version_current()
        tables = {
            t.name: TableInfo(
                key_type=cast(KeyType, t.key_type), columns=t.columns or None, rf=t.rf
            )
            for t in Table.objects.all()
        }
        urls = dict(TabletServer.objects.values_list("node_id", "url"))
        tablets = [
            TabletAssignment(
                table=t.table.name,
                start=t.start_key,
                end=t.end_key,
                server=t.server.node_id,
                url=t.server.url,
                in_sync=[Follower(server=f, url=urls.get(f, "")) for f in t.in_sync or ()],
            )
            for t in Tablet.objects.select_related("table", "server").order_by(
                "table__name", "start_key"
            )
        ]
    return Metadata(version=version, tables=tables, tablets=tablets)


def metadata_commit(
    table: Table,
    assignments: Iterable[RangeAssignment] | Callable[[], Iterable[RangeAssignment]],
    reason: str,
    *,
    push: bool = True,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Replace ``table``'s tablets with ``assignments`` as one new metadata version.

    The assignments must cover the key space exactly (checked): a gap would make keys
    unroutable and an overlap would give a key two owners. With ``push`` every linked
    tablet server is sent the new version after the commit (a move tells the two servers
    concerned first, then pushes).

    ``assignments`` may be a function: it is then called under the metadata lock, so what
    it derives from the committed tablets (a move) cannot be overtaken by another commit.

    ``deadline`` (on ``clock``): a move's last instant to commit, its freeze lease less
    the margin. The commit is then impossible after it: the wait for the metadata lock
    is bounded by the time left, and the deadline is checked again *after* the lock is
    taken, inside the transaction, so a commit that waited too long rolls back
    (``MoveAborted``) instead of handing over a range whose source may have reopened it.
    """
    with lock_wait_bounded(deadline, clock), transaction.atomic():
        # Lock the version sequence so two commits cannot take the same number.
        last = _version_lock()
        if deadline is not None and clock() > deadline:
            raise MoveAborted(f"the commit got the metadata lock {clock() - deadline:.2f}s late")
        planned = assignments() if callable(assignments) else assignments
        ordered = sorted(planned, key=lambda a: a.start)
        _check_cover(table.name, ordered)
        named = {a.server_id for a in ordered} | {f for a in ordered for f in a.in_sync}
        servers = {s.node_id: s for s in TabletServer.objects.filter(node_id__in=named)}
        missing = named - servers.keys()
        if missing:
            raise ValueError(f"unknown tablet servers: {sorted(missing)}")
        for a in ordered:
            if a.server_id in a.in_sync or len(set(a.in_sync)) != len(a.in_sync):
                raise ValueError(f"{table.name}: a range's copies must be on distinct servers")
        version = _version_new(last, reason)
        existing = {t.start_key: t for t in Tablet.objects.filter(table=table)}
        keep = set()
        for a in ordered:
            current = existing.get(a.start)
            if (
                current
                and current.end_key == a.end
                and current.server.node_id == a.server_id
                and tuple(current.in_sync or ()) == a.in_sync
            ):
                keep.add(a.start)
                continue
            if current:
                current.delete()
            Tablet.objects.create(
                table=table,
                start_key=a.start,
                end_key=a.end,
                server=servers[a.server_id],
                in_sync=list(a.in_sync),
                version=version,
            )
            keep.add(a.start)
        Tablet.objects.filter(table=table).exclude(start_key__in=keep).delete()
        if journal_enabled():
            tablets = [(a.start, a.end, a.server_id, list(a.in_sync)) for a in ordered]
            transaction.on_commit(
                lambda: journal(
                    "commit", version=version, reason=reason, table=table.name, tablets=tablets
                )
            )
        if push:
            transaction.on_commit(metadata_push)
    return version


def assignments_current(table: Table) -> list[RangeAssignment]:
    """The table's committed tablets as assignments (call under the metadata lock to
    derive a change from them)."""
    return [
        RangeAssignment(table.name, t.start_key, t.end_key, t.server.node_id, tuple(t.in_sync))
        for t in Tablet.objects.filter(table=table).select_related("server").order_by("start_key")
    ]


def metadata_bump(reason: str) -> int:
    """A new version for a change already made in this transaction outside the tablets
    (a table deleted), pushed to every linked tablet server after the commit."""
    with transaction.atomic():
        version = _version_new(_version_lock(), reason)
        transaction.on_commit(metadata_push)
    return version


def _version_lock() -> MetadataVersion | None:
    """Lock the newest version row: every commit and every fenced read orders here."""
    return MetadataVersion.objects.select_for_update().order_by("-version").first()


def _version_new(last: MetadataVersion | None, reason: str) -> int:
    version = (last.version if last else 0) + 1
    MetadataVersion.objects.create(version=version, reason=reason[:200])
    return version


@contextmanager
def lock_wait_bounded(deadline: float | None, clock: Callable[[], float]) -> Iterator[None]:
    """Wait for database locks no longer than until ``deadline`` in the block.

    SQLite: the connection's busy timeout (the wait of ``BEGIN IMMEDIATE``), restored
    afterwards. PostgreSQL: ``lock_timeout`` for the transaction the block opens (the
    ``SELECT ... FOR UPDATE``), set as the block's first statement.
    """
    if deadline is None:
        yield
        return
    left_s = deadline - clock()
    if left_s < 0:
        raise MoveAborted("no time was left to commit")
    left_ms = max(1, int(left_s * 1000))  # PostgreSQL reads 0 as "no limit"
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        with connection.cursor() as cursor:
            before = cursor.execute("PRAGMA busy_timeout").fetchone()[0]
            cursor.execute(f"PRAGMA busy_timeout = {left_ms}")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"PRAGMA busy_timeout = {int(before)}")
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = {left_ms}")
        yield


def metadata_push() -> None:
    """Tell every linked tablet server about the new version (best effort: they also get
    the current metadata whenever they (re)connect)."""
    try:
        link_push_metadata()
    except Exception:  # the channel layer being down must not undo a committed change
        log.warning("could not push metadata", exc_info=True)


def _check_cover(table: str, ordered: list[RangeAssignment]) -> None:
    if not ordered or ordered[0].start != "":
        raise ValueError(f"{table}: the first tablet must start at the beginning of the key space")
    for prev, nxt in zip(ordered, ordered[1:], strict=False):
        if prev.end is None or prev.end != nxt.start:
            raise ValueError(f"{table}: tablets must be contiguous ({prev.end!r} != {nxt.start!r})")
    if ordered[-1].end is not None:
        raise ValueError(f"{table}: the last tablet must end at the end of the key space")

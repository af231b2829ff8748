"""The tablet server's control plane: what the link agent calls on the master's behalf.

Loaded by the tablet server role (the link agent process, and the internal API's
export endpoint). Plain functions, each one transaction or a loop of short ones:
metadata and freezes (defined in ``ownership`` and ``freezes``, re-exported here), dropping and
counting ranges, ingesting and exporting rows, and the change log.

The change log's writers and the one way entries are applied live in ``changelog``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar, cast

import orjson
from django.db import models, transaction
from django.db.models import QuerySet

from distdb import protocol
from distdb.errors import Conflict
from distdb.journal import enabled as journal_enabled
from distdb.journal import journal
from distdb.keys import range_cut
from tablet_app.models import ChangeLogEntry, FollowedRange, OwnedRange, Row
from tablet_app.services.changelog import (
    changes_append,
    entries_apply,
    rows_upsert,
    shipped_read,
)
from tablet_app.services.freezes import freezes_due, range_freeze, range_unfreeze
from tablet_app.services.locks import ownership_lock_shared
from tablet_app.services.ownership import (
    Span,
    freezes_resolve,
    metadata_apply,
    metadata_current,
    metadata_version_current,
    range_owned_overlap,
    ranges_overlapping,
)

__all__ = [
    "changes_append",
    "changes_batch",
    "changes_apply_copied",
    "changes_in_range_since",
    "changes_last_seq",
    "changes_trim",
    "metadata_apply",
    "metadata_current",
    "metadata_version_current",
    "range_count",
    "range_drop",
    "range_freeze",
    "range_unfreeze",
    "freezes_due",
    "freezes_resolve",
    "rows_drop_unowned",
    "table_drop",
    "rows_export",
    "rows_ingest",
]

M = TypeVar("M", bound=models.Model)
BATCH = 1000  # rows per statement/transaction for bulk work: keeps SQLite's write lock short


# --- ranges ---------------------------------------------------------------------------------------


def _in_range(qs: QuerySet[M], start: str, end: str | None) -> QuerySet[M]:
    """``qs`` (of a model with a ``key``) restricted to keys in [start, end)."""
    qs = qs.filter(key__gte=start)
    return qs if end is None else qs.filter(key__lt=end)


def range_count(table: str, start: str, end: str | None) -> int:
    """Number of rows stored for [start, end) of ``table`` (owned or not)."""
    return _in_range(Row.objects.filter(table=table), start, end).count()


def range_drop(table: str, start: str, end: str | None) -> int:
    """Delete the rows of [start, end), a range this server no longer owns; returns the count.

    Batches of ``BATCH`` rows, one short transaction each, so writers to other ranges
    are not held up. Each batch re-checks, under the ownership lock, that no part of
    the range is owned (raises ``Conflict`` if it is): a range that came back must not
    lose the rows just copied in.

    No change-log entries are written: these deletes are not changes to the data, the
    rows live on at the new owner. The master's copy learns of the move from the
    metadata; logging deletes would make it delete rows that still exist.
    """
    total = 0
    while True:
        with transaction.atomic():
            ownership_lock_shared(table)
            if range_owned_overlap(table, start, end):
                raise Conflict(
                    "the range is still owned here; apply the new metadata first",
                    table=table,
                    start=start,
                    end=end,
                )
            qs = _in_range(Row.objects.filter(table=table), start, end)
            ids = list(qs.order_by("key").values_list("id", flat=True)[:BATCH])
            if ids:
                if journal_enabled():
                    gone = list(Row.objects.filter(id__in=ids).values_list("key", flat=True))
                    journal("drop", table=table, start=start, end=end, keys=gone)
                Row.objects.filter(id__in=ids).delete()
        total += len(ids)
        if len(ids) < BATCH:
            return total


def table_drop(table: str) -> int:
    """Delete every row and change-log entry of ``table``, a table the master deleted;
    returns the rows deleted. Refused (``Conflict``) while any range of it is owned.

    The log entries go too: collected later, they would fill a new table of the same
    name with the old one's rows. Batches keep each transaction short.
    """
    rows = range_drop(table, "", None)
    while True:
        with transaction.atomic():
            seqs = list(
                ChangeLogEntry.objects.filter(table=table)
                .order_by("seq")
                .values_list("seq", flat=True)[:BATCH]
            )
            ChangeLogEntry.objects.filter(seq__in=seqs).delete()
        if len(seqs) < BATCH:
            return rows


def rows_drop_unowned(table: str, start: str = "", end: str | None = None) -> int:
    """Delete the rows of [start, end) outside every owned range; returns the count.

    These are copies left by a move that was interrupted (or whose source could not
    drop its copy); the master runs this before it moves anything, never during a
    move, because a range being copied in is not owned yet either.
    """
    owned = sorted(
        [
            *OwnedRange.objects.filter(table=table).values_list("start_key", "end_key"),
            *FollowedRange.objects.filter(table=table).values_list("start_key", "end_key"),
        ],
        key=lambda r: r[0],
    )
    total = 0
    for gap_start, gap_end in _gaps(start, end, owned):
        total += range_drop(table, gap_start, gap_end)
    return total


def _gaps(
    start: str, end: str | None, owned: Sequence[tuple[str, str | None]]
) -> list[tuple[str, str | None]]:
    """The parts of [start, end) not covered by the sorted, disjoint ``owned`` ranges."""
    gaps: list[tuple[str, str | None]] = []
    cursor: str | None = start
    for s, e in owned:
        if cursor is None:
            break
        if end is not None and s >= end:
            break
        if e is not None and e <= cursor:
            continue
        if s > cursor:
            gaps.append((cursor, s))
        cursor = e
    if cursor is not None and (end is None or cursor < end):
        gaps.append((cursor, end))
    return gaps


# --- rows -----------------------------------------------------------------------------------------


def rows_ingest(table: str, rows: Sequence[protocol.Row], *, log_changes: bool) -> int:
    """Upsert rows in bulk (seeding a tablet, copying a range in); returns how many.

    No ownership check: a range is copied in before this server owns it. One
    transaction. With ``log_changes`` each row gets a ``put`` entry (seeding data
    the master does not hold yet); without, none (the master already has them).
    A key given twice keeps its last cells.
    """
    latest = {row.key: orjson.dumps(row.cells).decode() for row in rows}
    if not log_changes and journal_enabled():
        journal("copy", table=table, keys=sorted(latest))
    with transaction.atomic():
        rows_upsert(table, latest)
        if log_changes:
            changes_append(table, [(k, "put", text) for k, text in latest.items()])
    return len(latest)


def changes_apply_copied(
    table: str,
    entries: Sequence[protocol.ChangeEntry],
    start: str = "",
    end: str | None = None,
    leader: str = "",
) -> int:
    """Apply another server's change-log entries to rows being copied in (a move's catch-up).

    Entries carry full row images, so only each key's last entry matters and applying
    the same entries twice changes nothing; a ``clear`` (a new leader's snapshot) empties
    the part of [start, end) it covers first. Like ``rows_ingest``: no ownership check
    (the range is not owned yet) and no change-log entries (the master collects them
    from the source). One transaction. Returns the number of entries given.

    ``leader``: the source's node id. Where this server already follows the range from
    it (a leadership transfer's target), the leader's shipper has applied its entries up
    to the range's ``applied_seq``, some maybe newer than this page, read earlier; only
    later entries are applied there, so an older image never overwrites a newer one the
    shipper will not send again (were the move abandoned, this follower could be
    promoted with it). ``applied_seq`` itself is left to replication: a catch-up starts
    at the pinned floor, and counting it as applied would skip earlier entries the
    shipper has not delivered yet.
    """
    with transaction.atomic():
        parts = _applied_parts(table, start, end, leader)
        for lo, hi, applied in parts:
            entries_apply(table, [e for e in entries if e.seq > applied], lo, hi)
    if journal_enabled():
        seen = [(e.seq, e.key, e.op) for e in entries]
        journal("catch_up", table=table, start=start, end=end, entries=seen, parts=parts)
    return len(entries)


def _applied_parts(
    table: str, start: str, end: str | None, leader: str
) -> list[tuple[str, str | None, int]]:
    """[start, end) cut where the ranges followed from ``leader`` begin and end, each part
    with how far replication applied that leader's log there (0 where not followed).
    The followed rows are locked (PostgreSQL): no replication batch commits in between."""
    if not leader:
        return [(start, end, 0)]
    mine = FollowedRange.objects.select_for_update().filter(table=table, leader=leader)
    followed = [
        (Span(f.start_key, f.end_key), f.applied_seq) for f in ranges_overlapping(mine, start, end)
    ]
    cuts = [b for span, _ in followed for b in (span.start, span.end)]
    return [
        (lo, hi, next((applied for span, applied in followed if span.covers(lo, hi)), 0))
        for lo, hi in range_cut(start, end, cuts)
    ]


def rows_export(
    table: str, start: str, end: str | None, after: str | None, limit: int, max_bytes: int
) -> tuple[list[protocol.Row], bool]:
    """One page of the rows of [start, end), keys > ``after``, in key order, and whether
    rows are left after it.

    The page stops at ``limit`` rows or about ``max_bytes`` of UTF-8 (after at least one
    row, however large). A move copies with these pages and then catches up from the
    source's log position the master pinned before the copy began
    (``master_app.services.moves``), so the page needs no log position of its own.
    """
    qs = _in_range(Row.objects.filter(table=table), start, end)
    if after is not None:
        qs = qs.filter(key__gt=after)
    page: list[protocol.Row] = []
    size = 0
    for key, cells in qs.order_by("key").values_list("key", "cells")[: limit + 1]:
        size += _utf8_len(key) + _utf8_len(cells) + 32
        if len(page) == limit or (page and size > max_bytes):
            return page, True
        page.append(protocol.Row.model_construct(key=key, cells=orjson.loads(cells)))
    return page, False


def _utf8_len(text: str | None) -> int:
    """Bytes on the wire: the size caps are in bytes, whatever the script (CJK is 3 each)."""
    if text is None:
        return 0
    return len(text) if text.isascii() else len(text.encode("utf-8"))


# --- change log -----------------------------------------------------------------------------------


def _entries(
    qs: QuerySet[ChangeLogEntry], limit: int, max_bytes: int | None = None
) -> tuple[list[protocol.ChangeEntry], bool]:
    """Entries in seq order, and whether the batch was cut short by ``limit`` or ``max_bytes``."""
    rows = qs.order_by("seq").values_list("seq", "table", "key", "op", "cells")[: limit + 1]
    entries: list[protocol.ChangeEntry] = []
    size = 0
    for seq, table, key, op, cells in rows:
        size += _utf8_len(key) + _utf8_len(cells) + 64
        if len(entries) == limit or (max_bytes is not None and entries and size > max_bytes):
            return entries, True  # at least one entry, however large: the reader advances
        # Built without validation: these are our own committed rows.
        entries.append(
            protocol.ChangeEntry.model_construct(
                seq=seq,
                table=table,
                key=key,
                op=cast(protocol.ChangeOp, op),
                cells=orjson.loads(cells) if cells is not None else None,
            )
        )
    return entries, False


def changes_batch(
    after_seq: int, limit: int, *, max_bytes: int | None = None
) -> tuple[list[protocol.ChangeEntry], bool]:
    """Change-log entries with seq > ``after_seq``, in seq order, at most ``limit``; and
    whether more were left out (so a collector stops at what it saw, even while writes
    keep coming).

    ``cells`` is the row's full image after the change (None: deleted), so replaying is
    idempotent. ``max_bytes`` stops early (after at least one entry) once the entries'
    UTF-8 size about reaches it (``protocol.PAGE_BYTES``).
    """
    return _entries(ChangeLogEntry.objects.filter(seq__gt=after_seq), limit, max_bytes)


def changes_in_range_since(
    table: str, start: str, end: str | None, after_seq: int, limit: int, max_bytes: int
) -> tuple[list[protocol.ChangeEntry], bool]:
    """``changes_batch``'s entries restricted to keys in [start, end) of ``table`` (a
    move's catch-up), and whether more were left out."""
    in_range = _in_range(ChangeLogEntry.objects.filter(table=table, seq__gt=after_seq), start, end)
    # A ``clear`` is keyed by its own start, which may lie below ``start``: keep every one
    # (the reader clears only its part of the range).
    clears = ChangeLogEntry.objects.filter(table=table, seq__gt=after_seq, op="clear")
    return _entries(in_range | clears, limit, max_bytes)


def changes_trim(upto_seq: int) -> int:
    """Delete entries with seq <= ``upto_seq`` (acknowledged by the master); returns the count.

    Never past what the leader's shipper has sent to every in-sync follower while this
    server leads a replicated range: the master may collect an entry before it is
    replicated, and a trimmed entry would never reach the followers (``replication``).
    Deletes in seq windows of ``BATCH`` so no single transaction holds SQLite's write
    lock for long.
    """
    if OwnedRange.objects.filter(replicated=True).exists():
        upto_seq = min(upto_seq, shipped_read())
    total = 0
    while True:
        first = ChangeLogEntry.objects.filter(seq__lte=upto_seq).order_by("seq")
        low = first.values_list("seq", flat=True).first()
        if low is None:
            return total
        upper = min(upto_seq, low + BATCH - 1)
        deleted, _ = ChangeLogEntry.objects.filter(seq__lte=upper).delete()
        total += deleted


def changes_last_seq() -> int:
    """The highest committed seq in the log (0 when it is empty).

    Safe as a catch-up start: every later commit gets a larger seq. After a full trim
    it is 0, which only means a catch-up reads a little more.
    """
    last = ChangeLogEntry.objects.order_by("-seq").values_list("seq", flat=True).first()
    return last or 0

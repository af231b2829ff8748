"""Tables: creation (with an initial tablet) and the allocator of generated integer keys."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from django.db import IntegrityError, transaction
from django.db.models import Count

from distdb.errors import (
    BadRequest,
    Conflict,
    DistdbError,
    KeysExhausted,
    TableBeingDropped,
    TableExists,
    TableNotFound,
    ValidationFailed,
)
from distdb.keys import KEY_TYPES
from distdb.protocol import MAX_KEY_BLOCK, MAX_RF, DropTableCommand, KeyBlock
from master_app.models import DroppedTable, Table, TabletServer, default_rf
from master_app.services import leases
from master_app.services.link import link_call, new_command_id
from master_app.services.metadata import (
    RangeAssignment,
    assignments_current,
    metadata_bump,
    metadata_commit,
)
from master_app.services.replicas import repair_soon

log = logging.getLogger(__name__)
INT_KEY_MAX = 2**63 - 1
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def table_create(
    name: str, key_type: str, columns: list[str] | None = None, rf: int | None = None
) -> Table:
    """Create a table with one tablet over the whole key space on the least-loaded live server.

    With ``rf`` above 1 (default ``DISTDB_DEFAULT_RF``) the next least-loaded live servers
    become its in-sync followers at once: an empty range needs no copy. Fewer live servers
    than ``rf`` leave the rest to re-replication when servers join. The rebalancer splits
    the table later as it grows.
    """
    rf = _rf_checked(default_rf() if rf is None else rf)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationFailed(
            "a table name is 1-64 letters, digits, '-' or '_'", name=str(name)[:80]
        )
    if key_type not in KEY_TYPES:
        raise ValidationFailed("key_type must be 'int' or 'str'", key_type=str(key_type)[:20])
    if columns is not None:
        if not isinstance(columns, list) or not all(
            isinstance(c, str) and 0 < len(c) <= 128 for c in columns
        ):
            raise ValidationFailed("columns must be a list of names of 1-128 characters")
        columns = sorted(set(columns))
    candidates = list(
        TabletServer.objects.filter(state=TabletServer.State.UP, draining=False)
        .annotate(n=Count("tablets"))
        .order_by("n", "node_id")[:rf]
    )
    server = candidates[0] if candidates else None
    followers = tuple(s.node_id for s in candidates[1:])
    if server is None:
        raise Conflict("no live tablet server to hold the new table; start one first")
    try:
        with transaction.atomic():
            # In the transaction: a delete of the same name committed meanwhile is seen.
            if DroppedTable.objects.filter(name=name).exists():
                raise TableBeingDropped(name=name)
            table = Table.objects.create(name=name, key_type=key_type, columns=columns, rf=rf)
            metadata_commit(
                table,
                [RangeAssignment(name, "", None, server.node_id, followers)],
                f"create table {name}",
            )
    except IntegrityError:
        raise TableExists(name=name) from None
    return table


def _rf_checked(rf: object) -> int:
    if isinstance(rf, bool) or not isinstance(rf, int) or not 1 <= rf <= MAX_RF:
        raise ValidationFailed(f"rf must be an integer in 1..{MAX_RF}", rf=str(rf)[:20])
    return rf


def table_rf_set(name: str, rf: int) -> Table:
    """Change a table's replication factor; returns the table.

    ``rf`` is part of the versioned metadata (``TableInfo.rf``: a leader of a replicated
    range serves only under a lease), so every change is a new version, pushed.

    Raising it commits the new factor and queues a re-replication run, which adds the
    missing followers by copying (``replicas_repair``); until then the ranges are
    under-replicated, as after a failover.

    Lowering it drops the surplus followers from every range's in-sync set in the same
    commit, one version for the whole table: dropping a follower is always safe (the
    leader just stops waiting for it) and, with the new factor in the same version, the
    repair never adds one back. Followers on servers that are down or draining go first.
    ``rf = 1`` leaves no followers: no lease, no failover.
    """
    rf = _rf_checked(rf)
    table = Table.objects.filter(name=name).first()
    if table is None:
        raise TableNotFound(table=name)
    if table.rf == rf:
        return table
    reason = f"rf of {name}: {table.rf} -> {rf}"
    keep_first = _followers_preferred()

    def trimmed() -> list[RangeAssignment]:
        # Under the metadata lock: derived from the tablets as committed now.
        return [
            RangeAssignment(
                a.table, a.start, a.end, a.server_id, tuple(keep_first(a.in_sync)[: rf - 1])
            )
            for a in assignments_current(table)
        ]

    with transaction.atomic():
        # The version lock taken by the commit (or the bump) is held until this
        # transaction ends, so readers see the new rf and the trimmed sets together.
        if rf < table.rf:
            metadata_commit(table, trimmed, reason)
        else:
            metadata_bump(reason)
        updated = Table.objects.filter(pk=table.pk).update(rf=rf)
        if not updated:  # deleted meanwhile: roll the version back
            raise TableNotFound(table=name)
    log.info("%s", reason)
    if rf > table.rf:
        repair_soon()
    table.rf = rf
    return table


def _followers_preferred() -> Callable[[tuple[str, ...]], list[str]]:
    """Orders a range's followers, the ones to keep first: followers on live servers that
    are not draining before the others, otherwise in their in-sync order."""
    healthy = set(
        TabletServer.objects.filter(state=TabletServer.State.UP, draining=False).values_list(
            "node_id", flat=True
        )
    )

    def ordered(followers: tuple[str, ...]) -> list[str]:
        return sorted(followers, key=lambda f: f not in healthy)  # stable: keeps the order

    return ordered


def keys_allocate(table_name: str, count: int, above: int | None = None) -> KeyBlock:
    """Reserve ``count`` fresh integer keys for a client server (hi/lo allocation).

    The update is a single atomic ``next_key = next_key + count`` so concurrent client
    servers always receive disjoint blocks. ``above``: the block starts above it (a client
    server found the counter behind a key given explicitly).
    """
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_KEY_BLOCK:
        raise ValidationFailed(f"count must be an integer in 1..{MAX_KEY_BLOCK}")
    with transaction.atomic():
        try:
            table = Table.objects.select_for_update().get(name=table_name)
        except Table.DoesNotExist:
            raise TableNotFound(table=table_name) from None
        if table.key_type != "int":
            raise BadRequest("only integer-keyed tables allocate keys", table=table_name)
        first = table.next_key if above is None else max(table.next_key, above + 1)
        if first + count - 1 > INT_KEY_MAX:
            raise KeysExhausted(table=table_name)
        Table.objects.filter(pk=table.pk).update(next_key=first + count)
    return KeyBlock(table=table_name, first=first, count=count)


def keys_reserve_above(table: Table, highest: int) -> None:
    """Make sure generated keys start above ``highest`` (after loading explicit keys).

    At the very top of the key space the counter cannot move past it (the column holds
    64-bit integers): it stays, and a keyless add answers ``keys_exhausted`` then.
    """
    target = min(highest + 1, INT_KEY_MAX)
    Table.objects.filter(pk=table.pk, next_key__lt=target).update(next_key=target)


def table_delete(name: str) -> None:
    """See below; holds the maintenance lease, so no move of the table runs meanwhile."""
    with leases.held(leases.MAINTENANCE, leases.holder_name(f"delete table {name}"), 120):
        _table_delete(name)


def _table_delete(name: str) -> None:
    """Delete a table: its tablets, the master's copy of its rows, and (on every tablet
    server) its rows and change-log entries.

    One transaction removes it from the metadata (a new version, pushed); each server is
    then told to drop what it stores. A server that cannot be told now is told again by
    ``tables_dropped_settle`` (every collection); until all have dropped it, the name
    cannot be reused (``DroppedTable``).
    """
    servers = sorted(TabletServer.objects.values_list("node_id", flat=True))
    with transaction.atomic():
        deleted, _ = Table.objects.filter(name=name).delete()
        if not deleted:
            raise TableNotFound(table=name)
        DroppedTable.objects.update_or_create(name=name, defaults={"servers": servers})
        metadata_bump(f"delete table {name}")
    tables_dropped_settle()


def tables_dropped_settle(*, timeout_s: float = 10) -> int:
    """Tell every server that still stores a deleted table to drop it; returns how many
    tables are still pending. Best effort per server: one that is down is asked later."""
    pending = 0
    for dropped in DroppedTable.objects.all():
        left = []
        for node_id in dropped.servers:
            try:
                link_call(node_id, DropTableCommand(id=new_command_id(), table=dropped.name),
                          timeout_s=timeout_s)  # fmt: skip
            except DistdbError as exc:  # down, or the metadata not applied yet: later
                log.info("%s has not dropped table %s yet: %s", node_id, dropped.name, exc)
                left.append(node_id)
        if left:
            DroppedTable.objects.filter(pk=dropped.pk).update(servers=left)
            pending += 1
        else:
            dropped.delete()
    return pending

"""Tables: creation (with an initial tablet) and the allocator of generated integer keys."""

from __future__ import annotations

import re

from django.db import IntegrityError, transaction
from django.db.models import Count

from distdb.errors import BadRequest, Conflict, TableExists, TableNotFound, ValidationFailed
from distdb.keys import KEY_TYPES
from distdb.protocol import MAX_KEY_BLOCK, KeyBlock
from master_app.models import Table, TabletServer
from master_app.services.metadata import RangeAssignment, metadata_commit

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def table_create(name: str, key_type: str, columns: list[str] | None = None) -> Table:
    """Create a table with one tablet over the whole key space on the least-loaded live server.

    The rebalancer splits it later as it grows.
    """
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
    server = (
        TabletServer.objects.filter(state=TabletServer.State.UP, draining=False)
        .annotate(n=Count("tablets"))
        .order_by("n", "node_id")
        .first()
    )
    if server is None:
        raise Conflict("no live tablet server to hold the new table; start one first")
    try:
        with transaction.atomic():
            table = Table.objects.create(name=name, key_type=key_type, columns=columns)
            metadata_commit(
                table, [RangeAssignment(name, "", None, server.node_id)], f"create table {name}"
            )
    except IntegrityError:
        raise TableExists(name=name) from None
    return table


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
        Table.objects.filter(pk=table.pk).update(next_key=first + count)
    return KeyBlock(table=table_name, first=first, count=count)


def keys_reserve_above(table: Table, highest: int) -> None:
    """Make sure generated keys start above ``highest`` (after loading explicit keys)."""
    Table.objects.filter(pk=table.pk, next_key__lte=highest).update(next_key=highest + 1)

"""Seeding a table from a fixture at first start: balanced contiguous ranges, rows shipped.

Until the rebalancer has data to balance, the master cuts the fixture's key space into
one contiguous range per live tablet server, balanced by row count, ships each server
its rows over the link, keeps its own consolidated copy, and then commits the metadata
that makes the servers own their ranges. Every step is idempotent, so a seed that was
interrupted is simply run again.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import transaction

from distdb.keys import encode_key
from distdb.protocol import Cells, IngestCommand, Row
from master_app.models import ConsolidatedRow, MetadataVersion, Table
from master_app.services.link import link_call, new_command_id
from master_app.services.metadata import RangeAssignment, metadata_commit
from master_app.services.tables import keys_reserve_above

log = logging.getLogger(__name__)
SHIP_BATCH = 1000


@dataclass
class SeedResult:
    table: str
    rows: int
    ranges: list[RangeAssignment]
    already_seeded: bool = False


def seed_reason(table: str) -> str:
    return f"seed {table}"


def table_seed(
    table_name: str,
    rows: Iterable[tuple[int | str, Cells]],
    server_ids: list[str],
    *,
    key_type: str = "int",
    progress: Callable[[int], None] | None = None,
) -> SeedResult:
    """Create ``table_name`` from ``rows`` spread over ``server_ids`` (once)."""
    if MetadataVersion.objects.filter(reason=seed_reason(table_name)).exists():
        count = ConsolidatedRow.objects.filter(table__name=table_name).count()
        return SeedResult(table_name, count, [], already_seeded=True)
    if not server_ids:
        raise ValueError("no tablet server to seed")
    stored = sorted(((encode_key(key_type, k), k, cells) for k, cells in rows), key=lambda r: r[0])
    ranges = split_balanced([s for s, _, _ in stored], sorted(server_ids), table_name)
    table, _ = Table.objects.get_or_create(name=table_name, defaults={"key_type": key_type})

    stored_keys = [s for s, _, _ in stored]
    shipped = 0
    for assignment in ranges:
        lo = bisect_left(stored_keys, assignment.start)
        hi = len(stored) if assignment.end is None else bisect_left(stored_keys, assignment.end)
        part = [Row(key=s, cells=cells) for s, _, cells in stored[lo:hi]]
        for i in range(0, len(part), SHIP_BATCH):
            batch = part[i : i + SHIP_BATCH]
            command = IngestCommand(id=new_command_id(), table=table_name, rows=batch)
            link_call(assignment.server_id, command, timeout_s=60)
            shipped += len(batch)
            if progress:
                progress(shipped)

    with transaction.atomic():
        existing = set(ConsolidatedRow.objects.filter(table=table).values_list("key", flat=True))
        ConsolidatedRow.objects.bulk_create(
            [
                ConsolidatedRow(table=table, key=s, cells=cells, source_server="seed")
                for s, _, cells in stored
                if s not in existing
            ],
            batch_size=1000,
        )
        if key_type == "int":
            # encode_key above rejected every non-int key of an int table: the filter drops
            # nothing, it only narrows ``int | str`` for the type checker.
            int_keys = [k for _, k, _ in stored if isinstance(k, int)]
            if int_keys:
                keys_reserve_above(table, max(int_keys))
        metadata_commit(table, ranges, seed_reason(table_name))
    log.info("seeded %s: %d rows over %s", table_name, len(stored), server_ids)
    return SeedResult(table_name, len(stored), ranges)


def split_balanced(keys: list[str], server_ids: list[str], table: str) -> list[RangeAssignment]:
    """Contiguous ranges, one per server, with row counts differing by at most one."""
    n = len(server_ids)
    cuts = [keys[(i * len(keys)) // n] for i in range(1, n)] if len(keys) >= n else []
    bounds = ["", *cuts]
    ends: list[str | None] = [*cuts, None]
    return [
        RangeAssignment(table, start, end, server)
        for start, end, server in zip(bounds, ends, server_ids, strict=False)
    ]

"""Questions answered from the master's consolidated copy: row counts and split keys.

The copy is refreshed by ``collect`` (a rebalance collects first), so planning from it
needs no round trip to the tablet servers; racing writes only make a plan slightly off.
"""

from __future__ import annotations

from django.db.models import QuerySet

from master_app.models import ConsolidatedRow, Table


def rows_in(table: Table, start: str, end: str | None) -> QuerySet[ConsolidatedRow]:
    """The master's rows of [start, end) of ``table`` (stored keys; end None = +inf)."""
    rows = ConsolidatedRow.objects.filter(table=table, key__gte=start)
    return rows if end is None else rows.filter(key__lt=end)


def count_in(table: Table, start: str, end: str | None) -> int:
    return rows_in(table, start, end).count()


def key_at(table: Table, start: str, end: str | None, offset: int) -> str:
    """The stored key of the row at 0-based ``offset`` in [start, end), in key order."""
    key = rows_in(table, start, end).order_by("key").values_list("key", flat=True)[offset]
    return key

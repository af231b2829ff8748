"""Collect applies change logs in sequence order, idempotently."""

from __future__ import annotations

from distdb.protocol import ChangeEntry
from master_app.models import ConsolidatedRow, Table, TabletServer
from master_app.services.collect import changes_apply


def _entries() -> list[ChangeEntry]:
    return [
        ChangeEntry(seq=1, table="t", key="a", op="put", cells={"x": 1}),
        ChangeEntry(seq=2, table="t", key="b", op="put", cells={"y": 2}),
        ChangeEntry(seq=3, table="t", key="a", op="put", cells={"x": 3}),
        ChangeEntry(seq=4, table="t", key="b", op="delete", cells=None),
    ]


def test_entries_are_applied_in_sequence_order_and_acknowledged(servers):
    Table.objects.create(name="t", key_type="str")
    last = changes_apply(servers[0], list(reversed(_entries())))
    assert last == 4
    rows = {r.key: r.cells for r in ConsolidatedRow.objects.all()}
    assert rows == {"a": {"x": 3}}
    assert TabletServer.objects.get(pk=servers[0].pk).acked_seq == 4


def test_a_replayed_batch_changes_nothing(servers):
    Table.objects.create(name="t", key_type="str")
    changes_apply(servers[0], _entries())
    ConsolidatedRow.objects.filter(key="a").update(cells={"x": "newer"})  # a later change
    changes_apply(servers[0], _entries())
    assert ConsolidatedRow.objects.get(key="a").cells == {"x": "newer"}
    assert not ConsolidatedRow.objects.filter(key="b").exists()

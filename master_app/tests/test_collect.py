"""Collect applies change logs in sequence order, idempotently."""

from __future__ import annotations

from distdb.keys import encode_key
from distdb.protocol import ChangeEntry
from master_app.models import ConsolidatedRow, Table, TabletServer
from master_app.services.collect import changes_apply
from master_app.services.tables import keys_allocate


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


def test_explicit_integer_keys_move_the_generated_key_counter_past_them(servers):
    table = Table.objects.create(name="n", key_type="int", next_key=1)
    entries = [
        ChangeEntry(seq=i, table="n", key=encode_key("int", k), op="put", cells={})
        for i, k in enumerate([3, -9, 42, 7], start=1)
    ]
    changes_apply(servers[0], entries)
    table.refresh_from_db()
    assert table.next_key == 43
    assert keys_allocate("n", 5).first == 43
    changes_apply(servers[0], [ChangeEntry(seq=9, table="n", key=encode_key("int", 5), op="put")])
    table.refresh_from_db()
    assert table.next_key == 48  # never moved back


def test_a_client_that_hit_an_explicit_key_gets_a_block_above_it(servers):
    Table.objects.create(name="n", key_type="int", next_key=1)
    assert keys_allocate("n", 10, above=500).first == 501
    assert keys_allocate("n", 10).first == 511
    assert keys_allocate("n", 10, above=3).first == 521  # a stale hint changes nothing

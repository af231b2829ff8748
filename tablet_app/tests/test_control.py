"""The control plane services the link agent calls: metadata, freezes, ranges, change log."""

from __future__ import annotations

import time
from datetime import timedelta

import orjson
import pytest
from django.utils import timezone

from distdb import protocol
from distdb.errors import Conflict
from distdb.protocol import Mutation
from tablet_app.models import ChangeLogEntry, MetadataSnapshot, OwnedRange, Row
from tablet_app.services import (
    changes_apply_copied,
    changes_batch,
    changes_in_range_since,
    changes_last_seq,
    changes_trim,
    freezes,
    freezes_due,
    freezes_resolve,
    metadata_apply,
    metadata_current,
    metadata_version_current,
    range_count,
    range_drop,
    range_unfreeze,
    rows_drop_unowned,
    rows_export,
    rows_ingest,
    rows_mutate,
    rows_read,
    table_drop,
)
from tablet_app.tests.conftest import NODE, OTHER, freeze, tablet

pytestmark = pytest.mark.django_db


def ranges() -> list[tuple]:
    return list(
        OwnedRange.objects.order_by("table", "start_key").values_list(
            "table", "start_key", "end_key", "version"
        )
    )


def put(table: str, *keys: str) -> None:
    result = rows_mutate(table, [Mutation(op="upsert", key=k, cells={"k": k}) for k in keys])
    assert {r["status"] for r in result.results} <= {"created", "updated"}


def changes_since(after_seq: int, limit: int, **kwargs: int) -> list[protocol.ChangeEntry]:
    """The entries of one change batch (what the link ships to the master)."""
    return changes_batch(after_seq, limit, **kwargs)[0]


def frozen(table: str, key: str) -> bool:
    result = rows_mutate(table, [Mutation(op="upsert", key=key, cells={})])
    return result.results[0]["status"] == "error"


# --- metadata -------------------------------------------------------------------------------------


def test_metadata_current_is_version_zero_before_any_metadata_arrives():
    assert metadata_current() == protocol.Metadata(version=0)
    assert metadata_version_current() == 0


def test_metadata_apply_makes_owned_ranges_equal_to_this_servers_tablets(assign):
    assign(tablet("t", "", "g"), tablet("t", "g", "p", server=OTHER), tablet("t", "p"), version=1)
    assert ranges() == [("t", "", "g", 1), ("t", "p", None, 1)]
    assign(tablet("t", "", "p"), tablet("t", "p", server=OTHER), tablet("v"), version=2)
    assert ranges() == [("t", "", "p", 2), ("v", "", None, 2)]
    assert metadata_current().version == 2


def test_metadata_apply_ignores_a_version_older_than_the_newest_stored(assign):
    assign(tablet("t"), version=5)
    assign(tablet("t", server=OTHER), version=4)
    assert ranges() == [("t", "", None, 5)]
    assert metadata_current().version == 5


def test_metadata_apply_of_the_same_version_again_changes_nothing(assign):
    assign(tablet("t", "", "m"), version=5)
    assign(tablet("t", "", "m"), version=5)
    assert ranges() == [("t", "", "m", 5)]
    assert MetadataSnapshot.objects.count() == 1


def test_metadata_apply_keeps_only_the_newest_snapshots(assign):
    for version in range(1, 9):
        assign(tablet("t"), version=version)
    assert list(MetadataSnapshot.objects.values_list("version", flat=True)) == [8, 7, 6, 5, 4]


def test_a_range_that_stops_being_owned_keeps_its_rows_until_dropped(assign):
    assign(tablet("t"), version=1)
    put("t", "a", "n", "z")
    changes = ChangeLogEntry.objects.count()
    assign(tablet("t", "", "m"), tablet("t", "m", server=OTHER), version=2)
    assert range_count("t", "m", None) == 2
    assert rows_read("t", ["n"]).outdated == ["n"]
    assert range_drop("t", "m", None) == 2
    assert list(Row.objects.values_list("key", flat=True)) == ["a"]
    assert ChangeLogEntry.objects.count() == changes  # drops are not logged


def test_range_drop_refuses_a_range_still_owned(assign):
    assign(tablet("t", "", "m"), version=1)
    put("t", "a", "b")
    with pytest.raises(Conflict):
        range_drop("t", "", None)
    assert range_count("t", "", None) == 2


def test_range_drop_deletes_in_batches(assign, monkeypatch):
    from tablet_app.services import control

    monkeypatch.setattr(control, "BATCH", 7)
    rows_ingest(
        "t", [protocol.Row(key=f"k{i:03d}", cells={}) for i in range(30)], log_changes=False
    )
    assert range_drop("t", "k005", "k025") == 20
    assert range_count("t", "", None) == 10


# --- freezes --------------------------------------------------------------------------------------


def test_range_freeze_freezes_only_the_given_part_of_an_owned_range(assign):
    assign(tablet("t"), version=1)
    freeze("t", "g", "p")
    assert [frozen("t", k) for k in ("a", "g", "o", "p", "z")] == [False, True, True, False, False]
    assert ranges() == [("t", "", "g", 1), ("t", "g", "p", 1), ("t", "p", None, 1)]


def test_every_piece_a_freeze_cuts_stays_as_replicated_as_the_range_it_was_part_of(db):
    """Chaos seed 20261206: the piece above a frozen middle was made unreplicated, so its
    writes were acknowledged without reaching the follower."""
    follower = protocol.Follower(server=OTHER, url=f"http://{OTHER}")
    t = protocol.TabletAssignment(
        table="t", start="", end=None, server=NODE, url=f"http://{NODE}", in_sync=[follower]
    )
    tables = {"t": protocol.TableInfo(key_type="str", rf=2)}
    metadata_apply(protocol.Metadata(version=1, tables=tables, tablets=[t]), NODE)
    OwnedRange.objects.update(ready_seq=7)
    freeze("t", "g", "p")
    pieces = list(OwnedRange.objects.order_by("start_key"))
    assert [(r.start_key, r.end_key) for r in pieces] == [("", "g"), ("g", "p"), ("p", None)]
    for r in pieces:
        assert (r.replicated, r.followers, r.ready_seq) == (True, [[OTHER, f"http://{OTHER}"]], 7)


def test_range_unfreeze_lets_writes_through_again(assign):
    assign(tablet("t"), version=1)
    freeze("t", "", None)
    assert frozen("t", "a")
    range_unfreeze("t", "", None)
    assert not frozen("t", "a")


def test_freezes_survive_new_metadata_even_once_their_lease_has_ended(assign):
    assign(tablet("t", "", "x"), version=1)
    freeze("t", "g", "p")
    freeze("t", "p", "q", ends_in_s=-1)
    assign(tablet("t", "", "x"), tablet("u"), version=2)
    # An ended lease does not reopen writes: the master may have committed the move.
    assert [frozen("t", k) for k in ("a", "g", "o", "p", "q")] == [False, True, True, True, False]
    assign(tablet("t", "", "x"), version=3)
    assert frozen("t", "h")


def test_resolving_an_ended_freeze_reopens_a_range_the_master_still_gives_us(assign, clock):
    metadata = assign(tablet("t"), version=1)
    freeze("t", "g", "p", ends_in_s=-1)
    freeze("t", "x", "z")
    assert freezes_due()
    assert freezes_resolve(metadata, NODE, clock()) == 1
    assert not freezes_due()
    assert [frozen("t", k) for k in ("h", "y")] == [False, True]  # a live lease stays


def test_resolving_an_ended_freeze_gives_the_range_away_if_the_master_committed_the_move(assign):
    assign(tablet("t"), version=1)
    freeze("t", "g", "p", ends_in_s=-1)
    moved = protocol.Metadata(
        version=2,
        tables={"t": protocol.TableInfo(key_type="str")},
        tablets=[
            tablet("t", "", "g"),
            tablet("t", "g", "p", server=OTHER),
            tablet("t", "p"),
        ],
    )
    freezes_resolve(moved, NODE, freezes.clock())
    result = rows_mutate("t", [Mutation(op="upsert", key="h", cells={})])
    assert result.results[0]["status"] == "outdated"
    assert not frozen("t", "a") and not frozen("t", "q")


def test_a_freeze_that_ends_after_the_metadata_was_fetched_is_not_lifted(assign, clock):
    metadata = assign(tablet("t"), version=1)
    fetched_at = clock()
    freeze("t", "g", "p", ends_in_s=0.001)
    clock.advance(1)
    assert freezes_resolve(metadata, NODE, fetched_at) == 0
    assert frozen("t", "h")


def test_a_lease_ends_by_the_monotonic_clock_not_the_wall_clock(assign, clock, monkeypatch):
    assign(tablet("t"), version=1)
    freeze("t", "g", "p", ends_in_s=10)
    later = timezone.now() + timedelta(days=1)
    monkeypatch.setattr(timezone, "now", lambda: later)  # the wall clock steps forward
    monkeypatch.setattr(time, "time", lambda: later.timestamp())
    assert not freezes_due()
    clock.advance(10)
    assert freezes_due()


def test_a_freeze_from_an_earlier_boot_is_rearmed_for_its_whole_lease(assign, clock):
    metadata = assign(tablet("t"), version=1)
    freeze("t", "g", "p", ends_in_s=-100)  # long over, by a clock of another boot
    OwnedRange.objects.filter(frozen_deadline__isnull=False).update(frozen_boot="old-boot")
    assert not freezes_due()  # re-armed: the time that passed is unknown
    assert freezes_resolve(metadata, NODE, clock()) == 0 and frozen("t", "h")
    clock.advance(30)
    assert freezes_due()
    assert freezes_resolve(metadata, NODE, clock()) == 1 and not frozen("t", "h")


# --- rows in and out ------------------------------------------------------------------------------


def test_rows_ingest_upserts_rows_without_logging_them_unless_asked(assign):
    assign(tablet("t"), version=1)
    put("t", "a")
    n = rows_ingest(
        "t",
        [protocol.Row(key="a", cells={"new": 1}), protocol.Row(key="b", cells={"x": [1]})],
        log_changes=False,
    )
    assert n == 2
    assert ChangeLogEntry.objects.count() == 1  # only put("t", "a")
    assert orjson.loads(Row.objects.get(key="a").cells) == {"new": 1}
    before = changes_last_seq()
    rows_ingest("t", [protocol.Row(key="c", cells={})], log_changes=True)
    assert changes_since(before, 10) == [
        protocol.ChangeEntry(seq=changes_last_seq(), table="t", key="c", op="put", cells={})
    ]


def test_rows_ingest_keeps_the_last_cells_of_a_key_given_twice(assign):
    rows = [protocol.Row(key="a", cells={"v": 1}), protocol.Row(key="a", cells={"v": 2})]
    assert rows_ingest("t", rows, log_changes=False) == 1
    assert orjson.loads(Row.objects.get(key="a").cells) == {"v": 2}


def test_rows_export_pages_a_range_in_key_order_and_ingest_copies_it(assign):
    assign(tablet("t"), version=1)
    rows_mutate(
        "t", [Mutation(op="upsert", key=f"k{i:02d}", cells={"i": i, "s": "é"}) for i in range(25)]
    )
    pages, after = [], None
    while True:
        page, more = rows_export("t", "k05", "k20", after, 4, 1 << 20)
        pages.append(page)
        if not more:
            break
        after = page[-1].key
    assert [len(p) for p in pages] == [4, 4, 4, 3]
    exported = [row for page in pages for row in page]
    assert [r.key for r in exported] == [f"k{i:02d}" for i in range(5, 20)]
    assert rows_ingest("copy", exported, log_changes=False) == 15
    copied = dict(Row.objects.filter(table="copy").values_list("key", "cells"))
    originals = dict(Row.objects.filter(table="t", key__in=copied).values_list("key", "cells"))
    assert {k: orjson.loads(v) for k, v in copied.items()} == {
        k: orjson.loads(v) for k, v in originals.items()
    }


# --- change log -----------------------------------------------------------------------------------


def test_changes_since_returns_entries_in_seq_order_with_parsed_cells(assign):
    assign(tablet("t"), version=1)
    put("t", "a")
    rows_mutate("t", [Mutation(op="delete_row", key="a")])
    put("t", "b")
    entries = changes_since(0, 10)
    assert [(e.key, e.op, e.cells) for e in entries] == [
        ("a", "put", {"k": "a"}),
        ("a", "delete", None),
        ("b", "put", {"k": "b"}),
    ]
    assert [e.seq for e in entries] == sorted(e.seq for e in entries)
    assert changes_since(entries[0].seq, 1) == [entries[1]]
    assert changes_last_seq() == entries[-1].seq


def test_changes_trim_deletes_acknowledged_entries_and_seqs_keep_growing(assign, monkeypatch):
    from tablet_app.services import control

    monkeypatch.setattr(control, "BATCH", 2)
    assign(tablet("t"), version=1)
    put("t", "a", "b", "c", "d", "e")
    seqs = [e.seq for e in changes_since(0, 10)]
    assert changes_trim(seqs[2]) == 3
    assert [e.seq for e in changes_since(0, 10)] == seqs[3:]
    assert changes_trim(seqs[-1]) == 2
    assert changes_since(0, 10) == []
    put("t", "f")
    assert changes_since(0, 10)[0].seq > seqs[-1]


def test_changes_in_range_since_keeps_only_that_tables_range(assign):
    assign(tablet("t"), tablet("u"), version=1)
    put("t", "a", "m", "z")
    put("u", "m")
    entries, more = changes_in_range_since("t", "b", "n", 0, 10, 1 << 20)
    assert [(e.table, e.key) for e in entries] == [("t", "m")] and more is False


def test_pages_are_cut_by_utf8_bytes_not_characters_and_hold_one_row_however_large(assign):
    """Issue #9 defect 3: 400 CJK characters are 1,200 bytes; a page capped in
    characters ships three times what its cap says."""
    assign(tablet("t"), version=1)
    rows_mutate(
        "t", [Mutation(op="upsert", key=f"k{i}", cells={"d": "中" * 400}) for i in range(10)]
    )
    entries, more = changes_batch(0, 100, max_bytes=3000)
    assert len(entries) == 2 and more  # 2 x ~1.2 KB fit in 3,000 bytes; 3 would not
    rows, more = rows_export("t", "", None, None, 100, 3000)
    assert len(rows) == 2 and more
    big = "中" * 100_000  # 300 KB: over the cap on its own
    before = changes_last_seq()  # (PostgreSQL's sequences do not restart per test)
    rows_mutate("t", [Mutation(op="upsert", key="k0", cells={"d": big})])
    rows, more = rows_export("t", "", None, None, 100, 3000)
    assert [r.key for r in rows] == ["k0"] and rows[0].cells == {"d": big} and more
    entries, more = changes_in_range_since("t", "", None, before, 100, 3000)
    assert [e.key for e in entries] == ["k0"] and not more


# --- moves: leftovers and catch-up ----------------------------------------------------------------


def test_rows_drop_unowned_deletes_only_rows_outside_the_owned_ranges(assign):
    assign(tablet("t", "c", "f"), tablet("t", "m", "p"), tablet("t", "", "c", server=OTHER))
    keys = ["a", "b", "c", "d", "g", "m", "o", "p", "z"]
    rows_ingest("t", [protocol.Row(key=k, cells={}) for k in keys], log_changes=False)
    assert rows_drop_unowned("t") == 5
    assert sorted(Row.objects.filter(table="t").values_list("key", flat=True)) == [
        "c",
        "d",
        "m",
        "o",
    ]


def test_changes_apply_copied_applies_the_last_image_per_key_and_logs_nothing(assign):
    rows_ingest("t", [protocol.Row(key="a", cells={"v": 0})], log_changes=False)
    entries = [
        protocol.ChangeEntry(seq=7, table="t", key="b", op="put", cells={"v": 2}),
        protocol.ChangeEntry(seq=5, table="t", key="b", op="put", cells={"v": 1}),
        protocol.ChangeEntry(seq=6, table="t", key="a", op="delete"),
    ]
    assert changes_apply_copied("t", entries) == 3
    assert changes_apply_copied("t", entries) == 3  # again: nothing changes
    assert list(Row.objects.filter(table="t").values_list("key", "cells")) == [("b", '{"v":2}')]
    assert ChangeLogEntry.objects.count() == 0


def test_a_change_batch_stops_near_max_bytes_but_always_returns_one_entry(assign):
    assign(tablet("t"), version=1)
    big = "x" * 1000
    rows_mutate("t", [Mutation(op="upsert", key=f"k{i}", cells={"b": big}) for i in range(10)])
    assert len(changes_since(0, 100, max_bytes=3500)) == 3
    assert len(changes_since(0, 100, max_bytes=10)) == 1
    assert len(changes_since(0, 100)) == 10


def test_a_change_batch_says_whether_entries_were_left_out(assign):
    assign(tablet("t"), version=1)
    put("t", "a", "b", "c")
    assert changes_batch(0, 2)[1] is True  # the limit cut it
    assert changes_batch(0, 100, max_bytes=10)[1] is True  # the size cut it
    assert changes_batch(0, 3)[1] is False  # exactly the limit, and nothing after it
    assert changes_batch(0, 4)[1] is False


def test_table_drop_deletes_a_deleted_tables_rows_and_log_but_never_an_owned_one(assign):
    assign(tablet("t"), tablet("keep"), version=1)
    put("t", "a", "b")
    put("keep", "a")
    with pytest.raises(Conflict):
        table_drop("t")  # still owned here: nothing goes
    assign(tablet("keep"), version=2)  # the master deleted "t"
    assert table_drop("t") == 2
    assert not Row.objects.filter(table="t").exists()
    assert not ChangeLogEntry.objects.filter(table="t").exists()  # no old rows to collect
    assert Row.objects.filter(table="keep").count() == 1
    assert ChangeLogEntry.objects.filter(table="keep").count() == 1


def test_a_second_freeze_never_shortens_the_first(assign, clock):
    assign(tablet("t"), version=1)
    freeze("t", "g", "p", ends_in_s=30)
    freeze("t", "g", "p", ends_in_s=1)  # a stale master with a shorter lease
    clock.advance(5)
    assert not freezes_due() and frozen("t", "h")

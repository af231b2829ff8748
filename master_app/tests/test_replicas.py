"""The master's side of replication, on an injected clock: leases, failover, its grace
period, in-sync shrinking, a server back without its data, and collection after a failover."""

from __future__ import annotations

import pytest

from distdb.protocol import ChangeEntry
from master_app.models import ConsolidatedRow, Failover, Table, Tablet, TabletServer
from master_app.services import replicas
from master_app.services.collect import changes_apply
from master_app.services.metadata import RangeAssignment, metadata_commit, metadata_version_current

pytestmark = pytest.mark.django_db

LEASE, MARGIN = 4.0, 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(settings) -> Clock:
    settings.DISTDB_LEADER_LEASE_S, settings.DISTDB_LEADER_LEASE_MARGIN_S = LEASE, MARGIN
    settings.DISTDB_HEARTBEAT_S = 1
    replicas.hearing.__init__()  # a fresh process: it has heard nobody yet
    return Clock()


@pytest.fixture
def table(servers) -> Table:
    TabletServer.objects.create(node_id="tablet-3", url="http://t3", state="up")
    table = Table.objects.create(name="t", key_type="str", rf=2)
    metadata_commit(
        table,
        [
            RangeAssignment("t", "", "m", "tablet-1", ("tablet-2",)),
            RangeAssignment("t", "m", None, "tablet-2", ("tablet-1",)),
        ],
        "test",
    )
    return table


def tablets() -> list[tuple[str, str, list[str]]]:
    return [
        (t.start_key, t.server.node_id, t.in_sync)
        for t in Tablet.objects.select_related("server").order_by("start_key")
    ]


def beat(clock: Clock, *nodes: str, seconds: float = 1.0) -> list[replicas.Promotion]:
    """``seconds`` of heartbeats from ``nodes`` (granted), checking failovers after each."""
    promoted: list[replicas.Promotion] = []
    end = clock.now + seconds
    while clock.now < end:
        clock.now += 0.5
        for node in nodes:
            replicas.lease_grant(node, clock=clock)
        promoted += replicas.failover_check(clock=clock)
    return promoted


def test_a_grant_names_the_current_metadata_version(table, clock):
    assert replicas.lease_grant("tablet-1", clock=clock) == metadata_version_current()
    assert TabletServer.objects.get(node_id="tablet-1").lease_granted_at == clock.now


def test_a_leader_is_failed_over_only_once_its_lease_and_margin_have_surely_passed(table, clock):
    beat(clock, "tablet-1", "tablet-2", seconds=LEASE + MARGIN + 2)  # past the grace period
    assert beat(clock, "tablet-2", seconds=LEASE + MARGIN - 0.5) == []  # tablet-1 went silent
    promoted = beat(clock, "tablet-2", seconds=1.0)
    assert [(p.start, p.old, p.new) for p in promoted] == [("", "tablet-1", "tablet-2")]
    assert tablets() == [("", "tablet-2", []), ("m", "tablet-2", [])]
    failover = Failover.objects.get()
    assert (failover.from_server, failover.to_server) == ("tablet-1", "tablet-2")
    assert failover.unavailable_s >= LEASE + MARGIN
    deposed = TabletServer.objects.get(node_id="tablet-1").deposed
    assert deposed == [{"table": "t", "start": "", "end": "m", "upto": None}]


def test_a_master_that_heard_nobody_waits_a_lease_before_failing_anything_over(table, clock):
    beat(clock, "tablet-1", "tablet-2", seconds=LEASE + MARGIN + 2)
    clock.now += 60  # the master was cut off (or down): nobody's lease was renewed
    assert beat(clock, "tablet-2", seconds=LEASE + MARGIN - 0.5) == []  # grace
    assert [p.old for p in beat(clock, "tablet-2", seconds=1.5)] == ["tablet-1"]


def test_no_follower_with_a_lease_means_no_failover(table, clock):
    beat(clock, "tablet-1", "tablet-2", seconds=LEASE + MARGIN + 2)
    assert beat(clock, "tablet-3", seconds=LEASE + MARGIN + 3) == []  # both silent
    assert tablets() == [("", "tablet-1", ["tablet-2"]), ("m", "tablet-2", ["tablet-1"])]


def test_of_two_dead_copies_the_one_back_first_takes_over(table, clock):
    beat(clock, "tablet-1", "tablet-2", seconds=LEASE + MARGIN + 2)
    beat(clock, "tablet-3", seconds=LEASE + MARGIN + 3)  # both gone: nothing changes
    promoted = beat(clock, "tablet-2", "tablet-3", seconds=1.0)  # tablet-2 is back
    assert [(p.start, p.new) for p in promoted] == [("", "tablet-2")]
    assert tablets() == [("", "tablet-2", []), ("m", "tablet-2", [])]


def test_a_leader_drops_a_follower_only_from_the_ranges_it_leads(table):
    assert replicas.in_sync_shrink("tablet-1", "tablet-2") == 1
    assert tablets() == [("", "tablet-1", []), ("m", "tablet-2", ["tablet-1"])]
    version = metadata_version_current()
    assert replicas.in_sync_shrink("tablet-3", "tablet-1") == 0  # leads nothing
    assert metadata_version_current() == version  # and commits nothing


def test_a_server_back_without_its_data_leads_and_follows_nothing(table):
    assert replicas.amnesia_settle("tablet-1") == 2
    assert tablets() == [("", "tablet-2", []), ("m", "tablet-2", [])]


def test_a_hello_settles_what_was_deposed_and_a_log_that_went_backwards(table, servers):
    TabletServer.objects.filter(node_id="tablet-1").update(
        acked_seq=50, deposed=[{"table": "t", "start": "", "end": "m", "upto": None}]
    )
    replicas.deposed_settle("tablet-1", 70)
    server = TabletServer.objects.get(node_id="tablet-1")
    assert server.deposed[0]["upto"] == 70 and server.acked_seq == 50
    replicas.deposed_settle("tablet-1", 3)  # a new disk: its log restarts
    assert TabletServer.objects.get(node_id="tablet-1").acked_seq == 3


def entry(seq: int, key: str, op: str = "put", cells: dict | None = None) -> ChangeEntry:
    return ChangeEntry(seq=seq, table="t", key=key, op=op, cells=cells)


def test_collection_skips_a_deposed_leaders_entries_for_the_ranges_it_lost(table, servers):
    old = TabletServer.objects.get(node_id="tablet-1")
    TabletServer.objects.filter(pk=old.pk).update(
        deposed=[{"table": "t", "start": "", "end": "m", "upto": 12}]
    )
    changes_apply(old, [entry(11, "a", cells={"v": "stale"}), entry(13, "b", cells={"v": 1})])
    assert dict(ConsolidatedRow.objects.values_list("key", "cells")) == {"b": {"v": 1}}
    assert TabletServer.objects.get(pk=old.pk).deposed == []  # settled: acked past 12


def test_a_promoted_leaders_clear_replaces_the_masters_copy_of_the_range(table, servers):
    for key in ("a", "ghost", "z"):
        ConsolidatedRow.objects.create(table=table, key=key, cells={"v": "old"})
    new = TabletServer.objects.get(node_id="tablet-2")
    clear = entry(1, "", op="clear", cells={"end": "m"})
    changes_apply(new, [clear, entry(2, "a", cells={"v": "new"})])
    rows = dict(ConsolidatedRow.objects.values_list("key", "cells"))
    assert rows == {"a": {"v": "new"}, "z": {"v": "old"}}  # outside [, m) untouched

"""The run's lock (leases), recovery of interrupted runs, status and the commands' front ends."""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from distdb.errors import LeaseHeld, LeaseLost
from master_app.models import ConsolidatedRow, Lease, RebalanceRun, Table, TabletServer
from master_app.services import leases
from master_app.services.metadata import RangeAssignment, metadata_commit
from master_app.services.rebalance import rebalance_run
from master_app.services.status import cluster_status

pytestmark = pytest.mark.django_db


def test_a_lease_has_one_holder_until_it_expires():
    assert leases.lease_acquire("x", "a", 60)
    assert leases.lease_acquire("x", "b", 60) is None
    assert leases.lease_acquire("x", "a", 60)  # re-entrant for its holder
    Lease.objects.filter(name="x").update(until=timezone.now() - timedelta(seconds=1))
    assert leases.lease_acquire("x", "b", 60)  # the holder died: it expired
    assert not leases.lease_renew("x", "a", 60)  # and a cannot renew it any more
    leases.lease_release("x", "b")
    assert leases.lease_current("x") is None


def test_held_reports_who_holds_the_lease():
    leases.lease_acquire(leases.MAINTENANCE, "rebalance (beat) host pid 7", 60)
    expected = r"rebalance \(beat\) host pid 7 holds"
    with pytest.raises(LeaseHeld, match=expected), leases.held(leases.MAINTENANCE, "me", 60):
        pass


@pytest.mark.django_db(transaction=True)  # the renewing thread has its own connection
def test_held_renews_and_releases():
    with leases.held("y", "me", 60, renew_every_s=0.01) as lease:
        taken_until = Lease.objects.get(name="y").until
        assert lease.wait_renewed(2, timeout_s=30)
        lease.check()
        current = leases.lease_current("y")
        assert current.holder == "me" and current.until > taken_until  # extended
    assert leases.lease_current("y") is None


@pytest.mark.django_db(transaction=True)
def test_a_held_lease_taken_over_by_another_holder_is_reported_lost():
    with leases.held("z", "me", 60, renew_every_s=0.01) as lease:
        Lease.objects.filter(name="z").update(holder="someone else")
        assert lease.wait_renewed(sys.maxsize, timeout_s=30)  # returns once it is lost
        with pytest.raises(LeaseLost):
            lease.check()
    assert leases.lease_current("z").holder == "someone else"  # not released by the loser


def test_a_run_while_another_is_going_is_refused_and_not_recorded():
    leases.lease_acquire(leases.MAINTENANCE, "someone else", 60)
    with pytest.raises(LeaseHeld):
        rebalance_run("command")
    assert RebalanceRun.objects.count() == 0
    with pytest.raises(CommandError, match="a run is already going: someone else holds"):
        call_command("rebalance", "--no-progress")


def test_a_run_marks_runs_of_dead_processes_as_interrupted_and_unpins_logs():
    dead = RebalanceRun.objects.create(trigger="beat", step="move 1/2: t")
    TabletServer.objects.create(node_id="tablet-1", url="http://t1", trim_floor=5)
    run = rebalance_run("command")
    dead.refresh_from_db()
    assert dead.outcome == "failed" and "interrupted while move 1/2" in dead.error
    assert TabletServer.objects.get().trim_floor is None
    assert run.outcome == "nothing_to_do"  # no live servers, no tables


def test_cluster_status_shows_servers_ranges_rows_and_the_last_run(servers, capsys):
    table = Table.objects.create(name="t", key_type="str")
    metadata_commit(
        table,
        [RangeAssignment("t", "", "m", "tablet-1"), RangeAssignment("t", "m", None, "tablet-2")],
        "test",
    )
    for key in ("a", "b", "x"):
        ConsolidatedRow.objects.create(table=table, key=key, cells={})
    RebalanceRun.objects.create(trigger="beat", outcome="nothing_to_do", duration_s=0.1)
    status = cluster_status()
    assert status["metadata_version"] == 1
    assert [(s["node_id"], s["rows"]) for s in status["servers"]] == [
        ("tablet-1", 2),
        ("tablet-2", 1),
    ]
    assert status["servers"][0]["tablets"] == [
        {"table": "t", "start": "-inf", "end": "m", "rows": 2, "version": 1, "in_sync": []}
    ]
    assert status["last_run"]["outcome"] == "nothing_to_do"
    call_command("cluster_status", "--json")
    assert json.loads(capsys.readouterr().out)["servers"][1]["rows"] == 1
    call_command("cluster_status")
    out = capsys.readouterr().out
    assert "tablet-1" in out and "t [-inf, m) 2 rows (v1)" in out
    assert "last rebalance run: #" in out


def test_beat_runs_collection_and_rebalancing_on_intervals_editable_in_the_admin(settings):
    from django_celery_beat.models import PeriodicTask

    from master_app.schedule import schedule_ensure

    schedule_ensure()
    tasks = {t.task: t.interval.every for t in PeriodicTask.objects.select_related("interval")}
    assert tasks["distdb.rebalance"] == settings.DISTDB_REBALANCE_INTERVAL_S == 3600
    assert tasks["distdb.collect_changes"] == settings.DISTDB_COLLECT_INTERVAL_S
    PeriodicTask.objects.filter(task="distdb.rebalance").update(interval=None)  # edited
    schedule_ensure()  # a restart keeps the admin's edit
    assert PeriodicTask.objects.get(task="distdb.rebalance").interval is None

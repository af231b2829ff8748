"""cluster_status and the admin show each range's leader, in-sync set, followers' lag and
the failover history; a tablet server that does not answer costs only its own figures."""

from __future__ import annotations

import json
import threading

import pytest
from django.core.management import call_command

from distdb import protocol
from distdb.errors import TabletUnavailable
from master_app.models import Failover, Table, TabletServer
from master_app.services import replication_view
from master_app.services.metadata import RangeAssignment, metadata_commit
from master_app.services.status import cluster_status


def _state(node: str, last_seq: int, led=(), followed=()) -> protocol.ReplicationState:
    return protocol.ReplicationState(
        node_id=node,
        last_seq=last_seq,
        led=[protocol.LedRangeState(table="t", start=s, end=e, last_seq=n) for s, e, n in led],
        followed=[
            protocol.FollowedRangeState(
                table="t",
                start=s,
                end=e,
                leader=leader,
                version=2,
                applied_seq=seq,
                applied_age_s=age,
            )
            for s, e, leader, seq, age in followed
        ],  # fmt: skip
    )


STATES = {
    # leads [, m) (its newest entry there: 90), follows [m, +inf) of tablet-2 up to 50
    "tablet-1": _state(
        "tablet-1", 100, led=[("", "m", 90)], followed=[("m", None, "tablet-2", 50, 2.0)]
    ),  # fmt: skip
    # leads [m, +inf) (newest 55), follows [, m) of tablet-1 up to 90: in step
    "tablet-2": _state(
        "tablet-2", 60, led=[("m", None, 55)], followed=[("", "m", "tablet-1", 90, 5.0)]
    ),  # fmt: skip
}


@pytest.fixture
def replicated(db):
    for i in (1, 2, 3):
        TabletServer.objects.create(node_id=f"tablet-{i}", url=f"http://t{i}", state="up")
    table = Table.objects.create(name="t", key_type="str", rf=3)
    metadata_commit(
        table,
        [
            RangeAssignment("t", "", "m", "tablet-1", ("tablet-2", "tablet-3")),
            RangeAssignment("t", "m", None, "tablet-2", ("tablet-1",)),
        ],
        "test",
    )
    Failover.objects.create(
        table="t", start_key="m", end_key=None, from_server="tablet-3", to_server="tablet-2",
        version=1, unavailable_s=0.94,
    )  # fmt: skip
    return table


@pytest.fixture
def answers(monkeypatch):
    """Tablets answer from STATES; tablet-3 does not answer."""
    asked: list[str] = []

    def tablet_get(server, url, path, answer, *, timeout_s):
        assert path == "/internal/v1/replication" and answer is protocol.ReplicationState
        asked.append(server)
        if server not in STATES:
            raise TabletUnavailable(f"{server} did not answer", server=server)
        return STATES[server]

    monkeypatch.setattr(replication_view, "tablet_get", tablet_get)
    return asked


def _followers(status: dict) -> list[list[tuple]]:
    return [
        [
            (f["server"], f["in_sync"], f["lag_entries"], f["lag_s"], f["lag"])
            for f in r["followers"]
        ]
        for r in status["replication"]
    ]


def test_cluster_status_shows_each_ranges_in_sync_set_and_followers_lag(replicated, answers):
    status = cluster_status()
    assert sorted(answers) == ["tablet-1", "tablet-2", "tablet-3"]
    assert status["tables"] == {"t": {"key_type": "str", "rf": 3}}
    first, second = status["replication"]
    assert (first["start"], first["end"], first["leader"]) == ("-inf", "m", "tablet-1")
    assert first["in_sync"] == ["tablet-2", "tablet-3"] and not first["under_replicated"]
    assert (second["leader"], second["in_sync"], second["copies"]) == ("tablet-2", ["tablet-1"], 2)
    assert second["under_replicated"] is True  # 2 copies of rf 3
    assert _followers(status) == [
        [("tablet-2", True, 0, 0.0, "in step"), ("tablet-3", True, None, None, "unknown")],
        [("tablet-1", True, 5, 2.0, "5 entries, 2.00 s")],  # 55 - 50, its range's seq only
    ]
    tablets = {s["node_id"]: s["tablets"] for s in status["servers"]}
    assert tablets["tablet-1"][0]["in_sync"] == ["tablet-2", "tablet-3"]


def test_cluster_status_shows_the_failover_history_with_durations_for_people(replicated, answers):
    (failover,) = cluster_status()["failovers"]
    assert (failover["table"], failover["start"], failover["end"]) == ("t", "m", "+inf")
    assert (failover["from_server"], failover["to_server"]) == ("tablet-3", "tablet-2")
    assert (failover["unavailable_s"], failover["unavailable"]) == (0.94, "0.94 s")


def test_the_command_prints_replication_and_failovers_as_json_and_text(replicated, answers, capsys):
    call_command("cluster_status", "--json")
    status = json.loads(capsys.readouterr().out)
    assert status["replication"][1]["followers"][0]["lag"] == "5 entries, 2.00 s"
    assert status["failovers"][0]["unavailable"] == "0.94 s"
    call_command("cluster_status")
    out = capsys.readouterr().out
    assert "t (rf 3)" in out
    assert "t [-inf, m) rf 3: leader tablet-1 (up)" in out
    assert "tablet-3 (up, in sync): unknown" in out
    assert "UNDER-REPLICATED 2/3" in out
    assert "tablet-3 -> tablet-2 (v1), unavailable 0.94 s" in out


def test_a_follower_not_in_the_in_sync_set_is_shown_as_such(replicated, monkeypatch):
    states = {
        **STATES,
        "tablet-3": _state("tablet-3", 0, followed=[("m", None, "tablet-2", 10, 30.0)]),
    }
    monkeypatch.setattr(replication_view, "tablet_get", lambda server, *a, **k: states[server])
    second = cluster_status()["replication"][1]
    assert [(f["server"], f["in_sync"], f["lag_entries"]) for f in second["followers"]] == [
        ("tablet-1", True, 5), ("tablet-3", False, 45),
    ]  # fmt: skip


def test_a_server_that_hangs_is_unknown_after_the_deadline_not_an_error(replicated, monkeypatch):
    release = threading.Event()

    def tablet_get(server, url, path, answer, *, timeout_s):
        if server == "tablet-2":
            release.wait(30)  # hangs past the probe's deadline
        return STATES.get(server) or _state(server, 0)

    monkeypatch.setattr(replication_view, "tablet_get", tablet_get)
    try:
        ranges = replication_view.replication_ranges(timeout_s=0.05)
    finally:
        release.set()
    lags = [[f.lag for f in r.followers] for r in ranges]
    assert lags == [["unknown", "unknown"], ["unknown"]]  # every lag needs tablet-2's answer


def test_no_server_is_asked_when_no_table_is_replicated(servers, answers):
    table = Table.objects.create(name="plain", key_type="int", rf=1)
    metadata_commit(table, [RangeAssignment("plain", "", None, "tablet-1")], "test")
    status = cluster_status()
    assert status["replication"] == [] and answers == []

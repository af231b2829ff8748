"""System checks that name the setting at fault."""

from __future__ import annotations

from distdb.checks import check_leader_lease


def test_a_leader_lease_not_longer_than_two_heartbeats_is_refused_on_the_master(settings):
    settings.DISTDB_ROLE = "master"
    settings.DISTDB_HEARTBEAT_S, settings.DISTDB_LEADER_LEASE_S = 2, 4.0
    [error] = check_leader_lease(None)
    assert error.id == "distdb.E010" and "DISTDB_LEADER_LEASE_S" in error.msg
    settings.DISTDB_LEADER_LEASE_S = 4.5
    assert check_leader_lease(None) == []
    settings.DISTDB_ROLE, settings.DISTDB_LEADER_LEASE_S = "tablet", 1.0  # the master's setting
    assert check_leader_lease(None) == []

"""A move's safety rules with a scripted link: the commit needs lease margin; collection stops."""

from __future__ import annotations

import time

import pytest

from master_app.models import ConsolidatedRow, Table, TabletServer
from master_app.services import collect, moves
from master_app.services.metadata import RangeAssignment, metadata_commit, metadata_version_current
from master_app.services.plan import Move

pytestmark = pytest.mark.django_db


@pytest.fixture
def table(servers):
    table = Table.objects.create(name="t", key_type="str")
    metadata_commit(
        table,
        [RangeAssignment("t", "", "m", "tablet-1"), RangeAssignment("t", "m", None, "tablet-2")],
        "test",
    )
    for key in ("n", "o", "p"):
        ConsolidatedRow.objects.create(table=table, key=key, cells={})
    return table


def scripted_link(monkeypatch, slow: dict[str, float]):
    """Answer every command like a tablet would; sleep ``slow[type]`` seconds first."""
    calls: list[tuple[str, str]] = []

    def link_call(node_id, command, timeout_s=30):
        calls.append((node_id, command.type))
        time.sleep(slow.get(command.type, 0))
        return {"rows": 3, "entries": 0, "last_seq": 0}

    monkeypatch.setattr(moves, "link_call", link_call)
    monkeypatch.setattr(moves, "changes_collect", lambda server, trim: 0)
    return calls


def test_a_freeze_that_ate_the_lease_margin_is_undone_and_nothing_is_committed(
    table, monkeypatch, settings
):
    settings.DISTDB_FREEZE_LEASE_S, settings.DISTDB_FREEZE_MARGIN_S = 1.0, 0.8
    calls = scripted_link(monkeypatch, {"freeze": 0.3})  # leaves 0.7 s < the 0.8 s margin
    version = metadata_version_current()
    report = moves.move_range(Move("t", "m", None, "tablet-2", "tablet-1", 3))
    assert report.outcome == "failed" and "MoveAborted" in report.error
    assert metadata_version_current() == version  # the move never happened
    assert ("tablet-2", "unfreeze") in calls and calls[-1] == ("tablet-1", "drop")
    assert TabletServer.objects.get(node_id="tablet-2").trim_floor is None  # unpinned


def test_a_quick_freeze_commits_the_move_and_hands_it_over(table, monkeypatch, settings):
    settings.DISTDB_FREEZE_LEASE_S, settings.DISTDB_FREEZE_MARGIN_S = 1.0, 0.8
    calls = scripted_link(monkeypatch, {})
    handed: list = []
    monkeypatch.setattr(moves, "_hand_over", lambda source, target, report: handed.append(1))
    monkeypatch.setattr(moves, "metadata_push", lambda: None)
    version = metadata_version_current()
    report = moves.move_range(Move("t", "m", None, "tablet-2", "tablet-1", 3))
    assert report.outcome == "succeeded", report.error
    assert metadata_version_current() == version + 1 and handed == [1]
    assert calls[-1] == ("tablet-2", "drop")  # the source's copy, after the hand-over
    assert set(report.freeze_steps_ms) == {"freeze", "final catch-up", "collect", "commit",
                                           "hand-over"}  # fmt: skip


def test_collect_stops_when_the_tablet_says_nothing_more_was_left_out(servers, monkeypatch):
    Table.objects.create(name="t", key_type="str")
    replies = [
        {"entries": [{"seq": 1, "table": "t", "key": "a", "op": "put", "cells": {}}], "more": True},
        {
            "entries": [{"seq": 2, "table": "t", "key": "b", "op": "put", "cells": {}}],
            "more": False,
        },
    ]
    sent: list[str] = []

    def link_call(node_id, command, timeout_s=30):
        sent.append(command.type)
        return replies.pop(0) if command.type == "changes" else {}

    monkeypatch.setattr(collect, "link_call", link_call)
    assert collect.changes_collect(servers[0]) == 2
    assert sent == ["changes", "trim", "changes", "trim"]  # no third "changes" round

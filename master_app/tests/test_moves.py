"""A move's safety rules with a scripted link: the commit needs lease margin; collection stops."""

from __future__ import annotations

import pytest
from django.utils import timezone

from distdb.protocol import (
    CatchUpReply,
    ChangeEntry,
    ChangesReply,
    CopyReply,
    DropReply,
    FreezeReply,
    TrimReply,
    UnfreezeReply,
)
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


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


TABLET_REPLIES = {
    "copy": lambda: CopyReply(rows=3),
    "catch_up": lambda: CatchUpReply(applied=0, last_seq=0),
    "freeze": lambda: FreezeReply(frozen_until=timezone.now()),
    "unfreeze": UnfreezeReply,
    "drop": lambda: DropReply(rows=3),
}


def scripted_link(monkeypatch, clock: FakeClock, slow: dict[str, float]):
    """Answer every command like a tablet would, taking ``slow[type]`` seconds of ``clock``."""
    calls: list[tuple[str, str]] = []

    def link_call(node_id, command, timeout_s=30):
        calls.append((node_id, command.type))
        clock.now += slow.get(command.type, 0)
        return TABLET_REPLIES[command.type]()

    monkeypatch.setattr(moves, "link_call", link_call)
    monkeypatch.setattr(moves, "changes_collect", lambda server, trim: 0)
    return calls


def test_a_freeze_that_ate_the_lease_margin_is_undone_and_nothing_is_committed(
    table, monkeypatch, settings
):
    settings.DISTDB_FREEZE_LEASE_S, settings.DISTDB_FREEZE_MARGIN_S = 1.0, 0.8
    clock = FakeClock()
    calls = scripted_link(monkeypatch, clock, {"freeze": 0.3})  # leaves 0.7 s < 0.8 s margin
    version = metadata_version_current()
    report = moves.move_range(Move("t", "m", None, "tablet-2", "tablet-1", 3), clock=clock)
    assert report.outcome == "failed" and "MoveAborted" in report.error
    assert metadata_version_current() == version  # the move never happened
    assert ("tablet-2", "unfreeze") in calls and calls[-1] == ("tablet-1", "drop")
    assert TabletServer.objects.get(node_id="tablet-2").trim_floor is None  # unpinned
    assert report.freeze_steps_ms["freeze"] == 300.0


def test_a_freeze_that_leaves_exactly_the_margin_commits(table, monkeypatch, settings):
    settings.DISTDB_FREEZE_LEASE_S, settings.DISTDB_FREEZE_MARGIN_S = 1.0, 0.75
    clock = FakeClock()
    scripted_link(monkeypatch, clock, {"freeze": 0.25})  # 0.75 s left: just enough
    monkeypatch.setattr(moves, "_hand_over", lambda source, target, report: None)
    monkeypatch.setattr(moves, "metadata_push", lambda: None)
    report = moves.move_range(Move("t", "m", None, "tablet-2", "tablet-1", 3), clock=clock)
    assert report.outcome == "succeeded", report.error


def test_a_quick_freeze_commits_the_move_and_hands_it_over(table, monkeypatch, settings):
    settings.DISTDB_FREEZE_LEASE_S, settings.DISTDB_FREEZE_MARGIN_S = 1.0, 0.8
    clock = FakeClock()
    calls = scripted_link(monkeypatch, clock, {"copy": 5.0})  # a slow copy is not frozen
    handed: list = []
    monkeypatch.setattr(moves, "_hand_over", lambda source, target, report: handed.append(1))
    monkeypatch.setattr(moves, "metadata_push", lambda: None)
    version = metadata_version_current()
    report = moves.move_range(Move("t", "m", None, "tablet-2", "tablet-1", 3), clock=clock)
    assert report.outcome == "succeeded", report.error
    assert metadata_version_current() == version + 1 and handed == [1]
    assert calls[-1] == ("tablet-2", "drop")  # the source's copy, after the hand-over
    assert set(report.freeze_steps_ms) == {"freeze", "final catch-up", "collect", "commit",
                                           "hand-over"}  # fmt: skip


def test_collect_stops_when_the_tablet_says_nothing_more_was_left_out(servers, monkeypatch):
    Table.objects.create(name="t", key_type="str")
    replies = [
        ChangesReply(
            entries=[ChangeEntry(seq=1, table="t", key="a", op="put", cells={})], more=True
        ),
        ChangesReply(
            entries=[ChangeEntry(seq=2, table="t", key="b", op="put", cells={})], more=False
        ),
    ]
    sent: list[str] = []

    def link_call(node_id, command, timeout_s=30):
        sent.append(command.type)
        return replies.pop(0) if command.type == "changes" else TrimReply(trimmed=1)

    monkeypatch.setattr(collect, "link_call", link_call)
    assert collect.changes_collect(servers[0]) == 2
    assert sent == ["changes", "trim", "changes", "trim"]  # no third "changes" round

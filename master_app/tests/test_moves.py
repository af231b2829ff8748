"""A move's safety rules with a scripted link: the commit needs lease margin; collection stops."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.db import OperationalError

from distdb.protocol import (
    CatchUpReply,
    ChangeEntry,
    ChangesResponse,
    CopyReply,
    DropReply,
    FreezeReply,
    TrimReply,
    UnfreezeReply,
)
from master_app.models import ConsolidatedRow, Table, Tablet, TabletServer
from master_app.services import collect, metadata, moves
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
    "freeze": lambda: FreezeReply(lease_left_s=1.0),
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


def test_a_commit_that_gets_the_metadata_lock_after_its_deadline_rolls_back(
    table, monkeypatch, settings
):
    """Issue #9 defect 1: the margin was checked, then the commit waited for the lock
    until the source's lease had ended; committing then would hand over a range whose
    source may already have reopened it and acknowledged writes."""
    settings.DISTDB_FREEZE_LEASE_S, settings.DISTDB_FREEZE_MARGIN_S = 1.0, 0.5
    clock = FakeClock()
    calls = scripted_link(monkeypatch, clock, {})
    real_wait = metadata.lock_wait_bounded

    @contextmanager
    def slow_lock(deadline, clock_):
        with real_wait(deadline, clock_):
            clock.now += 2.0  # the lock came 2 s later: past the deadline and the lease
            yield

    monkeypatch.setattr(metadata, "lock_wait_bounded", slow_lock)
    version = metadata_version_current()
    report = moves.move_range(Move("t", "m", None, "tablet-2", "tablet-1", 3), clock=clock)
    assert report.outcome == "failed" and "MoveAborted" in report.error, report.error
    assert metadata_version_current() == version  # nothing committed
    assert ("tablet-2", "unfreeze") in calls and calls[-1] == ("tablet-1", "drop")


def test_an_error_after_the_commit_went_through_does_not_undo_the_move(
    table, monkeypatch, settings
):
    """Issue #9 defect 4: an error on COMMIT (or a time limit right after it) must not
    unfreeze the source and drop the target's copy while the metadata gives it the range."""
    settings.DISTDB_FREEZE_LEASE_S, settings.DISTDB_FREEZE_MARGIN_S = 10.0, 1.0
    clock = FakeClock()
    calls = scripted_link(monkeypatch, clock, {})
    pushed: list = []
    monkeypatch.setattr(moves, "metadata_push", lambda: pushed.append(1))
    real_commit = moves._commit

    def commit_then_fail(*args, **kwargs):
        real_commit(*args, **kwargs)
        raise OperationalError("the connection broke while COMMIT was answering")

    monkeypatch.setattr(moves, "_commit", commit_then_fail)
    report = moves.move_range(Move("t", "m", None, "tablet-2", "tablet-1", 3), clock=clock)
    assert report.outcome == "failed"
    assert ("tablet-2", "unfreeze") not in calls
    assert calls.count(("tablet-1", "drop")) == 1  # only the clearing before the copy
    assert "the move stands" in " ".join(report.warnings) and pushed == [1]
    owner = Tablet.objects.get(table=table, start_key="").server.node_id
    assert owner == "tablet-1"  # [m, +inf) joined tablet-1's [-inf, m)


def test_collect_stops_when_the_tablet_says_nothing_more_was_left_out(servers, monkeypatch):
    Table.objects.create(name="t", key_type="str")
    replies = [
        ChangesResponse(
            entries=[ChangeEntry(seq=1, table="t", key="a", op="put", cells={})], more=True
        ),
        ChangesResponse(
            entries=[ChangeEntry(seq=2, table="t", key="b", op="put", cells={})], more=False
        ),
    ]
    sent: list[str] = []

    def tablet_post(server, url, path, request, answer, timeout_s=30):
        assert path == "/internal/v1/changes"  # over HTTP: entries may be any size
        sent.append(request.type)
        return replies.pop(0)

    def link_call(node_id, command, timeout_s=30):
        sent.append(command.type)
        return TrimReply(trimmed=1)

    monkeypatch.setattr(collect, "tablet_post", tablet_post)
    monkeypatch.setattr(collect, "link_call", link_call)
    assert collect.changes_collect(servers[0]) == 2
    assert sent == ["changes", "trim", "changes", "trim"]  # no third "changes" round


def test_an_error_on_commit_whose_outcome_is_unknown_undoes_nothing(table, monkeypatch, settings):
    """Review finding: a COMMIT in flight on a lost connection may land after any read,
    so once the commit was sent nothing is undone (the source settles by its lease)."""
    settings.DISTDB_FREEZE_LEASE_S, settings.DISTDB_FREEZE_MARGIN_S = 10.0, 1.0
    clock = FakeClock()
    calls = scripted_link(monkeypatch, clock, {})

    def commit_lost(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(moves, "_commit", commit_lost)
    version = metadata_version_current()
    report = moves.move_range(Move("t", "m", None, "tablet-2", "tablet-1", 3), clock=clock)
    assert report.outcome == "failed" and metadata_version_current() == version
    assert "OperationalError" in report.error, report.error  # the COMMIT's, nothing else
    assert ("tablet-2", "unfreeze") not in calls
    assert calls.count(("tablet-1", "drop")) == 1  # only the clearing before the copy
    assert "nothing undone" in " ".join(report.warnings)


def test_the_new_tablets_are_computed_under_the_metadata_lock(table, monkeypatch, settings):
    """Review finding: assignments read before the lock could overwrite a commit that
    landed in between; now a range that moved meanwhile aborts the move."""
    settings.DISTDB_FREEZE_LEASE_S, settings.DISTDB_FREEZE_MARGIN_S = 10.0, 1.0
    clock = FakeClock()
    scripted_link(monkeypatch, clock, {})
    real_wait = metadata.lock_wait_bounded

    @contextmanager
    def someone_commits_first(deadline, clock_):
        if deadline is None:  # the other commit itself
            with real_wait(deadline, clock_):
                yield
            return
        metadata_commit(
            table,
            [
                RangeAssignment("t", "", "m", "tablet-1"),
                RangeAssignment("t", "m", None, "tablet-1"),
            ],
            "another run",
            push=False,
        )
        with real_wait(deadline, clock_):
            yield

    monkeypatch.setattr(metadata, "lock_wait_bounded", someone_commits_first)
    report = moves.move_range(Move("t", "m", None, "tablet-2", "tablet-1", 3), clock=clock)
    assert report.outcome == "failed" and "no longer on" in report.error


def test_a_transfer_whose_target_left_the_in_sync_set_meanwhile_is_not_committed(
    servers, monkeypatch, settings
):
    """A leadership transfer copies nothing: the target, an in-sync follower, holds every
    acknowledged write. If the leader has it dropped from the in-sync set during the
    move, writes acknowledged since may be on no catch-up's path (collected below the
    pinned floor, never shipped to it): committing would make it leader without them."""
    settings.DISTDB_FREEZE_LEASE_S, settings.DISTDB_FREEZE_MARGIN_S = 1.0, 0.5
    table = Table.objects.create(name="t", key_type="str", rf=2)
    metadata_commit(table, [RangeAssignment("t", "", None, "tablet-1", ("tablet-2",))], "test")
    clock = FakeClock()
    calls = scripted_link(monkeypatch, clock, {})
    real = TABLET_REPLIES["freeze"]

    def freeze_then_shrink():  # the leader's shipper dropped tablet-2 meanwhile
        metadata_commit(table, [RangeAssignment("t", "", None, "tablet-1", ())], "shrink")
        return real()

    monkeypatch.setitem(TABLET_REPLIES, "freeze", freeze_then_shrink)
    version = metadata_version_current()
    report = moves.move_range(Move("t", "", None, "tablet-1", "tablet-2", 3), clock=clock)
    assert report.outcome == "failed" and "MoveAborted" in report.error, report.error
    assert metadata_version_current() == version + 1  # only the shrink
    assert [(t.server.node_id, t.in_sync) for t in Tablet.objects.filter(table=table)] == [
        ("tablet-1", [])
    ]
    assert ("tablet-1", "unfreeze") in calls
    assert ("tablet-2", "drop") not in calls  # a transfer's target keeps its copy

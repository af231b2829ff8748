"""GET /internal/v1/replication: what a tablet server follows and leads, for the master."""

from __future__ import annotations

import datetime

from django.utils import timezone

from distdb import protocol
from tablet_app.models import ChangeLogEntry, FollowedRange, OwnedRange
from tablet_app.tests.conftest import in_thread

REPLICATION = "/internal/v1/replication"


def _layout() -> None:
    """Follows u [, m) of tablet-2 (applied up to its seq 40, 3 s ago); leads t [, k) with
    one follower and t [k, +inf) unreplicated; its log has entries in both t ranges."""
    FollowedRange.objects.create(
        table="u", start_key="", end_key="m", leader="tablet-2", version=4, applied_seq=40,
        applied_at=timezone.now() - datetime.timedelta(seconds=3),
    )  # fmt: skip
    FollowedRange.objects.create(table="u", start_key="m", leader="tablet-3", version=4)
    OwnedRange.objects.create(
        table="t", start_key="", end_key="k", version=4, replicated=True,
        followers=[["tablet-2", "http://t2"]],
    )  # fmt: skip
    OwnedRange.objects.create(table="t", start_key="k", version=4)
    for key in ("a", "b", "x", "c", "y"):
        ChangeLogEntry.objects.create(table="t", key=key, op="put", cells="{}")


async def test_it_answers_followed_ranges_with_their_applied_seq_and_led_ranges_last_seq(api):
    await in_thread(_layout)
    response = await api("GET", REPLICATION, role="master")
    assert response.status == 200
    state = protocol.ReplicationState.model_validate(response.json())
    seqs = await in_thread(lambda: list(ChangeLogEntry.objects.values_list("key", "seq")))
    last = dict(seqs)
    assert state.node_id == "test"
    assert state.last_seq == max(last.values())
    first, second = state.followed
    assert (first.table, first.start, first.end, first.leader) == ("u", "", "m", "tablet-2")
    assert first.applied_seq == 40 and first.applied_at is not None
    assert first.applied_age_s is not None and 2.5 < first.applied_age_s < 60
    assert (second.leader, second.applied_seq, second.applied_at, second.applied_age_s) == (
        "tablet-3", 0, None, None,
    )  # fmt: skip
    # Only the replicated range, with the newest seq of *its* keys (c), not the server's (y).
    assert [(r.table, r.start, r.end, r.last_seq, r.followers) for r in state.led] == [
        ("t", "", "k", last["c"], ["tablet-2"])
    ]


async def test_a_server_that_follows_and_leads_nothing_answers_empty_lists(api):
    response = await api("GET", REPLICATION, role="master")
    assert response.status == 200
    assert response.json() == {
        "v": 1, "type": "replication_state", "node_id": "test", "last_seq": 0,
        "followed": [], "led": [],
    }  # fmt: skip


async def test_only_the_master_may_ask(api):
    for role in ("client", "tablet"):
        response = await api("GET", REPLICATION, role=role)
        assert (response.status, response.json()["error"]["code"]) == (403, "token_wrong_role")
    anonymous = await api("GET", REPLICATION, role=None)
    assert anonymous.status == 401

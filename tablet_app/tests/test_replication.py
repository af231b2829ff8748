"""Replication on a tablet server, without a cluster: metadata with followers, a follower's
apply and its fencing, a promoted leader's snapshot, the lease, the trim cap."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import orjson
import pytest

from distdb import protocol
from distdb.errors import ReplicaBehind
from tablet_app.models import ChangeLogEntry, FollowedRange, OwnedRange, Row
from tablet_app.services import changes_trim, metadata_apply, rows_ingest
from tablet_app.services.changelog import shipped_store
from tablet_app.services.leader_lease import Lease, lease_clock
from tablet_app.services.replication import replicate_apply
from tablet_app.tests.conftest import NODE, OTHER

pytestmark = pytest.mark.django_db


def metadata(version: int, leader: str, followers: list[str], rf: int = 2) -> protocol.Metadata:
    return protocol.Metadata(
        version=version,
        tables={"t": protocol.TableInfo(key_type="str", rf=rf)},
        tablets=[
            protocol.TabletAssignment(
                table="t",
                server=leader,
                url=f"http://{leader}",
                in_sync=[protocol.Follower(server=f, url=f"http://{f}") for f in followers],
            )
        ],
    )


def entry(seq: int, key: str, op: str = "put", cells: dict | None = None) -> protocol.ChangeEntry:
    return protocol.ChangeEntry(
        seq=seq, table="t", key=key, op=op, cells=cells if op != "delete" else None
    )


JOINED = protocol.CaughtUp(table="t", start="", end=None, leader=OTHER, seq=40)


def rows() -> dict[str, str]:
    return dict(Row.objects.filter(table="t").values_list("key", "cells"))


def test_a_leader_knows_its_followers_and_a_follower_its_leader():
    metadata_apply(metadata(1, NODE, [OTHER]), NODE)
    owned = OwnedRange.objects.get()
    assert owned.replicated and owned.followers == [[OTHER, f"http://{OTHER}"]]
    metadata_apply(metadata(2, OTHER, [NODE]), NODE)
    assert not OwnedRange.objects.exists()
    followed = FollowedRange.objects.get()
    assert (followed.leader, followed.version, followed.applied_seq) == (OTHER, 2, 0)


def test_a_follower_applies_its_leaders_entries_in_order_and_skips_what_it_has():
    metadata_apply(metadata(1, OTHER, [NODE]), NODE)
    answer = replicate_apply(
        OTHER,
        1,
        [entry(2, "a", cells={"v": 2}), entry(1, "a", cells={"v": 1}), entry(3, "b", cells={})],
    )
    assert answer.applied == 3 and answer.refused == []
    assert rows() == {"a": '{"v":2}', "b": "{}"}
    replicate_apply(OTHER, 1, [entry(1, "a", cells={"v": 1})])  # re-sent: never older again
    assert rows()["a"] == '{"v":2}'
    replicate_apply(OTHER, 1, [entry(4, "a", op="delete")])
    assert rows() == {"b": "{}"}
    assert FollowedRange.objects.get().applied_seq == 4
    assert not ChangeLogEntry.objects.exists()  # the leader's log is the one collected


def test_a_follower_refuses_a_deposed_leader_and_waits_for_a_newer_version():
    metadata_apply(metadata(5, OTHER, [NODE]), NODE)
    refused = replicate_apply("tablet-9", 4, [entry(1, "a", cells={})])
    assert refused.refused == [1] and rows() == {}
    with pytest.raises(ReplicaBehind):
        replicate_apply("tablet-9", 6, [entry(1, "a", cells={})])


def test_a_clear_empties_the_followed_range_before_the_images_that_follow():
    metadata_apply(metadata(1, OTHER, [NODE]), NODE)
    replicate_apply(OTHER, 1, [entry(1, "ghost", cells={}), entry(2, "kept", cells={"v": 1})])
    clear = protocol.ChangeEntry(seq=3, table="t", key="", op="clear", cells={"end": None})
    replicate_apply(OTHER, 1, [clear, entry(4, "kept", cells={"v": 1})])
    assert rows() == {"kept": '{"v":1}'}


def test_a_promoted_follower_logs_a_clear_and_a_full_image_of_its_rows():
    metadata_apply(metadata(1, OTHER, [NODE]), NODE)
    rows_ingest("t", [protocol.Row(key=k, cells={"k": k}) for k in "ab"], log_changes=False)
    metadata_apply(metadata(2, NODE, []), NODE)
    log = list(ChangeLogEntry.objects.order_by("seq").values_list("op", "key"))
    assert log == [("clear", ""), ("put", "a"), ("put", "b")]
    owned = OwnedRange.objects.get()
    assert owned.ready_seq == ChangeLogEntry.objects.order_by("-seq").first().seq
    metadata_apply(metadata(3, NODE, []), NODE)  # still the leader: no second snapshot
    assert ChangeLogEntry.objects.count() == 3


def test_an_rf_1_table_needs_no_lease_and_logs_no_snapshot():
    metadata_apply(metadata(1, NODE, [], rf=1), NODE)
    assert not OwnedRange.objects.get().replicated
    assert not ChangeLogEntry.objects.exists()


def test_a_lease_holds_until_its_deadline_and_only_at_an_applied_version():
    from distdb.boot import boot_id

    now = lease_clock()
    lease = Lease(now + 3, boot_id(), version=7)
    assert lease.valid(7, now) and lease.valid(8, now)
    assert not lease.valid(6, now)  # granted after a failover this server has not heard of
    assert not lease.valid(7, now + 3)
    assert not Lease(now + 3, "another boot", 7).valid(7, now)


def test_a_leader_trims_its_log_only_as_far_as_it_has_replicated(settings, tmp_path):
    settings.DISTDB_DATA_DIR = tmp_path
    metadata_apply(metadata(1, NODE, [OTHER]), NODE)
    rows_ingest("t", [protocol.Row(key=k, cells={}) for k in "abcd"], log_changes=True)
    seqs = list(ChangeLogEntry.objects.order_by("seq").values_list("seq", flat=True))
    shipped_store(seqs[1])
    assert changes_trim(seqs[-1]) == 2
    assert list(ChangeLogEntry.objects.values_list("seq", flat=True)) == seqs[2:]


def test_a_follower_that_closed_an_idle_connection_is_sent_the_request_again(monkeypatch):
    """uvicorn closes kept-alive connections after 5 idle seconds; the next use of one
    fails at once. That is not a dead follower: it must not be dropped from the in-sync
    set for it (it was, in the benchmark's idle phases)."""
    import socket
    import threading

    from tablet_app.services.replication import _post

    monkeypatch.setenv("DISTDB_TOKEN", "t")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    served: list[int] = []

    def serve() -> None:  # answers one request per connection, then hangs up silently
        for _ in range(2):
            conn, _ = listener.accept()
            conn.recv(65536)
            served.append(1)  # before the answer: the caller may check as soon as it has it
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    conns: dict = {}
    lock = threading.Lock()
    url = f"http://127.0.0.1:{port}"
    assert _post(url, "/x", b"{}", timeout_s=2, conns=conns, lock=lock) == b"ok"
    assert _post(url, "/x", b"{}", timeout_s=2, conns=conns, lock=lock) == b"ok"
    assert len(served) == 2
    listener.close()


def test_a_write_that_changes_nothing_leaves_no_key_pending(monkeypatch, settings):
    """A delete of a missing row writes no entry: its key must not stay "pending" (every
    later read of it was refused — found by the fault harness)."""
    from tablet_app.services import replication, rows_mutate

    monkeypatch.setattr(replication.shipper, "ensure_started", lambda: None)
    monkeypatch.setattr(replication.shipper, "serving", lambda span: True)
    settings.DISTDB_REPLICATE_WAIT_S = 0.2
    metadata_apply(metadata(1, NODE, [OTHER]), NODE)
    answer = rows_mutate("t", [protocol.Mutation(op="delete_row", key="missing")])
    assert answer.results[0]["error"]["code"] == "row_not_found"
    assert not replication.shipper.pending


def test_a_new_follower_starts_where_its_copy_got():
    """The join is usually the first this server hears of the version: its copy holds the
    leader's log up to the catch-up's end (the lag showed the whole log — seen on a fresh
    ``make run``, where every follower said "501 entries" behind)."""
    metadata_apply(metadata(1, OTHER, [NODE]), NODE, caught_up=JOINED)
    assert FollowedRange.objects.get().applied_seq == 40


def two_ranges(version: int) -> protocol.Metadata:
    """Table t in two ranges, both led by OTHER and followed by NODE."""
    followers = [protocol.Follower(server=NODE, url=f"http://{NODE}")]
    return protocol.Metadata(
        version=version,
        tables={"t": protocol.TableInfo(key_type="str", rf=2)},
        tablets=[
            protocol.TabletAssignment(
                table="t", start=s, end=e, server=OTHER, url=f"http://{OTHER}", in_sync=followers
            )
            for s, e in (("", "m"), ("m", None))
        ],
    )


def applied() -> dict[str, int]:
    return dict(FollowedRange.objects.values_list("start_key", "applied_seq"))


@pytest.mark.parametrize("first", [None, 1, 2])
def test_a_join_credits_only_the_range_that_joined(first):
    """Only the joined range's copy holds its leader's log up to the catch-up's end: the
    join credited every range it named as followed (chaos seed 20261205: a follower that
    skipped entries of another range was promoted; 50 acknowledged inserts lost)."""
    if first is not None:  # the version came by a push first (the same, or a newer one)
        metadata_apply(two_ranges(first), NODE)
    join = protocol.CaughtUp(table="t", start="m", end=None, leader=OTHER, seq=40)
    metadata_apply(two_ranges(1), NODE, caught_up=join)
    assert applied() == {"": 0, "m": 40}


def test_a_new_follower_starts_where_its_copy_got_even_if_the_version_came_first():
    metadata_apply(metadata(1, OTHER, [NODE]), NODE)  # by a push, before the join's command
    metadata_apply(metadata(1, OTHER, [NODE]), NODE, caught_up=JOINED)
    assert FollowedRange.objects.get().applied_seq == 40
    replicate_apply(OTHER, 1, [entry(40, "a", cells={"v": "old"})])  # has it: skipped
    assert rows() == {}


def test_a_join_older_than_the_applied_version_still_says_how_far_the_copy_got():
    """A push of a newer version (another range's move) can overtake the join's command:
    the follower showed its copy as 0 applied (a lag of the whole log) until the next
    write, though it held everything up to the copy's end."""
    metadata_apply(metadata(2, OTHER, [NODE]), NODE)  # the newer version, first
    metadata_apply(metadata(1, OTHER, [NODE]), NODE, caught_up=JOINED)  # the join's, late
    followed = FollowedRange.objects.get()
    assert (followed.version, followed.applied_seq) == (2, 40)


def test_a_late_join_never_credits_a_range_now_followed_from_another_leader():
    metadata_apply(metadata(2, "tablet-9", [NODE]), NODE)
    metadata_apply(metadata(1, OTHER, [NODE]), NODE, caught_up=JOINED)
    assert FollowedRange.objects.get().applied_seq == 0


def test_a_late_join_gives_no_credit_across_a_version_this_server_never_saw():
    """A lost disk restarts its server's log at seq 1 and always passes through a version
    where it leads nothing: an unseen version in between could be that one."""
    metadata_apply(metadata(3, OTHER, [NODE]), NODE)  # v2 never reached this server
    metadata_apply(metadata(1, OTHER, [NODE]), NODE, caught_up=JOINED)
    assert FollowedRange.objects.get().applied_seq == 0


def test_a_restarted_leader_with_a_trimmed_log_does_not_wait_for_its_old_snapshot(
    settings, tmp_path
):
    """Seqs are never reused: a snapshot's ready_seq lies behind an empty (trimmed) log,
    and the shipper of a new process must start past it (a whole-cluster restart left
    every replicated range unavailable)."""
    from tablet_app.services.replication import Shipper

    settings.DISTDB_DATA_DIR = tmp_path
    metadata_apply(metadata(1, OTHER, [NODE]), NODE)
    metadata_apply(metadata(2, NODE, [OTHER]), NODE)  # promoted: a snapshot in the log
    ready = OwnedRange.objects.get().ready_seq
    assert ready > 0
    ChangeLogEntry.objects.all().delete()  # collected and trimmed, before a restart
    shipper = Shipper()
    shipper._start()
    assert shipper.shipped >= ready


def test_a_transfer_catch_up_never_takes_a_followed_row_back_to_an_older_image():
    """A leadership transfer's target already follows the range: the leader's shipper
    and the move's catch-ups both bring it the leader's entries. A catch-up page read
    before the shipper applied a newer image must not overwrite it (the shipper will not
    send that entry again); if the move is then abandoned, this follower could be
    promoted serving a value older than an acknowledged one."""
    from tablet_app.services import changes_apply_copied

    metadata_apply(metadata(1, OTHER, [NODE]), NODE)
    replicate_apply(OTHER, 1, [entry(5, "a", cells={"v": 2}), entry(6, "b", cells={"v": 2})])
    page = [  # read from the leader's log before entries 5 and 6 were shipped
        entry(3, "a", cells={"v": 1}),
        entry(4, "c", cells={"v": 1}),
        protocol.ChangeEntry(seq=2, table="t", key="", op="clear", cells={"end": None}),
    ]
    changes_apply_copied("t", page, "", None, leader=OTHER)
    assert rows() == {"a": '{"v":2}', "b": '{"v":2}'}  # nothing of the page was newer
    changes_apply_copied("t", [entry(7, "c", cells={"v": 3})], "", None, leader=OTHER)
    assert rows()["c"] == '{"v":3}'
    assert FollowedRange.objects.get().applied_seq == 6  # replication's own count stays


def test_a_catch_up_from_another_leader_or_into_an_unfollowed_range_applies_everything():
    from tablet_app.services import changes_apply_copied

    metadata_apply(metadata(1, OTHER, [NODE]), NODE)
    replicate_apply(OTHER, 1, [entry(5, "a", cells={"v": 2})])
    changes_apply_copied("t", [entry(3, "a", cells={"v": 9})], "", None, leader="tablet-9")
    assert rows() == {"a": '{"v":9}'}  # another log's seqs: not comparable, applied
    changes_apply_copied("u", [protocol.ChangeEntry(seq=1, table="u", key="x", op="put",
                                                    cells={})], "", None, leader=OTHER)  # fmt: skip
    assert Row.objects.filter(table="u").count() == 1


def test_a_led_range_cut_in_two_by_new_metadata_still_waits_for_its_snapshot():
    metadata_apply(metadata(1, NODE, [OTHER]), NODE)
    OwnedRange.objects.update(ready_seq=7)  # its snapshot as a new leader: not shipped yet
    two = metadata(2, NODE, [OTHER])
    whole = two.tablets[0]
    two.tablets = [whole.model_copy(update={"end": "m"}), whole.model_copy(update={"start": "m"})]
    metadata_apply(two, NODE)
    assert list(OwnedRange.objects.order_by("start_key").values_list("start_key", "ready_seq")) == [
        ("", 7),
        ("m", 7),
    ]


def test_a_leader_left_without_followers_passes_its_log_without_reading_images(
    settings, tmp_path, monkeypatch
):
    """A leader promoted after its only follower died has no one to ship its snapshot to:
    it read and parsed all of it first (80k rows: 3.7 s more before the range served)."""
    from django.utils import timezone

    from tablet_app.services import replication
    from tablet_app.services.replication import Shipper

    settings.DISTDB_DATA_DIR = tmp_path
    metadata_apply(metadata(1, OTHER, [NODE]), NODE)
    rows_ingest("t", [protocol.Row(key=f"k{i:05d}", cells={"i": i}) for i in range(5000)],
                log_changes=False)  # fmt: skip
    metadata_apply(metadata(2, NODE, []), NODE)  # promoted, nobody left to follow it
    ready = OwnedRange.objects.get().ready_seq
    gone = ChangeLogEntry.objects.create(
        table="u", key="x", op="put", cells="{}", created_at=timezone.now()
    )  # a write to a range led here no longer
    shipper = Shipper()
    shipper._start()

    batches = []
    real_batch = replication.changes_batch
    monkeypatch.setattr(
        replication, "changes_batch", lambda *a, **k: batches.append(1) or real_batch(*a, **k)
    )
    shipper._step()  # one batch read shows the backlog; the rest is passed unread
    assert batches == [1]
    assert shipper.shipped == gone.seq > ready
    assert list(shipper.failed) == [gone.seq]


def test_entries_a_follower_needs_are_still_shipped_with_their_images(settings, tmp_path):
    from tablet_app.services.replication import Shipper

    settings.DISTDB_DATA_DIR = tmp_path
    metadata_apply(metadata(1, NODE, [OTHER]), NODE)
    shipper = Shipper()
    shipper._start()
    shipped: list = []
    shipper._ship = lambda entries: shipped.extend(e.seq for e in entries) or {}
    position = shipper.shipped
    shipper._step()  # the snapshot's first entry has a follower: the usual way
    assert shipped and shipped[0] == position + 1 and shipper.shipped == shipped[-1]


def test_the_journal_records_what_a_follower_applied_and_skipped(
    settings, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    from distdb import journal as journal_module

    settings.DISTDB_DATA_DIR, settings.DISTDB_JOURNAL = tmp_path, True
    monkeypatch.setattr(journal_module, "_fd", None)
    metadata_apply(metadata(1, OTHER, [NODE]), NODE)
    with django_capture_on_commit_callbacks(execute=True):
        replicate_apply(OTHER, 1, [entry(2, "a", cells={}), entry(3, "b", cells={})])
    with django_capture_on_commit_callbacks(execute=True):
        replicate_apply(OTHER, 1, [entry(3, "b", cells={})])
    path = tmp_path / "journal" / f"{settings.DISTDB_NODE_ID}.jsonl"
    events = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    applied, skipped = [e for e in events if e["ev"] == "replicate"]
    assert applied["applied"] == [["t", "", None, [[2, "a", "put"], [3, "b", "put"]]]]
    assert skipped["applied"] == [] and skipped["skipped"] == [[3, "b", 3]]
    os.close(journal_module._fd)


@pytest.fixture
def ship_pool() -> Iterator[ThreadPoolExecutor]:
    """The sending pool of a shipper under test (a real one starts its own)."""
    with ThreadPoolExecutor(1) as pool:
        yield pool


def _shipper_answering(monkeypatch, pool, answers: list[protocol.ReplicateResponse], on_sleep=None):
    """A leader's shipper whose followers answer ``answers`` in turn (no HTTP); each pause
    between tries runs ``on_sleep`` in this thread (a metadata push arriving)."""
    from tablet_app.services import replication
    from tablet_app.services.replication import Shipper

    shipper = Shipper()
    shipper._pool = pool
    sent: list[int] = []

    def send(url, version, batch):
        sent.append(version)
        return answers[min(len(sent), len(answers)) - 1]

    def pause(seconds: float) -> None:
        if on_sleep is not None:
            on_sleep()
        time.sleep(seconds)

    monkeypatch.setattr(shipper, "_send", send)
    monkeypatch.setattr(replication, "time", SimpleNamespace(sleep=pause, monotonic=time.monotonic))
    return shipper, sent


def test_a_follower_dropped_by_metadata_the_leader_has_not_applied_yet_fails_no_write(
    monkeypatch,
    ship_pool,
):
    """The follower has a newer version (rf was lowered: it is no longer in the in-sync
    set) and refuses the entries; the leader's copy of that version is on its way. The
    write is on every in-sync replica of the new version: acknowledge it, instead of
    "may or may not have been applied" (found by the API fuzzer right after a PATCH of rf)."""
    metadata_apply(metadata(1, NODE, [OTHER]), NODE)
    pushed: list[int] = []

    def push_v2() -> None:
        if not pushed:
            metadata_apply(metadata(2, NODE, [], rf=1), NODE)
            pushed.append(2)

    refused = protocol.ReplicateResponse(applied=0, refused=[7], version=2)
    shipper, sent = _shipper_answering(monkeypatch, ship_pool, [refused], on_sleep=push_v2)
    assert shipper._ship([entry(7, "a", cells={})]) == {}
    assert sent == [1]  # at v2 nobody follows the range: nothing more to send


def test_a_follower_that_refuses_at_the_leaders_own_version_fails_the_write(monkeypatch, ship_pool):
    metadata_apply(metadata(1, NODE, [OTHER]), NODE)
    refused = protocol.ReplicateResponse(applied=0, refused=[7], version=1)
    shipper, sent = _shipper_answering(monkeypatch, ship_pool, [refused])
    assert shipper._ship([entry(7, "a", cells={})]) == {
        7: f"{OTHER} does not take this server as the range's leader"
    }


def test_a_refusal_from_newer_metadata_that_never_reaches_the_leader_fails_in_time(
    monkeypatch, ship_pool, settings
):
    settings.DISTDB_REPLICATE_TIMEOUT_S = 0.05
    metadata_apply(metadata(1, NODE, [OTHER]), NODE)
    refused = protocol.ReplicateResponse(applied=0, refused=[7], version=2)
    shipper, sent = _shipper_answering(monkeypatch, ship_pool, [refused])
    failed = shipper._ship([entry(7, "a", cells={})])
    assert failed == {7: f"{OTHER} does not take this server as the range's leader"}
    assert len(sent) > 1  # it waited for the newer metadata before giving up


def test_a_leader_deposed_by_the_newer_metadata_fails_the_write(monkeypatch, ship_pool):
    metadata_apply(metadata(1, NODE, [OTHER]), NODE)

    def failover() -> None:
        metadata_apply(metadata(2, OTHER, [NODE]), NODE)

    refused = protocol.ReplicateResponse(applied=0, refused=[7], version=2)
    shipper, _ = _shipper_answering(monkeypatch, ship_pool, [refused], on_sleep=failover)
    assert list(shipper._ship([entry(7, "a", cells={})])) == [7]

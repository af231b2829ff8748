"""Replication of a leader's writes to its in-sync followers (docs/architecture.md).

Loaded by the tablet server role, in the process that serves the internal API.

**Follower side** (``replicate_apply``): the leader's change-log entries (full images, in
seq order) are applied in one transaction, under the ownership lock, only for ranges this
server follows *with that leader* in its own metadata; anything else is refused (the
sender is deposed) or answered ``replica_behind`` (the sender knows a newer version than
this server: it is being pushed, the sender sends again). Entries at or below a range's
``applied_seq`` are skipped, so a re-sent batch never takes a row back to an older image.

**Leader side** (``Shipper``): one thread reads the change log in seq order and sends each
entry of a replicated range to every in-sync follower of that range, one batch in flight
per follower. A write of a replicated range registers its keys as *pending* before it
commits and waits after the commit until the shipper has passed its entries:

* every in-sync follower applied them: the write is acknowledged;
* a follower did not answer in ``DISTDB_REPLICATE_TIMEOUT_S``: the shipper asks the master
  to drop it from the in-sync set (``/internal/v1/replicas/shrink``) and applies the
  answer, *then* goes on without it — never before;
* a follower refused them (this server no longer leads the range), or the range is no
  longer ours: the write fails with ``replication_unconfirmed`` (it may survive: not
  retryable as it stands); so does a write still unconfirmed after
  ``DISTDB_REPLICATE_WAIT_S`` (the master cannot be reached to drop a dead follower) —
  its keys then stay pending: the shipper never moves past an entry that an in-sync
  follower may lack. A refusal under a version newer than the leader's own is first
  waited out (up to ``DISTDB_REPLICATE_TIMEOUT_S``, shipping again under each version
  the leader applies meanwhile): it is usually the version that dropped that follower
  (rf lowered, a shrink), not pushed here yet, under which the write needs no copy there.

Reads of a pending key wait until it is replicated (a failover could still take it back),
so no client ever sees a write that is not on every in-sync replica. On start the shipper
first re-sends the whole log tail (followers skip what they have) and the replicated
ranges are served only after that, so a restarted leader never serves an entry it wrote
but did not replicate before it crashed.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Max
from django.utils import timezone

from distdb import protocol
from distdb.auth import own_token
from distdb.errors import (
    DistdbError,
    LeaderUnavailable,
    ReplicaBehind,
    TabletUnavailable,
    error_from_dict,
)
from distdb.journal import enabled as journal_enabled
from distdb.journal import journal
from tablet_app.models import ChangeLogEntry, FollowedRange, OwnedRange
from tablet_app.services.changelog import entries_apply, shipped_read, shipped_store
from tablet_app.services.control import changes_batch
from tablet_app.services.leader_lease import lease_current
from tablet_app.services.locks import ownership_lock_shared
from tablet_app.services.ownership import Span, metadata_apply, metadata_version_current

log = logging.getLogger("distdb.tablet.replication")

SHIP_BATCH = 2000
PASS_SCAN = 50_000  # entries looked at (seq and key only) for a pass without shipping
BEHIND_RETRY_S = 0.02
MASTER_RETRY_S = 0.5
IDLE_WAIT_S = 0.05  # the shipper looks at the log at least this often (entries of the link)
NOT_LED = "this server no longer leads the range"
FAILED_KEEP = 100_000  # refused seqs remembered (a waiter looks its own up at once)


# --- follower -------------------------------------------------------------------------------------


def replicate_apply(
    leader: str, version: int, entries: Sequence[protocol.ChangeEntry]
) -> protocol.ReplicateResponse:
    """Apply ``leader``'s entries to the ranges this server follows with that leader."""
    with transaction.atomic():
        for table in sorted({e.table for e in entries}):
            ownership_lock_shared(table)  # no metadata change interleaves with the apply
        mine = metadata_version_current()
        ranges: dict[str, list[FollowedRange]] = defaultdict(list)
        # Locked (PostgreSQL): a transfer's catch-up reads applied_seq under the same lock.
        followed_now = FollowedRange.objects.select_for_update()
        for r in followed_now.filter(table__in={e.table for e in entries}):
            ranges[r.table].append(r)
        accepted: dict[int, list[protocol.ChangeEntry]] = defaultdict(list)
        by_pk: dict[int, FollowedRange] = {}
        refused: list[int] = []
        skipped: list[tuple[int, str, int]] = []
        for entry in sorted(entries, key=lambda e: e.seq):
            followed = _containing(ranges.get(entry.table, ()), entry.key)
            if followed is None or followed.leader != leader:
                if mine < version:
                    raise ReplicaBehind(f"this replica is at v{mine}, the leader at v{version}")
                refused.append(entry.seq)
            elif entry.seq > followed.applied_seq:
                accepted[followed.pk].append(entry)
                by_pk[followed.pk] = followed
            else:
                skipped.append((entry.seq, entry.key, followed.applied_seq))
        applied = 0
        now = timezone.now()
        for pk, batch in accepted.items():
            r = by_pk[pk]
            applied += entries_apply(r.table, batch, r.start_key, r.end_key)
            FollowedRange.objects.filter(pk=pk).update(
                applied_seq=max(e.seq for e in batch), applied_at=now
            )
        if journal_enabled():
            applied_entries = [
                (by_pk[pk].table, by_pk[pk].start_key, by_pk[pk].end_key,
                 [(e.seq, e.key, e.op) for e in b])
                for pk, b in accepted.items()
            ]  # fmt: skip
            transaction.on_commit(
                lambda: journal(
                    "replicate",
                    leader=leader,
                    version=version,
                    mine=mine,
                    applied=applied_entries,
                    skipped=skipped,
                    refused=refused,
                )
            )
    return protocol.ReplicateResponse(applied=applied, refused=refused, version=mine)


def _containing(ranges: Iterable[FollowedRange], key: str) -> FollowedRange | None:
    for r in ranges:
        if key >= r.start_key and (r.end_key is None or key < r.end_key):
            return r
    return None


# --- leader ---------------------------------------------------------------------------------------


@dataclass
class Ticket:
    """One write's entries, waited for by its request: keys pending until released."""

    table: str
    keys: list[str]
    first_seq: int = 0
    last_seq: int = 0
    released: bool = False


@dataclass
class _Route:
    start: str
    end: str | None
    replicated: bool
    followers: list[tuple[str, str]] = field(default_factory=list)

    def contains(self, key: str) -> bool:
        return key >= self.start and (self.end is None or key < self.end)


def _route_of(routes: dict[str, list[_Route]], table: str, key: str) -> _Route | None:
    """The owned range of ``table`` holding ``key`` (None: not led here)."""
    return next((r for r in routes.get(table, ()) if r.contains(key)), None)


class Shipper:
    """The leader's replication engine: one per process (``shipper``)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.shipped = -1  # every entry with seq <= shipped has been dealt with (-1: not started)
        self.ready = False  # the log tail found at start has been shipped
        self.failed: dict[int, str] = {}  # seq -> why it is not on every in-sync follower
        self.pending: dict[tuple[str, str], int] = defaultdict(int)
        self._tickets: list[Ticket] = []  # registered, not released yet
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._conns: dict[str, http.client.HTTPConnection] = {}
        self._conns_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._tail_end = 0

    # -- the data plane's side ---------------------------------------------------------------

    def ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="distdb-ship")
                self._thread = threading.Thread(target=self._run, name="distdb-shipper",
                                                daemon=True)  # fmt: skip
                self._thread.start()

    def serving(self, span: Span) -> bool:
        """Whether a replicated span may be served now: lease held at an applied version,
        the log tail shipped, and the span's own snapshot (a new leader's) shipped."""
        self.ensure_started()
        return lease_current().valid(span.version) and self.ready and self.shipped >= span.ready_seq

    def begin(self, table: str, keys: list[str]) -> Ticket:
        """Mark ``keys`` pending (before the write commits). The shipper releases them once
        it has passed the write's entries (``last_seq``, set before the commit); a write
        that does not commit releases them itself (``release``)."""
        self.ensure_started()
        ticket = Ticket(table, keys)
        with self.cond:
            for key in keys:
                self.pending[(table, key)] += 1
            self._tickets.append(ticket)
        return ticket

    def release(self, ticket: Ticket) -> None:
        with self.cond:
            self._release_locked(ticket)
            self.cond.notify_all()

    def _release_locked(self, ticket: Ticket) -> None:
        if ticket.released:
            return
        ticket.released = True
        for key in ticket.keys:
            slot = (ticket.table, key)
            self.pending[slot] -= 1
            if self.pending[slot] <= 0:
                del self.pending[slot]

    def wait(self, ticket: Ticket, timeout_s: float) -> str | None:
        """Wait until the ticket's entries are on every in-sync follower; None if they
        are, else why not. On a timeout the keys stay pending until the shipper is past
        them: no read sees a write that is not on every in-sync replica."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            self.cond.notify_all()  # wake the shipper: there is work
            while not ticket.released:
                left = deadline - time.monotonic()
                if left <= 0:
                    return "the in-sync followers did not confirm the write in time"
                self.cond.wait(min(left, 0.5))
            for seq in range(ticket.first_seq, ticket.last_seq + 1):
                why = self.failed.get(seq)
                if why is not None:
                    return why
        return None

    def any_pending(self, table: str, keys: Iterable[str]) -> bool:
        if not self.pending:
            return False
        with self.cond:
            return any((table, k) in self.pending for k in keys)

    def any_pending_in(self, table: str, start: str, end: str | None) -> bool:
        if not self.pending:
            return False
        with self.cond:
            return any(
                t == table and k >= start and (end is None or k < end) for t, k in self.pending
            )

    def wait_keys(self, table: str, keys: Iterable[str], timeout_s: float) -> bool:
        """Wait until none of ``keys`` has a write pending; False if one still has."""
        slots = [(table, k) for k in keys]
        return self._wait_until(lambda: not any(s in self.pending for s in slots), timeout_s)

    def wait_range(self, table: str, start: str, end: str | None, timeout_s: float) -> bool:
        """Wait until no key of [start, end) has a write pending; False if one still has."""

        def clear() -> bool:
            return not any(
                t == table and k >= start and (end is None or k < end) for t, k in self.pending
            )

        return self._wait_until(clear, timeout_s)

    def _wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.1))
        return True

    # -- the shipper thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                close_old_connections()
                if self.shipped < 0:
                    self._start()
                self._step()
            except Exception:  # noqa: BLE001 - the shipper must outlive any one failure
                log.exception("replication step failed; trying again")
                time.sleep(MASTER_RETRY_S)

    def _start(self) -> None:
        """Start from the oldest entry in the log (followers skip what they have). An empty
        log was trimmed, and a trim never passes what was shipped (``changes_trim``):
        everything ever written was shipped, up to the recorded position — at least any
        range's snapshot (``ready_seq``), which a restarted leader would otherwise wait
        for forever (seqs are never reused)."""
        first = ChangeLogEntry.objects.order_by("seq").values_list("seq", flat=True).first()
        last = ChangeLogEntry.objects.order_by("-seq").values_list("seq", flat=True).first()
        self._tail_end = last or 0
        if first is None:
            snapshots = OwnedRange.objects.aggregate(m=Max("ready_seq"))["m"] or 0
            position = max(shipped_read(), snapshots)
        else:
            position = first - 1
        with self.cond:
            self.shipped = position
            self.cond.notify_all()
        log.info("shipping the log from seq %d (tail ends at %d)", self.shipped + 1, self._tail_end)

    def _step(self) -> None:
        entries, more = changes_batch(self.shipped, SHIP_BATCH, max_bytes=protocol.PAGE_BYTES)
        if more and self._pass_unneeded():  # a backlog: skip what nobody needs, unread
            return
        if not entries:
            with self.cond:
                if not self.ready and self.shipped >= self._tail_end:
                    self.ready = True
                    self.cond.notify_all()
                    log.info("the log tail (to seq %d) is on every in-sync follower", self.shipped)
                self.cond.wait(IDLE_WAIT_S)
            return
        self._advance(entries[-1].seq, self._ship(entries))

    def _pass_unneeded(self) -> bool:
        """Pass the entries at the head of the log that no follower needs — of ranges led
        without followers (a promoted leader whose followers are gone), or no longer led
        (those fail) — reading only their seqs and keys. Returns whether it moved.

        Without it a leader promoted with no follower left read and parsed its whole
        snapshot (80k rows: 3.7 s) before it served (``serving``: ``ready_seq``)."""
        heads = list(
            ChangeLogEntry.objects.filter(seq__gt=self.shipped)
            .order_by("seq")
            .values_list("seq", "table", "key")[:PASS_SCAN]
        )
        routes = self._routes()  # after the entries: each was written while its range was led
        failed: dict[int, str] = {}
        upto = self.shipped
        for seq, table, key in heads:
            route = _route_of(routes, table, key)
            if route is None:
                failed[seq] = NOT_LED
            elif route.replicated and route.followers:
                break  # shipped the usual way, with its image
            upto = seq
        if upto == self.shipped:
            return False
        self._advance(upto, failed)
        return True

    def _advance(self, upto: int, failed: dict[int, str]) -> None:
        """Every entry up to ``upto`` has been dealt with; ``failed`` are those that are not
        on every in-sync follower: release the tickets waiting for them."""
        with self.cond:
            self.failed.update(failed)
            if len(self.failed) > FAILED_KEEP:
                for seq in sorted(self.failed)[: len(self.failed) - FAILED_KEEP]:
                    del self.failed[seq]
            self.shipped = upto
            try:
                shipped_store(self.shipped)  # trims stop here (``control.changes_trim``)
            except OSError as exc:  # a full disk: trims stop earlier, nothing else is lost
                log.warning("could not record the shipped position: %s", exc)
            for ticket in self._tickets:
                if ticket.last_seq and ticket.last_seq <= self.shipped:
                    self._release_locked(ticket)
            self._tickets = [t for t in self._tickets if not t.released]
            self.cond.notify_all()

    def _routes(self) -> dict[str, list[_Route]]:
        routes: dict[str, list[_Route]] = defaultdict(list)
        for table, start, end, replicated, followers in OwnedRange.objects.values_list(
            "table", "start_key", "end_key", "replicated", "followers"
        ):
            routes[table].append(
                _Route(start, end, replicated, [(n, u) for n, u in followers or ()])
            )
        return routes

    def _ship(self, entries: list[protocol.ChangeEntry]) -> dict[int, str]:
        """Get ``entries`` onto every in-sync follower of their ranges; returns the seqs
        that are not (and why)."""
        failed: dict[int, str] = {}
        done: set[str] = set()  # followers that have the batch
        behind_since: dict[str, float] = {}
        newer_since: dict[str, float] = {}  # a follower refused under newer metadata
        while True:
            routes = self._routes()
            version = metadata_version_current()
            per_follower: dict[tuple[str, str], list[protocol.ChangeEntry]] = defaultdict(list)
            for entry in entries:
                route = _route_of(routes, entry.table, entry.key)
                if route is None:
                    failed[entry.seq] = NOT_LED
                    continue
                if not route.replicated:
                    continue
                for node, url in route.followers:
                    if node not in done:
                        per_follower[(node, url)].append(entry)
            if not per_follower:
                return failed
            assert self._pool is not None
            futures = {
                follower: self._pool.submit(self._send, follower[1], version, batch)
                for follower, batch in per_follower.items()
            }
            retry = False
            for (node, _url), future in futures.items():
                try:
                    answer = future.result()
                except ReplicaBehind:
                    since = behind_since.setdefault(node, time.monotonic())
                    if time.monotonic() - since < settings.DISTDB_REPLICATE_TIMEOUT_S:
                        retry = True
                        continue
                    retry |= self._drop(node, "it stayed behind the leader's metadata")
                    continue
                except (DistdbError, OSError, http.client.HTTPException) as exc:
                    retry |= self._drop(node, f"{type(exc).__name__}: {exc}")
                    continue
                done.add(node)
                if answer.refused and answer.version > version:
                    # The follower applied a version this server has not yet: most often
                    # one that drops it from the in-sync set (rf lowered, a shrink), whose
                    # push here is on its way. Ship again under that version: to the
                    # followers it names, or NOT_LED if this server no longer leads.
                    since = newer_since.setdefault(node, time.monotonic())
                    if time.monotonic() - since < settings.DISTDB_REPLICATE_TIMEOUT_S:
                        done.discard(node)
                        retry = True
                        continue
                for seq in answer.refused:
                    failed[seq] = f"{node} does not take this server as the range's leader"
            if not retry:
                return failed
            # Never past a batch that an in-sync follower may lack: retry until it has it
            # or the master has dropped it (writers waiting meanwhile time out unconfirmed).
            time.sleep(BEHIND_RETRY_S)

    def _drop(self, node: str, why: str) -> bool:
        """Have the master remove ``node`` from the in-sync sets of our ranges, and apply
        its answer. Returns True (ship again: to fewer followers, or once the master
        answers)."""
        log.warning("follower %s did not acknowledge: %s; asking the master to drop it", node, why)
        try:
            body = protocol.dumps(protocol.ShrinkRequest(follower=node, reason=why[:200]))
            raw = _post(settings.DISTDB_MASTER_URL, "/internal/v1/replicas/shrink", body,
                        timeout_s=10, conns=self._conns, lock=self._conns_lock)  # fmt: skip
            metadata = protocol.Metadata.model_validate_json(raw)
            metadata_apply(metadata, settings.DISTDB_NODE_ID)
            log.warning("dropped %s from the in-sync sets (metadata v%s)", node, metadata.version)
        except (DistdbError, OSError, http.client.HTTPException, ValueError) as exc:
            log.warning("could not have %s dropped: %s", node, exc)
            time.sleep(MASTER_RETRY_S)
        return True

    def _send(
        self, url: str, version: int, batch: list[protocol.ChangeEntry]
    ) -> protocol.ReplicateResponse:
        body = protocol.dumps(
            protocol.ReplicateRequest(
                leader=settings.DISTDB_NODE_ID, version=version, entries=batch
            )  # fmt: skip
        )
        raw = _post(url, "/internal/v1/replicate", body,
                    timeout_s=settings.DISTDB_REPLICATE_TIMEOUT_S, conns=self._conns,
                    lock=self._conns_lock)  # fmt: skip
        return protocol.ReplicateResponse.model_validate_json(raw)


def _post(
    base_url: str,
    path: str,
    body: bytes,
    *,
    timeout_s: float,
    conns: dict[str, http.client.HTTPConnection],
    lock: threading.Lock,
) -> bytes:
    """POST over a kept-alive connection per base URL (stdlib ``http.client``: ~0.25 ms of
    CPU a call, DESIGN §9); an error answer is raised as its ``DistdbError``.

    A kept-alive connection the peer closed while idle (uvicorn closes them after 5 s)
    fails at once on its next use; that is not the peer failing, so the request is sent
    again once on a new connection. Both requests sent here are idempotent (a follower
    skips entries it has; the master drops a follower that is already dropped)."""
    with lock:
        conn = conns.pop(base_url, None)
    reused = conn is not None
    while True:
        if conn is None:
            parts = urllib.parse.urlsplit(base_url)
            https = parts.scheme == "https"
            cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
            conn = cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
        conn.timeout = timeout_s
        if conn.sock is not None:
            conn.sock.settimeout(timeout_s)
        headers = {"Authorization": f"Bearer {own_token()}", "Content-Type": "application/json"}
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            conn.close()
            if not reused:
                raise
            reused, conn = False, None  # the peer closed an idle connection: once more
            continue
        except Exception:
            conn.close()
            raise
        break
    with lock:
        old = conns.pop(base_url, None)
        conns[base_url] = conn
    if old is not None:
        old.close()
    if resp.status != 200:
        try:
            raise error_from_dict(orjson.loads(raw))
        except (orjson.JSONDecodeError, TypeError):
            raise TabletUnavailable(f"{base_url}{path} answered {resp.status}") from None
    return raw


shipper = Shipper()


def spans_serving(touched: Iterable[Span]) -> None:
    """Raise ``LeaderUnavailable`` unless every replicated span in ``touched`` may be
    served now (lease, shipped tail, shipped snapshot)."""
    for span in touched:
        if span.replicated and not shipper.serving(span):
            raise LeaderUnavailable(
                "this server cannot serve the range right now (no current leader lease, "
                "or its replicas are being brought up to date); retry shortly"
            )

"""Replication at the master: leader leases, failover, in-sync-set shrinking, re-replication.

Loaded by the master role: the link consumer grants leases and checks for failovers at
every heartbeat, the internal API shrinks in-sync sets at a leader's request, the Celery
worker re-replicates. The protocol and why each step is safe: docs/architecture.md,
"Replication and failover".

Timing is on this host's ``CLOCK_MONOTONIC`` (``time.monotonic``, system-wide on Linux, so
the consumer's and the worker's readings compare), with the boot it was taken in. A grant
is recorded when the heartbeat has *arrived*: later than the tablet's own count, which
starts when it sent the heartbeat. The master fails a range over only once
``lease + margin`` has passed since the last grant, re-checked under the metadata lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from distdb.boot import boot_id
from distdb.errors import DistdbError
from distdb.protocol import TabletHealth
from master_app.models import Failover, Table, Tablet, TabletServer
from master_app.services import leases
from master_app.services.metadata import (
    RangeAssignment,
    _version_lock,
    assignments_current,
    metadata_commit,
    metadata_version_current,
)
from master_app.services.tablet_api import tablet_get

log = logging.getLogger(__name__)
Clock = Callable[[], float]


class _NothingToChange(Exception):
    """Raised inside a commit's transaction when, under the lock, nothing is left to do."""


# --- leases ---------------------------------------------------------------------------------------


def lease_grant(node_id: str, *, clock: Clock = time.monotonic) -> int:
    """Record a heartbeat of ``node_id`` and grant it a leader lease; returns the metadata
    version the grant is for (the tablet uses it only once it has applied that version).

    One transaction that also locks the newest metadata version: a grant and a failover's
    commit are ordered, so a grant either precedes the commit (and the failover waits for it
    to end) or names the failover's version.
    """
    with transaction.atomic():
        _version_lock()
        version = metadata_version_current()
        TabletServer.objects.filter(node_id=node_id).update(
            state=TabletServer.State.UP,
            last_heartbeat=timezone.now(),
            lease_granted_at=clock(),
            lease_boot=boot_id(),
        )
    return version


def _lease_over(server: TabletServer, now: float) -> bool:
    """Whether ``server``'s leader lease has surely ended (lease + margin since the grant)."""
    if server.lease_granted_at is None:
        return True  # never granted: it cannot be serving a replicated range
    if server.lease_boot != boot_id():
        return False  # granted before this host booted: re-armed by ``_rearm``
    return now > server.lease_granted_at + _lease_s() + settings.DISTDB_LEADER_LEASE_MARGIN_S


def _lease_current(server: TabletServer, now: float) -> bool:
    """Whether ``server`` holds a lease now (it heartbeats: it may be promoted)."""
    return (
        server.lease_granted_at is not None
        and server.lease_boot == boot_id()
        and now < server.lease_granted_at + _lease_s()
    )


def _lease_s() -> float:
    return float(settings.DISTDB_LEADER_LEASE_S)


def _rearm(now: float) -> None:
    """Grants from an earlier boot of this host: their time is unknown, count a full lease
    from now."""
    TabletServer.objects.exclude(lease_boot=boot_id()).exclude(lease_granted_at=None).update(
        lease_granted_at=now, lease_boot=boot_id()
    )


# --- failover -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Promotion:
    table: str
    start: str
    end: str | None
    old: str
    new: str
    version: int
    unavailable_s: float


class _Hearing:
    """When this process last heard a heartbeat (from any tablet server), and until when
    it fails nothing over because it had heard nothing for a while."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: float | None = None
        self.grace_until = 0.0

    def heard(self, now: float) -> bool:
        """Record a heartbeat at ``now``; False while in a grace period.

        A master that has just started, or heard from nobody for two heartbeats (it was
        the one cut off, or Redis, its host, its process stalled), has not been granting
        leases: every lease looks ended, yet the tablet servers are fine and about to
        reconnect. Failing them over to whichever reconnects first would churn leaders
        for nothing, so it first waits one lease and its margin.
        """
        with self.lock:
            deaf = self.last is None or now - self.last > 2 * settings.DISTDB_HEARTBEAT_S + 1
            self.last = now
            if deaf:
                self.grace_until = now + _lease_s() + settings.DISTDB_LEADER_LEASE_MARGIN_S
            return now >= self.grace_until


hearing = _Hearing()


def failover_check(*, clock: Clock = time.monotonic) -> list[Promotion]:
    """Fail over every replicated range whose leader's lease has surely ended to an
    in-sync follower that holds a lease now; returns what was promoted.

    Called at every heartbeat (so a master that hears from nobody fails nothing over,
    and one that starts hearing again first waits: ``_Hearing``); cheap when nothing is
    due: one query of the servers.
    """
    now = clock()
    if not hearing.heard(now):
        return []
    servers = list(TabletServer.objects.all())
    if any(s.lease_boot != boot_id() and s.lease_granted_at is not None for s in servers):
        _rearm(now)
        return []
    over = {s.node_id for s in servers if _lease_over(s, now)}
    if not over:
        return []
    due = {
        table_id
        for table_id, leader, in_sync in Tablet.objects.filter(table__rf__gt=1).values_list(
            "table_id", "server__node_id", "in_sync"
        )
        if in_sync and (leader in over or over.intersection(in_sync))
    }
    promotions: list[Promotion] = []
    for table in Table.objects.filter(pk__in=due):
        promotions += _fail_over_table(table, clock)
    for p in promotions:
        log.warning("failover: %s [%r, %r) %s -> %s (v%s, %.1f s since the last grant)",
                    p.table, p.start, p.end, p.old, p.new, p.version, p.unavailable_s)  # fmt: skip
    return promotions


def _fail_over_table(table: Table, clock: Clock) -> list[Promotion]:
    # (range, old leader, new leader, seconds since the old one's last grant): a Promotion
    # once the commit has given it a version.
    done: list[tuple[RangeAssignment, str, float]] = []

    def assignments() -> list[RangeAssignment]:
        # Under the metadata lock: the grants read now are final for this commit.
        now = clock()
        servers = {s.node_id: s for s in TabletServer.objects.all()}
        leaders = _leader_counts()
        out: list[RangeAssignment] = []
        changed = False
        for a in assignments_current(table):
            leader = servers.get(a.server_id)
            if leader is not None and _lease_current(leader, now):
                # A follower of a live leader whose lease has surely ended is dead or cut
                # off: drop it, as the leader would at its next write (always safe: a
                # smaller set still holds every acknowledged write), so that re-replication
                # replaces it even while nobody writes. Never under a dead leader: there
                # a dead follower may be the one that comes back first, holding it all.
                alive = tuple(
                    f for f in a.in_sync if f in servers and not _lease_over(servers[f], now)
                )
                if alive != a.in_sync:
                    changed = True
                    a = RangeAssignment(a.table, a.start, a.end, a.server_id, alive)
            if leader is None or not a.in_sync or not _lease_over(leader, now):
                out.append(a)
                continue
            live = [f for f in a.in_sync if f in servers and _lease_current(servers[f], now)]
            if not live:
                out.append(a)  # nobody to promote (the master may be the one cut off)
                continue
            new = min(live, key=lambda f: (leaders.get(f, 0), f))
            leaders[new] = leaders.get(new, 0) + 1
            rest = tuple(f for f in a.in_sync if f != new)
            out.append(RangeAssignment(a.table, a.start, a.end, new, rest))
            since = now - (leader.lease_granted_at or now)
            done.append((a, new, since))
        if not done and not changed:
            raise _NothingToChange
        return out

    try:
        version = metadata_commit(table, assignments, f"failover of {table.name}")
    except _NothingToChange:
        return []
    repair_soon()  # a range short of copies: a follower dropped, or a leader failed over
    promoted = [
        Promotion(a.table, a.start, a.end, a.server_id, new, version, since)
        for a, new, since in done
    ]
    with transaction.atomic():
        for p in promoted:
            Failover.objects.create(
                table=p.table, start_key=p.start, end_key=p.end, from_server=p.old,
                to_server=p.new, version=version, unavailable_s=round(p.unavailable_s, 3),
            )  # fmt: skip
            _deposed_add(p.old, p.table, p.start, p.end)
    return promoted


def _leader_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in Tablet.objects.values_list("server__node_id", flat=True):
        counts[node] = counts.get(node, 0) + 1
    return counts


def _deposed_add(node_id: str, table: str, start: str, end: str | None) -> None:
    """The old leader's uncollected entries of this range must never reach the master's
    copy (the promoted follower's snapshot replaces them): ``collect`` skips them up to
    the seq the old leader reports in its next hello (``deposed_settle``)."""
    server = TabletServer.objects.select_for_update().get(node_id=node_id)
    server.deposed = [*server.deposed, {"table": table, "start": start, "end": end, "upto": None}]
    server.save(update_fields=["deposed"])


def deposed_settle(node_id: str, last_seq: int) -> None:
    """At a hello: entries of a deposed range up to ``last_seq`` (everything the old leader
    wrote before it heard of the failover) are skipped; later ones are its own again. A
    log that went backwards (a lost disk) restarts the master's position with it."""
    with transaction.atomic():
        server = TabletServer.objects.select_for_update().filter(node_id=node_id).first()
        if server is None:
            return
        fields = []
        if last_seq < server.acked_seq:
            log.warning("%s's change log restarts at %d (the master had %d): its disk was "
                        "replaced", node_id, last_seq, server.acked_seq)  # fmt: skip
            server.acked_seq, server.trim_floor = last_seq, None
            fields += ["acked_seq", "trim_floor"]
        if any(d.get("upto") is None for d in server.deposed):
            server.deposed = [
                {**d, "upto": last_seq if d.get("upto") is None else d["upto"]}
                for d in server.deposed
            ]
            fields.append("deposed")
        if fields:
            server.save(update_fields=fields)


def amnesia_settle(node_id: str) -> int:
    """A server said hello with no metadata at all: its database is new (a lost disk, a
    wiped host). Whatever the metadata says it holds, it holds nothing now, so before it
    is sent any metadata: it leaves every in-sync set, and every replicated range it leads
    goes to an in-sync follower — alive or not (a range waiting for its follower to come
    back is unavailable; one led by an empty server would be *lost*: its first act as a
    "new" leader would be to replicate its emptiness). The server is then re-seeded by
    re-replication like any new one. Returns how many ranges changed.

    No lease needs to run out first: this node id answers from a new process with a new
    database, so the one that held the old lease is gone.
    """
    changed = 0
    tables = Table.objects.filter(rf__gt=1).filter(
        pk__in=Tablet.objects.values_list("table_id", flat=True)
    )
    for table in tables:
        count = [0]

        def assignments(table: Table = table, count: list[int] = count) -> list[RangeAssignment]:
            out = []
            for a in assignments_current(table):
                followers = tuple(f for f in a.in_sync if f != node_id)
                if a.server_id == node_id and followers:
                    a = RangeAssignment(a.table, a.start, a.end, followers[0], followers[1:])
                    count[0] += 1
                elif followers != a.in_sync:
                    a = RangeAssignment(a.table, a.start, a.end, a.server_id, followers)
                    count[0] += 1
                out.append(a)
            if not count[0]:
                raise _NothingToChange
            return out

        try:
            version = metadata_commit(table, assignments, f"{node_id} came back without its data")
        except _NothingToChange:
            continue
        changed += count[0]
        log.warning("%s came back with an empty database: %d range(s) of %s re-assigned (v%s)",
                    node_id, count[0], table.name, version)  # fmt: skip
    if changed:
        repair_soon()
    return changed


# --- in-sync sets ---------------------------------------------------------------------------------


def in_sync_shrink(leader: str, follower: str, reason: str = "") -> int:
    """Drop ``follower`` from the in-sync set of every range ``leader`` leads (the leader's
    request: the follower did not acknowledge). Only ranges the asker leads *now* (read
    under the metadata lock) change. Returns how many ranges changed."""
    changed = 0
    tables = Table.objects.filter(tablets__server__node_id=leader).distinct()
    for table in tables:
        count = [0]

        def assignments(table: Table = table, count: list[int] = count) -> list[RangeAssignment]:
            out = []
            for a in assignments_current(table):
                if a.server_id == leader and follower in a.in_sync:
                    a = RangeAssignment(a.table, a.start, a.end, a.server_id,
                                        tuple(f for f in a.in_sync if f != follower))  # fmt: skip
                    count[0] += 1
                out.append(a)
            if not count[0]:
                raise _NothingToChange
            return out

        try:
            metadata_commit(table, assignments, f"{leader} dropped {follower} from in-sync")
        except _NothingToChange:
            continue
        changed += count[0]
    if changed:
        log.warning("%s dropped %s from %d in-sync set(s): %s", leader, follower, changed, reason)
        transaction.on_commit(repair_soon)
    return changed


# --- re-replication -------------------------------------------------------------------------------


def repair_soon() -> None:
    """Queue a re-replication run on the worker (best effort: beat runs one regularly)."""
    if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
        return  # unit tests: never run a repair inline in the caller
    try:
        from master_app.tasks import repair_replicas

        repair_replicas.delay()
    except Exception:  # noqa: BLE001 - the broker being down must not fail a failover
        log.warning("could not queue a re-replication run", exc_info=True)


@dataclass
class RepairReport:
    added: list[dict[str, object]]
    failed: list[dict[str, object]]


def replicas_repair() -> RepairReport:
    """Bring every replicated range back to ``rf`` copies: copy it to live servers that
    hold no copy (fewest copies first), through the move machinery (``Move.kind ==
    "replica"``). Holds the maintenance lease (one run or repair at a time); raises
    ``LeaseHeld`` if a rebalance run holds it."""
    from master_app.services.consolidated import count_in
    from master_app.services.moves import move_range
    from master_app.services.plan import Move

    report = RepairReport([], [])
    holder = leases.holder_name("repair replicas")
    with leases.held(leases.MAINTENANCE, holder, settings.DISTDB_REBALANCE_LEASE_S) as lease:
        for table in Table.objects.filter(rf__gt=1).order_by("name"):
            for tablet in Tablet.objects.filter(table=table).select_related("server"):
                copies = 1 + len(tablet.in_sync)
                if copies >= table.rf or tablet.server.state != TabletServer.State.UP:
                    continue
                target = _repair_target(tablet)
                if target is None:
                    continue
                move = Move(table.name, tablet.start_key, tablet.end_key, tablet.server.node_id,
                            target, count_in(table, tablet.start_key, tablet.end_key),
                            kind="replica")  # fmt: skip
                outcome = move_range(move, check=lease.check)
                entry = {"move": move.as_dict(), "error": outcome.error,
                         "duration_s": round(outcome.duration_s, 3)}  # fmt: skip
                (report.added if outcome.outcome == "succeeded" else report.failed).append(entry)
    return report


def _repair_target(tablet: Tablet) -> str | None:
    holders = {tablet.server.node_id, *tablet.in_sync}
    live = TabletServer.objects.filter(state=TabletServer.State.UP, draining=False).exclude(
        node_id__in=holders
    )
    copies: dict[str, int] = {}
    for t in Tablet.objects.select_related("server"):
        for node in (t.server.node_id, *t.in_sync):
            copies[node] = copies.get(node, 0) + 1
    ranked = sorted(live, key=lambda s: (copies.get(s.node_id, 0), s.node_id))
    for server in ranked:
        # Its link may be up while its server is not (separate processes): a copy made
        # through the link would be dropped again at the leader's first write.
        try:
            tablet_get(server.node_id, server.url, "/internal/v1/health", TabletHealth,
                       timeout_s=2)  # fmt: skip
        except DistdbError as exc:
            log.info("not copying to %s now: %s", server.node_id, exc)
            continue
        return server.node_id
    return None


__all__ = [
    "Promotion",
    "RepairReport",
    "amnesia_settle",
    "deposed_settle",
    "failover_check",
    "in_sync_shrink",
    "lease_grant",
    "replicas_repair",
    "repair_soon",
]

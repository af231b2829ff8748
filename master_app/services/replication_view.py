"""Per-range replication as operators see it: leader, followers, in-sync set, lag, failovers.

Loaded by the master role, for ``manage.py cluster_status`` and the admin (the dashboard
and the tablet list): an operator's page, never a hot path. The lag comes from the
tablet servers themselves (``GET /internal/v1/replication``), asked concurrently with a
short deadline: a server that does not answer in time costs only its own figures, shown
as unknown, never an error page (DESIGN invariant 5: one sick node stays local).

A follower's lag: in entries, the leader's newest change-log seq of the range minus the
leader seq the follower has applied; in seconds, how long ago the follower last applied
an entry while it is behind (0 when it has everything). Both are read at slightly
different instants from two servers, so they are indications, not exact figures; an
in-sync follower is at most the writes in flight behind (the leader acknowledges a write
only once every in-sync follower has it).
"""

from __future__ import annotations

import logging
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from distdb import protocol
from distdb.errors import DistdbError
from distdb.keys import bound_display
from master_app.models import Failover, Table, Tablet, TabletServer
from master_app.services.tablet_api import tablet_get
from master_app.services.units import human_duration

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 1.0
UNKNOWN = "unknown"

Probes = dict[str, protocol.ReplicationState | None]  # node id -> its answer (None: none)


@dataclass(frozen=True)
class FollowerLag:
    """One follower of a range and how far behind its leader it is (None: unknown)."""

    server: str
    in_sync: bool  # in the range's committed in-sync set (else: being added or dropped)
    state: str  # the server's state at the master: up / down
    applied_seq: int | None = None
    lag_entries: int | None = None
    lag_s: float | None = None

    @property
    def lag(self) -> str:
        """``3 entries, 0.94 s`` / ``in step`` / ``unknown``, for people."""
        if self.lag_entries is None:
            return UNKNOWN
        if self.lag_entries == 0:
            return "in step"
        return f"{self.lag_entries} entries, {human_duration(self.lag_s)}"


@dataclass
class RangeReplication:
    """One range of a table: its leader and followers, as committed and as reported."""

    table: str
    start: str  # for people (decoded keys, -inf/+inf)
    end: str
    rf: int
    version: int
    leader: str
    leader_state: str
    in_sync: list[str]
    followers: list[FollowerLag] = field(default_factory=list)

    @property
    def copies(self) -> int:
        return 1 + len(self.in_sync)

    @property
    def under_replicated(self) -> bool:
        return self.copies < self.rf

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["followers"] = [{**asdict(f), "lag": f.lag} for f in self.followers]
        return {**data, "copies": self.copies, "under_replicated": self.under_replicated}


def replication_probe(servers: list[TabletServer], timeout_s: float = PROBE_TIMEOUT_S) -> Probes:
    """Ask every server in ``servers`` what it follows and leads, all at once; a server
    that fails or has not answered after ``timeout_s`` (plus a little) maps to None."""
    if not servers:
        return {}
    pool = ThreadPoolExecutor(max_workers=len(servers), thread_name_prefix="replication-probe")

    def ask(server: TabletServer) -> protocol.ReplicationState | None:
        try:
            return tablet_get(server.node_id, server.url, "/internal/v1/replication",
                              protocol.ReplicationState, timeout_s=timeout_s)  # fmt: skip
        except DistdbError as exc:
            log.info("no replication state from %s: %s", server.node_id, exc.message)
            return None

    futures = {s.node_id: pool.submit(ask, s) for s in servers}
    # A socket timeout bounds each operation, not the whole exchange: bound the wait too,
    # and leave a straggler's thread to finish on its own.
    wait(futures.values(), timeout=timeout_s + 0.5, return_when=FIRST_EXCEPTION)
    pool.shutdown(wait=False, cancel_futures=True)
    return {node: f.result() if f.done() and not f.cancelled() else None
            for node, f in futures.items()}  # fmt: skip


def replication_ranges(
    *, probe: bool = True, timeout_s: float = PROBE_TIMEOUT_S
) -> list[RangeReplication]:
    """Every range of every table with rf above 1 or followers: committed leader and
    in-sync set, and each follower's lag (``probe``: asked of the live servers)."""
    tablets = [
        t
        for t in Tablet.objects.select_related("table", "server").order_by(
            "table__name", "start_key"
        )
        if t.table.rf > 1 or t.in_sync
    ]
    servers = {s.node_id: s for s in TabletServer.objects.all()}
    live = [s for s in servers.values() if s.state == TabletServer.State.UP]
    probes: Probes = replication_probe(live, timeout_s) if probe and tablets else {}
    return [_range(t, servers, probes) for t in tablets]


def _range(tablet: Tablet, servers: dict[str, TabletServer], probes: Probes) -> RangeReplication:
    table = tablet.table
    leader = tablet.server.node_id
    followers = list(tablet.in_sync or ())
    for node, state in sorted(probes.items()):  # followers not (or no longer) in the set
        if node == leader or node in followers or state is None:
            continue
        if _followed(state, tablet, leader) is not None:
            followers.append(node)
    return RangeReplication(
        table=table.name,
        start=bound_display(table.key_type, tablet.start_key),
        end=bound_display(table.key_type, tablet.end_key or None),
        rf=table.rf,
        version=tablet.version,
        leader=leader,
        leader_state=tablet.server.state,
        in_sync=list(tablet.in_sync or ()),
        followers=[
            _lag(tablet, leader, node, node in (tablet.in_sync or ()), servers, probes)
            for node in followers
        ],
    )


def _lag(
    tablet: Tablet,
    leader: str,
    node: str,
    in_sync: bool,
    servers: dict[str, TabletServer],
    probes: Probes,
) -> FollowerLag:
    server = servers.get(node)
    state = server.state if server is not None else UNKNOWN
    mine, theirs = probes.get(node), probes.get(leader)
    followed = _followed(mine, tablet, leader) if mine is not None else None
    if followed is None or theirs is None:
        return FollowerLag(node, in_sync, state)
    led = [r.last_seq for r in theirs.led if _overlaps(r.table, r.start, r.end, tablet)]
    # A range the leader does not (yet) report as replicated: its whole log is the bound.
    newest = max(led) if led else theirs.last_seq
    behind = max(0, newest - followed.applied_seq)
    lag_s = 0.0 if behind == 0 else followed.applied_age_s
    return FollowerLag(node, in_sync, state, followed.applied_seq, behind, lag_s)


def _followed(
    state: protocol.ReplicationState, tablet: Tablet, leader: str
) -> protocol.FollowedRangeState | None:
    """The range ``state``'s server follows under ``leader`` that overlaps ``tablet``."""
    for f in state.followed:
        if f.leader == leader and _overlaps(f.table, f.start, f.end, tablet):
            return f
    return None


def _overlaps(table: str, start: str, end: str | None, tablet: Tablet) -> bool:
    return (
        table == tablet.table.name
        and (tablet.end_key is None or start < tablet.end_key)
        and (end is None or end > tablet.start_key)
    )


@dataclass(frozen=True)
class FailoverRow:
    """One failover for people: when, which range, from whom to whom, how long unavailable."""

    at: str
    table: str
    start: str
    end: str
    from_server: str
    to_server: str
    version: int
    unavailable_s: float
    unavailable: str


def failovers_recent(limit: int = 20) -> list[FailoverRow]:
    """The latest failovers, newest first (a deleted table's keys are shown as stored)."""
    key_types = dict(Table.objects.values_list("name", "key_type"))

    def shown(table: str, key: str | None) -> str:
        return bound_display(key_types.get(table), key)

    return [
        FailoverRow(
            at=f.at.isoformat(timespec="seconds"), table=f.table, start=shown(f.table, f.start_key),
            end=shown(f.table, f.end_key or None), from_server=f.from_server,
            to_server=f.to_server, version=f.version, unavailable_s=f.unavailable_s,
            unavailable=human_duration(f.unavailable_s),
        )
        for f in Failover.objects.order_by("-at", "-pk")[:limit]
    ]  # fmt: skip


__all__ = [
    "FailoverRow",
    "FollowerLag",
    "RangeReplication",
    "failovers_recent",
    "replication_probe",
    "replication_ranges",
]

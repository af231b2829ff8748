"""Plan a rebalance: which key ranges change owner so live tablet servers hold balanced data.

Pure functions (no database, no network) so the planning rules are tested on their own.

Per table: the rows of every live tablet server are counted per tablet; each target
server (live, not draining) gets a quota of ``total / n`` rows; a draining server's
quota is 0. A table whose servers all lie within ``threshold`` of the mean (and whose
largest excess is under ``min_rows``) moves nothing. Otherwise every server above its
quota gives exactly its excess — cut off the top of its tablets, at row boundaries —
to servers below theirs, so the rows moved are the minimum possible: the sum of the
excesses. A draining server also hands over its empty tablets, so it ends up owning
nothing. Servers that are down are left alone: their rows cannot be copied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TabletLoad:
    """A current tablet [start, end) of a table, its owner and its row count."""

    start: str
    end: str | None
    server: str
    rows: int


@dataclass(frozen=True)
class Move:
    """Hand the rows of [start, end) of ``table`` from ``source`` to ``target``.

    ``kind``: "move" hands the range's leadership over (its followers stay); "replica"
    copies the range to ``target`` as a new in-sync follower, ``source`` (its leader)
    keeps it (re-replication, ``master_app.services.replicas``). A "replica" move with
    ``replaces`` swaps that follower for ``target`` in the same commit (follower
    placement, ``plan_followers``): the range has its copies throughout.
    """

    table: str
    start: str
    end: str | None
    source: str
    target: str
    rows: int
    kind: str = "move"
    replaces: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReplicaLoad:
    """A current tablet of a replicated table: its leader, in-sync followers and rows."""

    start: str
    end: str | None
    leader: str
    followers: tuple[str, ...]
    rows: int


@dataclass
class TablePlan:
    table: str
    before: dict[str, int]
    after: dict[str, int]
    moves: list[Move] = field(default_factory=list)
    note: str = ""
    # Replicated tables: followers to swap (``plan_followers``), after the leader moves.
    follower_moves: list[Move] = field(default_factory=list)


# key_at(start, end, offset): the stored key of the row at 0-based ``offset`` in [start, end).
KeyAt = Callable[[str, str | None, int], str]


def plan_table(
    table: str,
    tablets: Sequence[TabletLoad],
    *,
    targets: Sequence[str],
    movable: Sequence[str],
    key_at: KeyAt,
    threshold: float,
    min_rows: int,
) -> TablePlan:
    """The moves that balance ``table`` over ``targets``.

    ``movable``: the servers whose data can be moved (live ones, draining or not);
    ``targets``: those of them that should hold data (not draining).
    """
    live = [t for t in tablets if t.server in movable]
    counts = dict.fromkeys([*movable], 0)
    for t in live:
        counts[t.server] += t.rows
    before = dict(counts)
    if not targets:
        return TablePlan(table, before, before, note="no live tablet server can take data")
    total = sum(counts.values())
    quotas = _quotas(total, targets, counts)
    draining = [s for s in movable if s not in quotas]
    must_drain = any(t.server in draining for t in live)
    mean = total / len(targets)
    deviation = max(abs(counts[s] - mean) for s in targets)
    largest_excess = max(counts[s] - quotas.get(s, 0) for s in movable)
    if not must_drain and deviation <= threshold * mean:
        note = f"balanced: every server within {deviation:.0f} rows of the mean {mean:.0f}"
        return TablePlan(table, before, before, note=note)
    if not must_drain and largest_excess < min_rows:
        note = f"too little to move: {largest_excess} rows above a share, under {min_rows}"
        return TablePlan(table, before, before, note=note)

    deficits = {s: quotas[s] - counts[s] for s in targets if quotas[s] > counts[s]}
    moves: list[Move] = []
    donors = sorted(movable, key=lambda s: quotas.get(s, 0) - counts[s])
    for donor in donors:
        excess = counts[donor] - quotas.get(donor, 0)
        if excess <= 0 and donor not in draining:
            continue
        for tablet in sorted((t for t in live if t.server == donor), key=lambda t: t.start)[::-1]:
            if excess <= 0 and not (donor in draining and tablet.rows == 0):
                continue
            take = min(excess, tablet.rows)
            moves += _carve(table, tablet, take, deficits, quotas, key_at)
            excess -= take
    after = dict(counts)
    for m in moves:
        after[m.source] -= m.rows
        after[m.target] += m.rows
    return TablePlan(table, before, after, _merge(moves))


def _quotas(total: int, targets: Sequence[str], counts: dict[str, int]) -> dict[str, int]:
    """``total`` split over ``targets`` as evenly as rows allow; the odd rows stay where
    they are (the servers holding most get them), so they do not move."""
    n = len(targets)
    base, extra = divmod(total, n)
    by_load = sorted(targets, key=lambda s: (-counts.get(s, 0), s))
    return {s: base + (1 if i < extra else 0) for i, s in enumerate(by_load)}


def _carve(
    table: str,
    tablet: TabletLoad,
    take: int,
    deficits: dict[str, int],
    quotas: dict[str, int],
    key_at: KeyAt,
) -> list[Move]:
    """Cut the top ``take`` rows of ``tablet`` into moves that fill the largest deficits.

    An empty tablet of a draining server (``take`` == 0) goes whole to the least-loaded
    target.
    """
    if take == 0:
        if tablet.rows:
            return []
        target = max(deficits or quotas, key=lambda s: ((deficits or quotas)[s], s))
        if target == tablet.server:
            return []
        return [Move(table, tablet.start, tablet.end, tablet.server, target, 0)]
    moves = []
    offset = tablet.rows - take  # rows [offset, rows) of the tablet move
    while take > 0:
        target = max(deficits, key=lambda s: (deficits[s], s))
        n = min(take, deficits[target])
        start = key_at(tablet.start, tablet.end, offset) if offset > 0 else tablet.start
        stop = offset + n
        end = key_at(tablet.start, tablet.end, stop) if stop < tablet.rows else tablet.end
        moves.append(Move(table, start, end, tablet.server, target, n))
        deficits[target] -= n
        if deficits[target] == 0:
            del deficits[target]
        offset, take = stop, take - n
    return moves


def _merge(moves: list[Move]) -> list[Move]:
    """Join adjacent moves between the same two servers into one."""
    merged: list[Move] = []
    for m in sorted(moves, key=lambda m: m.start):
        last = merged[-1] if merged else None
        if last and (last.source, last.target, last.end) == (m.source, m.target, m.start):
            merged[-1] = Move(m.table, last.start, m.end, m.source, m.target, last.rows + m.rows)
        else:
            merged.append(m)
    return merged


def plan_followers(
    table: str,
    tablets: Sequence[ReplicaLoad],
    *,
    targets: Sequence[str],
    movable: Sequence[str],
    threshold: float,
    min_rows: int,
) -> list[Move]:
    """Follower moves (``Move.kind == "replica"`` with ``replaces``) that take follower
    copies off draining servers and spread follower rows over ``targets``.

    Leaders are balanced by ``plan_table``; this places the other copies, which cost
    disk and replication traffic just as much. First every follower on a draining server
    (in ``movable``, not in ``targets``) goes to the target with the fewest follower
    rows that holds no copy of the range (none: it stays, a range keeps its copies).
    Then, while two targets differ by more than ``threshold`` of the mean and at least
    ``min_rows``, a range followed by the fuller one and held nowhere on the emptier one
    moves across: the one closest to half the difference, always less than all of it,
    so each move strictly lowers the sum of squared loads and planning ends. Followers
    on servers that are down are left to failover and re-replication
    (``master_app.services.replicas``); so are ranges whose leader is down (the copy
    is made from the leader).
    """
    holders = {t.start: {t.leader, *t.followers} for t in tablets}
    followers = {t.start: list(t.followers) for t in tablets}
    load = dict.fromkeys(targets, 0)
    for t in tablets:
        for f in t.followers:
            if f in load:
                load[f] += t.rows
    moves: list[Move] = []

    def move(t: ReplicaLoad, old: str, new: str) -> None:
        moves.append(Move(table, t.start, t.end, t.leader, new, t.rows, "replica", old))
        holders[t.start] = (holders[t.start] - {old}) | {new}
        followers[t.start] = [new if f == old else f for f in followers[t.start]]
        load[new] += t.rows
        if old in load:
            load[old] -= t.rows

    live = [t for t in tablets if t.leader in movable]
    for t in live:
        for f in list(followers[t.start]):
            if f in movable and f not in load:  # draining
                free = [s for s in targets if s not in holders[t.start]]
                if free:
                    move(t, f, min(free, key=lambda s: (load[s], s)))

    mean = sum(load.values()) / len(load) if load else 0

    def best_move() -> tuple[ReplicaLoad, str, str] | None:
        for full in sorted(load, key=lambda s: (-load[s], s)):
            for empty in sorted(load, key=lambda s: (load[s], s)):
                diff = load[full] - load[empty]
                if diff <= threshold * mean or diff < min_rows:
                    break  # the emptier ones come first: none further is eligible
                fits = [
                    t for t in live
                    if full in followers[t.start]
                    and empty not in holders[t.start]
                    and 0 < t.rows < diff
                ]  # fmt: skip
                if fits:
                    t = min(fits, key=lambda t: (abs(t.rows - diff / 2), t.start))
                    return t, full, empty
        return None

    while (found := best_move()) is not None:
        move(*found)
    return moves

"""Follower placement (pure): a draining server's follower copies move off it, follower
rows spread evenly over the servers that should hold data, and a range never gets two
copies on one server or fewer than it has."""

from __future__ import annotations

from master_app.services.plan import Move, ReplicaLoad, plan_followers


def place(tablets, targets=("a", "b", "c"), movable=None, threshold=0.1, min_rows=1):
    return plan_followers(
        "t",
        tablets,
        targets=list(targets),
        movable=list(movable or targets),
        threshold=threshold,
        min_rows=min_rows,
    )


def holders_after(tablets: list[ReplicaLoad], moves: list[Move]) -> dict[str, set[str]]:
    held = {t.start: {t.leader, *t.followers} for t in tablets}
    for m in moves:
        assert m.kind == "replica" and m.replaces
        assert m.target not in held[m.start], f"two copies on {m.target}"
        held[m.start] = (held[m.start] - {m.replaces}) | {m.target}
    return held


def test_followers_all_on_one_server_are_spread_over_the_others():
    tablets = [
        ReplicaLoad("", "g", "a", ("c",), 100),
        ReplicaLoad("g", "p", "b", ("c",), 100),
        ReplicaLoad("p", None, "a", ("c",), 100),
        ReplicaLoad("x", None, "b", ("c",), 100),
    ]
    moves = place(tablets)
    held = holders_after(tablets, moves)
    follower_rows = {s: 0 for s in "abc"}
    for t in tablets:
        for f in held[t.start] - {t.leader}:
            follower_rows[f] += t.rows
    assert max(follower_rows.values()) - min(follower_rows.values()) <= 100
    assert all(m.source == t.leader for m in moves for t in tablets if t.start == m.start)
    assert all(len(h) == 2 for h in held.values())  # rf copies kept


def test_a_balanced_placement_moves_nothing():
    tablets = [
        ReplicaLoad("", "g", "a", ("b",), 100),
        ReplicaLoad("g", "p", "b", ("c",), 100),
        ReplicaLoad("p", None, "c", ("a",), 100),
    ]
    assert place(tablets) == []


def test_a_draining_servers_followers_move_to_servers_without_a_copy():
    tablets = [
        ReplicaLoad("", "g", "a", ("c",), 10),
        ReplicaLoad("g", None, "b", ("c",), 0),  # empty ranges leave too
    ]
    moves = place(tablets, targets=("a", "b"), movable=("a", "b", "c"))
    assert sorted((m.start, m.replaces, m.target) for m in moves) == [
        ("", "c", "b"),
        ("g", "c", "a"),
    ]


def test_a_follower_with_nowhere_else_to_go_stays():
    """Two servers, rf=2, one draining: the only other server leads the range."""
    tablets = [ReplicaLoad("", None, "a", ("b",), 10)]
    assert place(tablets, targets=("a",), movable=("a", "b")) == []


def test_followers_on_a_down_server_are_left_to_failover_and_repair():
    tablets = [ReplicaLoad("", None, "a", ("c",), 10)]
    assert place(tablets, targets=("a", "b"), movable=("a", "b")) == []


def test_a_difference_within_the_threshold_or_under_min_rows_moves_nothing():
    tablets = [
        ReplicaLoad("", "g", "a", ("b",), 100),
        ReplicaLoad("g", "p", "b", ("c",), 100),
        ReplicaLoad("p", None, "c", ("a",), 105),
    ]
    assert place(tablets, threshold=0.1) == []
    skewed = [ReplicaLoad("", "g", "a", ("c",), 3), ReplicaLoad("g", None, "b", ("c",), 3)]
    assert place(skewed, min_rows=10) == []


def test_every_plan_keeps_one_copy_per_server_and_converges():
    """Random placements: no move puts a second copy on a server, every range keeps its
    copies, and a second plan over the result has nothing left to do."""
    import random

    rng = random.Random(7)
    servers = list("abcde")
    for _ in range(200):
        tablets = []
        for i in range(rng.randint(1, 12)):
            leader = rng.choice(servers)
            rest = [s for s in servers if s != leader]
            followers = tuple(rng.sample(rest, rng.randint(1, 2)))
            tablets.append(ReplicaLoad(f"k{i:02d}", None, leader, followers, rng.randint(0, 500)))
        moves = place(tablets, targets=servers)
        held = holders_after(tablets, moves)
        after = [
            ReplicaLoad(t.start, t.end, t.leader, tuple(sorted(held[t.start] - {t.leader})), t.rows)
            for t in tablets
        ]
        assert all(len(held[t.start]) == 1 + len(t.followers) for t in tablets)
        assert place(after, targets=servers) == []

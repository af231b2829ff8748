"""Planning rules (pure): balance, minimal movement, the threshold, draining, down servers."""

from __future__ import annotations

from master_app.services.plan import Move, TabletLoad, plan_table


def keys_of(tablets: dict[tuple[str, str | None], list[str]]):
    """A ``key_at`` over explicit sorted keys per tablet range."""

    def key_at(start: str, end: str | None, offset: int) -> str:
        return tablets[(start, end)][offset]

    return key_at


def numbered(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def plan(tablets, keys, targets=("a", "b"), movable=None, threshold=0.1, min_rows=1):
    return plan_table(
        "t",
        tablets,
        targets=list(targets),
        movable=list(movable or targets),
        key_at=keys_of(keys),
        threshold=threshold,
        min_rows=min_rows,
    )


def test_a_skewed_table_is_balanced_by_moving_exactly_the_excess():
    low, high = numbered("k", 100), numbered("m", 900)
    tablets = [TabletLoad("", "m", "a", 100), TabletLoad("m", None, "b", 900)]
    result = plan(tablets, {("", "m"): low, ("m", None): high})
    assert result.after == {"a": 500, "b": 500}
    assert result.moves == [Move("t", high[500], None, "b", "a", 400)]


def test_a_nearly_balanced_table_moves_nothing():
    tablets = [TabletLoad("", "m", "a", 480), TabletLoad("m", None, "b", 520)]
    result = plan(tablets, {})
    assert result.moves == [] and "balanced" in result.note


def test_min_rows_keeps_tiny_tables_still():
    tablets = [TabletLoad("", "m", "a", 1), TabletLoad("m", None, "b", 9)]
    result = plan(tablets, {}, min_rows=100)
    assert result.moves == [] and result.note.startswith("too little to move: 4 rows")


def test_a_new_server_gets_its_share_from_every_server_above_it():
    a, b = numbered("a", 600), numbered("b", 600)
    tablets = [TabletLoad("", "b", "a", 600), TabletLoad("b", None, "b", 600)]
    result = plan(tablets, {("", "b"): a, ("b", None): b}, targets=("a", "b", "c"))
    assert result.after == {"a": 400, "b": 400, "c": 400}
    assert sorted((m.source, m.target, m.rows) for m in result.moves) == [
        ("a", "c", 200),
        ("b", "c", 200),
    ]
    assert sum(m.rows for m in result.moves) == 400  # the minimum: the sum of the excesses


def test_a_draining_server_gives_away_everything_including_empty_tablets():
    b = numbered("b", 10)
    tablets = [
        TabletLoad("", "b", "a", 0),
        TabletLoad("b", "c", "b", 10),
        TabletLoad("c", None, "a", 0),
    ]
    result = plan(tablets, {("b", "c"): b}, targets=("b",), movable=("a", "b"))
    assert result.after == {"a": 0, "b": 10}
    assert {(m.start, m.end, m.target) for m in result.moves} == {("", "b", "b"), ("c", None, "b")}


def test_a_down_servers_tablets_are_left_alone():
    a = numbered("a", 10)
    tablets = [TabletLoad("", "b", "a", 10), TabletLoad("b", None, "down", 1000)]
    result = plan(tablets, {("", "b"): a}, targets=("a", "c"), movable=("a", "c"), min_rows=1)
    assert all(m.source != "down" for m in result.moves)
    assert result.after == {"a": 5, "c": 5}


def test_moves_split_a_tablet_at_row_boundaries_between_receivers():
    big = numbered("k", 900)
    tablets = [
        TabletLoad("", "k", "a", 0),
        TabletLoad("k", "z", "b", 900),
        TabletLoad("z", None, "c", 0),
    ]
    result = plan(tablets, {("k", "z"): big}, targets=("a", "b", "c"))
    assert result.after == {"a": 300, "b": 300, "c": 300}
    starts = sorted(m.start for m in result.moves)
    assert starts == [big[300], big[600]]
    assert {m.rows for m in result.moves} == {300}

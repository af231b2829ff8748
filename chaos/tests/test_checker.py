"""The history checkers, on hand-made histories and against a brute-force reference."""

from __future__ import annotations

import itertools
import random

import pytest

from chaos.checker import (
    UNKNOWN,
    Op,
    bound_unknown_writes,
    check_history,
    check_register,
    inserts_check,
    register_step,
)


def w(value, call, ret, client="c"):
    return Op("k", "write", call, ret, value=value, client=client)


def r(output, call, ret, client="c"):
    return Op("k", "read", call, ret, output=output, client=client)


def cas(expected, value, ok, call, ret, client="c"):
    return Op("k", "cas", call, ret, value=value, expected=expected, output=ok, client=client)


def d(call, ret, client="c"):
    return Op("k", "delete", call, ret, client=client)


def linearizable(ops):
    return check_register("k", ops).ok


# --- hand-made histories ----------------------------------------------------------------------


def test_an_empty_history_is_linearizable():
    assert linearizable([])


def test_a_read_of_a_never_written_key_sees_nothing():
    assert linearizable([r(None, 0, 1)])
    assert not linearizable([r(1, 0, 1)])


def test_sequential_write_then_read_of_the_same_value_is_linearizable():
    assert linearizable([w(1, 0, 1), r(1, 2, 3)])


def test_a_stale_read_after_a_completed_write_is_not_linearizable():
    assert not linearizable([w(1, 0, 1), w(2, 2, 3), r(1, 4, 5)])


def test_a_read_concurrent_with_a_write_may_see_either_value():
    assert linearizable([w(1, 0, 1), w(2, 2, 6), r(1, 3, 4)])
    assert linearizable([w(1, 0, 1), w(2, 2, 6), r(2, 3, 4)])


def test_once_a_read_saw_the_new_value_a_later_read_may_not_see_the_old_one():
    # The write is still in flight, but reads are ordered: new then old is impossible.
    assert not linearizable([w(1, 0, 1), w(2, 2, 10), r(2, 3, 4), r(1, 5, 6)])


def test_touching_operations_count_as_concurrent():
    # The read's call and the write's return share a timestamp: either order is allowed.
    assert linearizable([w(1, 0, 2), r(None, 2, 3)])


def test_a_write_with_an_unknown_outcome_may_have_happened():
    assert linearizable([w(1, 0, UNKNOWN), r(1, 5, 6)])


def test_a_write_with_an_unknown_outcome_may_never_have_happened():
    assert linearizable([w(1, 0, UNKNOWN), r(None, 5, 6)])


def test_a_write_with_an_unknown_outcome_cannot_flicker():
    # Seen, then unseen with nothing else written: it would have to happen twice.
    assert not linearizable([w(1, 0, UNKNOWN), r(1, 5, 6), r(None, 7, 8)])


def test_a_lost_acknowledged_write_is_caught():
    assert not linearizable([w(1, 0, 1), r(None, 2, 3)])


def test_delete_makes_the_key_absent():
    assert linearizable([w(1, 0, 1), d(2, 3), r(None, 4, 5)])
    assert not linearizable([w(1, 0, 1), d(2, 3), r(1, 4, 5)])


def test_compare_and_set_succeeds_only_on_the_expected_value():
    assert linearizable([w(1, 0, 1), cas(1, 2, True, 2, 3), r(2, 4, 5)])
    assert not linearizable([w(1, 0, 1), cas(3, 2, True, 2, 3)])
    assert linearizable([w(1, 0, 1), cas(3, 2, False, 2, 3), r(1, 4, 5)])
    assert not linearizable([w(1, 0, 1), cas(1, 2, False, 2, 3)])


def test_two_successful_cas_from_the_same_value_cannot_both_happen():
    ops = [w(0, 0, 1), cas(0, 1, True, 2, 5, "a"), cas(0, 2, True, 2, 5, "b")]
    assert not linearizable(ops)


def test_values_compare_as_json_whatever_the_key_order():
    assert linearizable([w({"a": 1, "b": 2}, 0, 1), r({"b": 2, "a": 1}, 2, 3)])


def test_the_verdict_names_the_longest_order_and_the_operations_stuck_after_it():
    ops = [w(1, 0, 1, "a"), w(2, 2, 3, "b"), r(1, 4, 5, "c")]
    ops = [Op(**{**op.__dict__, "id": i}) for i, op in enumerate(ops)]
    verdict = check_register("k", ops)
    assert verdict.ok is False
    assert [op.id for op in verdict.linearized_prefix] == [0, 1]
    assert [op.id for op in verdict.stuck] == [2]
    assert "NOT linearizable" in verdict.explain() and "read->1" in verdict.explain()


def test_a_search_over_its_budget_is_undecided_not_passed():
    ops = [w(i, 0, 100, f"c{i}") for i in range(12)] + [r(99, 101, 102)]
    assert check_register("k", ops, max_steps=50).ok is None
    assert not check_history(ops, max_steps_per_key=50).ok


def test_keys_are_checked_independently_and_anomalies_name_their_key():
    good = [Op("a", "write", 0, 1, value=1), Op("a", "read", 2, 3, output=1)]
    bad = [Op("b", "write", 0, 1, value=1), Op("b", "read", 2, 3, output=None)]
    verdict = check_history(good + bad)
    assert verdict.keys == 2 and verdict.ops == 4
    assert [v.key for v in verdict.anomalies] == ["b"]


def test_an_op_survives_the_json_lines_round_trip():
    op = Op("k", "cas", 1.5, UNKNOWN, value=2, expected=1, client="x", id=7)
    assert Op.from_dict(op.as_dict()) == op


def test_an_unknown_kind_is_an_error_not_a_pass():
    with pytest.raises(ValueError):
        register_step(None, Op("k", "increment", 0, 1))  # type: ignore[arg-type]


# --- against a brute-force reference ----------------------------------------------------------


def brute_force(ops: list[Op]) -> bool:
    """Definition-level check: some subset of the unknown ops (all known ones) has an order
    that respects real time and the register. Exponential: tiny histories only."""
    known = [op for op in ops if op.known]
    unknown = [op for op in ops if not op.known]
    for n in range(len(unknown) + 1):
        for chosen in itertools.combinations(unknown, n):
            for order in itertools.permutations(known + list(chosen)):
                if _respects_real_time(order) and _legal(order):
                    return True
    return False


def _respects_real_time(order) -> bool:
    return all(not (b.ret < a.call) for i, a in enumerate(order) for b in order[i + 1 :])


def _legal(order) -> bool:
    state = None
    for op in order:
        ok, state = register_step(state, op)
        if not ok:
            return False
    return True


def random_history(rng: random.Random, n: int) -> list[Op]:
    """Random ops with random intervals and outputs: mostly not linearizable."""
    ops = []
    for _ in range(n):
        call = rng.randint(0, 10)
        ret = UNKNOWN if rng.random() < 0.15 else call + rng.randint(0, 4)
        kind = rng.choice(["read", "write", "write", "delete", "cas"])
        value = rng.choice([1, 2, 3])
        output = {"read": rng.choice([None, 1, 2, 3]), "cas": rng.choice([True, False])}.get(kind)
        if kind == "read" and ret == UNKNOWN:
            ret = call + 1  # the recorder drops failed reads
        expected = rng.choice([None, 1, 2]) if kind == "cas" else None
        ops.append(Op("k", kind, call, ret, value=value, expected=expected, output=output))
    return ops


def simulated_history(rng: random.Random, n: int) -> list[Op]:
    """Ops run against a real register at random instants inside their intervals: always
    linearizable, with some outcomes hidden from the client."""
    planned = []
    for _ in range(n):
        call = rng.uniform(0, 10)
        ret = call + rng.uniform(0, 3)
        planned.append((rng.uniform(call, ret), call, ret, rng.choice(["read", "write", "cas"])))
    state, ops = None, []
    for _at, call, ret, kind in sorted(planned):
        value, expected = rng.choice([1, 2, 3]), rng.choice([None, 1, 2, 3])
        if kind == "read":
            ops.append(Op("k", "read", call, ret, output=state))
            continue
        if kind == "write":
            state = value
            output = None
        else:
            output = state == expected
            state = value if output else state
        hidden = rng.random() < 0.2
        op = Op("k", kind, call, UNKNOWN if hidden else ret, value=value, expected=expected)
        ops.append(Op(**{**op.__dict__, "output": None if hidden else output}))
    rng.shuffle(ops)
    return ops


@pytest.mark.parametrize("seed", range(300))
def test_it_agrees_with_brute_force_on_random_histories(seed):
    rng = random.Random(seed)
    ops = random_history(rng, rng.randint(1, 5))
    assert linearizable(ops) == brute_force(ops), ops


@pytest.mark.parametrize("seed", range(100))
def test_histories_of_a_real_register_are_linearizable(seed):
    rng = random.Random(1000 + seed)
    ops = simulated_history(rng, rng.randint(1, 40))
    assert linearizable(ops)


@pytest.mark.parametrize("seed", range(100))
def test_a_corrupted_read_in_a_real_history_agrees_with_brute_force(seed):
    rng = random.Random(5000 + seed)
    ops = simulated_history(rng, rng.randint(2, 6))
    reads = [i for i, op in enumerate(ops) if op.kind == "read"]
    if reads:
        i = rng.choice(reads)
        ops[i] = Op(**{**ops[i].__dict__, "output": rng.choice([None, 1, 2, 3, 4])})
    assert linearizable(ops) == brute_force(ops)


# --- acknowledged inserts ---------------------------------------------------------------------


def test_inserts_all_present_once_with_their_values_pass():
    verdict = inserts_check({"t1": 1, "t2": 2}, {"t1", "t2", "t3"}, [(10, "t1", 1), (11, "t2", 2)])
    assert verdict.ok and verdict.acked == 2


def test_an_unacknowledged_insert_may_or_may_not_be_there():
    assert inserts_check({}, {"t3"}, [(12, "t3", 3)]).ok
    assert inserts_check({}, {"t3"}, []).ok


def test_a_lost_duplicated_changed_or_phantom_insert_fails():
    verdict = inserts_check(
        {"lost": 1, "dup": 2, "changed": 3},
        {"lost", "dup", "changed"},
        [(1, "dup", 2), (2, "dup", 2), (3, "changed", 4), (4, "ghost", 5)],
    )
    assert verdict.lost == ["lost"]
    assert verdict.duplicated == {"dup": [1, 2]}
    assert verdict.wrong_value == {"changed": (3, 4)}
    assert verdict.phantom == ["ghost"]
    assert not verdict.ok


# --- bounding unknown outcomes (unique values) ------------------------------------------------


def unique_history(rng: random.Random, n: int) -> list[Op]:
    """Random ops whose writes each write a value of their own; reads see any value."""
    ops, next_value = [], iter(range(1, 1000))
    for _ in range(n):
        call = rng.randint(0, 10)
        ret = call + rng.randint(0, 4)
        kind = rng.choice(["read", "read", "write", "write", "delete"])
        if kind == "write":
            unknown = rng.random() < 0.4
            value = next(next_value)
            ops.append(Op("k", "write", call, UNKNOWN if unknown else ret, value=value))
        elif kind == "delete":
            ops.append(Op("k", "delete", call, UNKNOWN if rng.random() < 0.2 else ret))
        else:
            ops.append(Op("k", "read", call, ret, output=rng.choice([None, 1, 2, 3, 4, 5])))
    return ops


@pytest.mark.parametrize("seed", range(300))
def test_bounding_unknown_writes_never_changes_the_verdict(seed):
    rng = random.Random(9000 + seed)
    ops = unique_history(rng, rng.randint(1, 6))
    assert linearizable(bound_unknown_writes(ops)) == brute_force(ops), ops


def test_an_unobserved_unknown_write_is_dropped_and_an_observed_one_gets_a_return():
    ops = [w(1, 0, UNKNOWN), w(2, 0, UNKNOWN), r(2, 5, 6), r(2, 7, 9)]
    bounded = bound_unknown_writes(ops)
    assert [(op.value, op.ret) for op in bounded if op.kind == "write"] == [(2, 6)]


def test_without_unique_values_nothing_is_assumed():
    ops = [w(1, 0, UNKNOWN), w(1, 1, UNKNOWN), r(None, 5, 6)]
    assert bound_unknown_writes(ops) == ops


def test_a_long_history_with_many_unknown_writes_is_decided_quickly():
    rng = random.Random(5)
    ops, state, t = [], None, 0.0
    for i in range(3000):  # 6 clients, a third of writes time out; one true register
        t += rng.uniform(0.001, 0.01)
        if rng.random() < 0.5:
            state = i
            ret = UNKNOWN if rng.random() < 0.3 else t + 0.005
            ops.append(Op("k", "write", t, ret, value=i))
        else:
            ops.append(Op("k", "read", t, t + 0.005, output=state))
    verdict = check_history(ops, unique_values=True, max_steps_per_key=200_000)
    assert verdict.ok and not verdict.undecided

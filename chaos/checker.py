"""Checkers for the histories the fault harness records.

**Linearizability of per-key registers.** Each key of the register workload is one
register (absent = ``None``) that clients read, write, delete and compare-and-set through
the public API. A history is linearizable when every operation can be placed at one
instant between its call and its return so that, in that order, each read sees the last
value written. Keys are independent objects (linearizability is compositional), so each
key's history is checked on its own — the "P-compositionality" of Horn & Kroening.

The search is Wing & Gong's, with Lowe's memoisation, the algorithm Knossos and porcupine
implement (written here from the papers; no maintained Python package exists):

* the history becomes a list of call and return events in time order (at equal times calls
  come first: touching operations are treated as concurrent, never as ordered);
* walk the list: at a call, try to linearize that operation now (the model accepts it
  from the current state, and this set of linearized operations with this state was not
  tried before); if so, take both of its events out of the list and start again from the
  head; if not, look at the next event;
* reaching a return means the operation it belongs to had to be linearized already:
  backtrack to the last choice and try the event after it;
* the list empties: linearizable. Nothing left to backtrack: not linearizable.

An operation whose outcome the client never learned (a timeout, a connection cut after
the request was sent) may have taken effect at any time after its call, or never: its
return is at +infinity, so it can be placed last, where it is invisible. Reads that failed
tell nothing and are left out by the recorder; so are writes refused with a definite error.

**Acknowledged-write accounting** (``inserts_check``): every acknowledged insert is in the
final table exactly once with its last acknowledged value, and no insert appears twice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

OpKind = Literal["read", "write", "delete", "cas"]
UNKNOWN = math.inf  # the return time of an operation whose outcome is unknown


@dataclass(frozen=True)
class Op:
    """One client operation on one register.

    ``value``: what a write or a cas writes; ``expected``: what a cas compares with;
    ``output``: what a read returned (``None``: the row was absent) or whether a cas
    succeeded. ``ret`` is ``UNKNOWN`` when the client never learned the outcome.
    """

    key: str
    kind: OpKind
    call: float
    ret: float
    value: Any = None
    expected: Any = None
    output: Any = None
    client: str = ""
    id: int = -1

    @property
    def known(self) -> bool:
        return self.ret != UNKNOWN

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("id", "client", "key", "kind", "call")}
        d["ret"] = None if not self.known else self.ret
        for k in ("value", "expected", "output"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Op:
        ret = d.get("ret")
        return cls(
            key=d["key"],
            kind=d["kind"],
            call=d["call"],
            ret=UNKNOWN if ret is None else ret,
            value=d.get("value"),
            expected=d.get("expected"),
            output=d.get("output"),
            client=d.get("client", ""),
            id=d.get("id", -1),
        )


def _canon(value: Any) -> bytes | None:
    """A hashable, order-independent image of a JSON value (model states are compared)."""
    return None if value is None else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def register_step(state: bytes | None, op: Op) -> tuple[bool, bytes | None]:
    """The sequential register: can ``op`` happen in ``state``, and what state follows."""
    if op.kind == "write":
        return True, _canon(op.value)
    if op.kind == "delete":
        return True, None
    if op.kind == "read":
        return _canon(op.output) == state, state
    if op.kind == "cas":
        matches = state == _canon(op.expected)
        if not op.known:  # it either happened (if it could) or it did not: both are fine
            return True, _canon(op.value) if matches else state
        if op.output:
            return matches, _canon(op.value) if matches else state
        return not matches, state
    raise ValueError(f"unknown operation kind {op.kind!r}")


@dataclass
class KeyVerdict:
    """The verdict on one key's history; when not linearizable, the furthest it got."""

    key: str
    ok: bool | None  # None: gave up (step budget spent)
    ops: int
    linearized_prefix: list[Op] = field(default_factory=list)
    stuck: list[Op] = field(default_factory=list)  # the operations that could not be placed

    def explain(self) -> str:
        if self.ok:
            return f"{self.key}: linearizable ({self.ops} ops)"
        if self.ok is None:
            return f"{self.key}: undecided (search budget spent on {self.ops} ops)"
        prefix = " -> ".join(_show(op) for op in self.linearized_prefix[-8:])
        stuck = "; ".join(_show(op) for op in self.stuck[:8])
        return (
            f"{self.key}: NOT linearizable ({self.ops} ops). Longest valid order ends "
            f"[... {prefix}]; then none of these fits: {stuck}"
        )


def _show(op: Op) -> str:
    ret = f"{op.ret:.3f}" if op.known else "?"
    what = {
        "read": f"read->{op.output!r}",
        "write": f"write {op.value!r}",
        "delete": "delete",
        "cas": f"cas {op.expected!r}->{op.value!r}={op.output!r}",
    }[op.kind]
    return f"#{op.id} {op.client} {what} [{op.call:.3f},{ret}]"


def check_register(key: str, ops: list[Op], *, max_steps: int = 2_000_000) -> KeyVerdict:
    """Wing & Gong / Lowe search over one register's history (see the module docstring)."""
    n = len(ops)
    if n == 0:
        return KeyVerdict(key, True, 0)
    # Events: (time, kind 0 = call / 1 = return, op index); calls first at equal times.
    events = sorted(
        [(op.call, 0, i) for i, op in enumerate(ops)] + [(op.ret, 1, i) for i, op in enumerate(ops)]
    )
    # A doubly linked list over event slots 1..2n, slot 0 the head; -1 ends it.
    size = 2 * n + 1
    nxt, prv = [-1] * size, [-1] * size
    is_call, op_of, match = [False] * size, [0] * size, [0] * size
    slot_of_return = {}
    for slot, (_, kind, i) in enumerate(events, start=1):
        is_call[slot], op_of[slot] = kind == 0, i
        if kind == 1:
            slot_of_return[i] = slot
    for slot in range(1, size):
        if is_call[slot]:
            match[slot] = slot_of_return[op_of[slot]]
    for slot in range(size):
        nxt[slot] = slot + 1 if slot + 1 < size else -1
        prv[slot] = slot - 1

    def lift(call: int) -> None:
        for s in (call, match[call]):
            nxt[prv[s]] = nxt[s]
            if nxt[s] != -1:
                prv[nxt[s]] = prv[s]

    def unlift(call: int) -> None:
        for s in (match[call], call):
            nxt[prv[s]] = s
            if nxt[s] != -1:
                prv[nxt[s]] = s

    state: bytes | None = None
    linearized = 0
    seen: set[tuple[int, bytes | None]] = set()
    stack: list[tuple[int, bytes | None]] = []  # (call slot, state before it)
    best: list[int] = []  # op indices of the longest linearized order seen
    best_stuck: list[int] = []
    slot = nxt[0]
    steps = 0
    while nxt[0] != -1:
        steps += 1
        if steps > max_steps:
            return KeyVerdict(key, None, n)
        if is_call[slot]:
            ok, after = register_step(state, ops[op_of[slot]])
            bits = linearized | (1 << op_of[slot])
            if ok and (bits, after) not in seen:
                seen.add((bits, after))
                stack.append((slot, state))
                state, linearized = after, bits
                lift(slot)
                slot = nxt[0]
            else:
                slot = nxt[slot]
            continue
        # A return whose operation is not linearized yet: this order cannot work.
        if len(stack) >= len(best):
            best = [op_of[s] for s, _ in stack]
            best_stuck = _pending_calls(nxt, is_call, op_of, slot)
        if not stack:
            return _refuted(key, ops, best, best_stuck)
        slot, state = stack.pop()
        linearized &= ~(1 << op_of[slot])
        unlift(slot)
        slot = nxt[slot]
    return KeyVerdict(key, True, n)


def _pending_calls(nxt: list[int], is_call: list[bool], op_of: list[int], upto: int) -> list[int]:
    """The operations called (and not linearized) before the return at ``upto``."""
    out, s = [], nxt[0]
    while s != -1 and s != upto:
        if is_call[s]:
            out.append(op_of[s])
        s = nxt[s]
    out.append(op_of[upto])
    return out


def _refuted(key: str, ops: list[Op], best: list[int], stuck: list[int]) -> KeyVerdict:
    """``best``: the longest order found (op indices); ``stuck``: what could not follow it."""
    prefix = [ops[i] for i in best]
    return KeyVerdict(key, False, len(ops), prefix, [ops[i] for i in dict.fromkeys(stuck)])


@dataclass
class HistoryVerdict:
    keys: int
    ops: int
    anomalies: list[KeyVerdict]
    undecided: list[KeyVerdict]

    @property
    def ok(self) -> bool:
        return not self.anomalies and not self.undecided


def bound_unknown_writes(ops: list[Op]) -> list[Op]:
    """Shrink the search when every write wrote a value of its own (the harness's do).

    An operation with an unknown outcome stays a candidate at every step of the search
    (its return is +inf), and a few dozen of them make the search blow up. With unique
    values two facts remove them without changing the verdict:

    * a write whose value some read returned must be linearized before that read
      returned: its return becomes the earliest return of a read that saw it;
    * a write whose value no read returned can always be left out: in any valid order
      no read directly follows it (that read would have returned its value), so
      dropping it leaves every read where it was.
    """
    if any(op.kind == "cas" for op in ops):
        return ops  # a cas reads and writes: the reasoning below covers reads and writes only
    writes = [op for op in ops if op.kind == "write"]
    values = [_canon(op.value) for op in writes]
    if len(set(values)) != len(values):
        return ops  # not unique: nothing to assume
    seen_by: dict[bytes | None, float] = {}
    for op in ops:
        if op.kind == "read" and op.known:
            value = _canon(op.output)
            seen_by[value] = min(seen_by.get(value, UNKNOWN), op.ret)
    out = []
    for op in ops:
        if op.kind == "write" and not op.known:
            seen = seen_by.get(_canon(op.value))
            if seen is None:
                continue
            op = replace(op, ret=max(seen, op.call))
        out.append(op)
    return out


def check_history(
    ops: Iterable[Op], *, max_steps_per_key: int = 50_000_000, unique_values: bool = False
) -> HistoryVerdict:
    """Check every key's register history; the verdict lists the keys that fail.

    ``unique_values``: every write wrote a value no other write did, so unknown
    outcomes can be bounded first (``bound_unknown_writes``).
    """
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    anomalies, undecided, total = [], [], 0
    for key in sorted(by_key):
        key_ops = bound_unknown_writes(by_key[key]) if unique_values else by_key[key]
        verdict = check_register(key, key_ops, max_steps=max_steps_per_key)
        total += verdict.ops
        if verdict.ok is None:
            undecided.append(verdict)
        elif not verdict.ok:
            anomalies.append(verdict)
    return HistoryVerdict(len(by_key), total, anomalies, undecided)


# --- acknowledged inserts ---------------------------------------------------------------------


@dataclass
class InsertsVerdict:
    acked: int
    lost: list[str]  # tokens of acknowledged inserts not found
    duplicated: dict[str, list[Any]]  # token -> the keys it appears under (more than one)
    wrong_value: dict[str, tuple[Any, Any]]  # token -> (expected, found)
    phantom: list[str]  # tokens found that no client ever tried to insert

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.wrong_value or self.phantom)


def inserts_check(
    acked: dict[str, Any],
    attempted: set[str],
    found: Iterable[tuple[Any, str, Any]],
) -> InsertsVerdict:
    """Account for inserts identified by a unique token written in a cell.

    ``acked``: token -> the value the client was told is stored; ``attempted``: every
    token any client sent (acknowledged or not: an unacknowledged one may or may not be
    there); ``found``: (row key, token, value) of every row in the final table.
    """
    where: dict[str, list[Any]] = defaultdict(list)
    values: dict[str, Any] = {}
    phantom = []
    for key, token, value in found:
        if token not in attempted:
            phantom.append(token)
        where[token].append(key)
        values[token] = value
    lost = sorted(t for t in acked if t not in where)
    duplicated = {t: keys for t, keys in where.items() if len(keys) > 1}
    wrong = {
        t: (v, values[t])
        for t, v in acked.items()
        if t in values and _canon(values[t]) != _canon(v)
    }
    return InsertsVerdict(len(acked), lost, duplicated, wrong, sorted(phantom))

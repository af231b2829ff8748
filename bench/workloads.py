"""The YCSB-style workloads, written once against the transport interface (``transports``).

| name | operations | keys |
|---|---|---|
| load | insert ``batch_rows`` new rows per request (``rows:batch``) | sequential |
| a | 50% read / 50% update (one field) | scrambled zipfian |
| b | 95% read / 5% update | scrambled zipfian |
| c | 100% read | scrambled zipfian |
| e | 95% scan of 1..100 rows / 5% insert | scrambled zipfian start, new keys |
| batch_read | read 100 distinct keys per request | uniform |

Keys are integers handed out by one ``KeySpace`` for the whole run: inserts always take
new, increasing keys (so they all land on the table's last tablet, which the rebalance
workload relies on) and reads only choose keys whose insert succeeded.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.generators import ScrambledZipfian, Values
from bench.runner import Operation, Outcome, run_count, run_for
from bench.stats import Recorder, summarize, summarize_by_op

BATCH_READ_KEYS = 100
SCAN_MAX_ROWS = 100


class Mix:
    """A weighted choice among named operations: ``Mix(read=0.95, update=0.05)``.

    Weights are relative (they need not sum to 1) and an operation of weight 0 is never
    picked. One uniform draw picks one operation, as ``random.Random.choices`` does, so a
    seeded run picks the same operations with either. Also used by the fault harness's
    workload (``chaos``).
    """

    def __init__(self, **weights: float) -> None:
        self.weights = {name: w for name, w in weights.items() if w}
        self._names = list(self.weights)
        self._cumulative = list(itertools.accumulate(self.weights.values()))

    def __repr__(self) -> str:
        return f"Mix({', '.join(f'{n}={w}' for n, w in self.weights.items())})"

    def pick(self, u: float) -> str:
        """The operation for a uniform draw ``u`` in [0, 1)."""
        # hi: ``u`` within rounding of 1 picks the last operation of the mix.
        at = bisect.bisect(self._cumulative, u * self._cumulative[-1], 0, len(self._names) - 1)
        return self._names[at]

    def chooser(self, rng: random.Random) -> Callable[[], str]:
        """A function that picks one operation per call, drawing from ``rng``."""
        return lambda: self.pick(rng.random())


MIXES: dict[str, Mix] = {
    "a": Mix(read=0.5, update=0.5),
    "b": Mix(read=0.95, update=0.05),
    "c": Mix(read=1.0),
    "e": Mix(scan=0.95, insert=0.05),
    "batch_read": Mix(read_many=1.0),
}
DESCRIPTIONS = {
    "load": "bulk insert, 100 rows of 10 x 100 B per rows:batch request",
    "a": "50% read / 50% update, scrambled zipfian",
    "b": "95% read / 5% update, scrambled zipfian",
    "c": "100% read, scrambled zipfian",
    "e": "95% scan (1-100 rows) / 5% insert",
    "batch_read": "read 100 uniform keys per request",
}


@dataclass
class KeySpace:
    """The integer keys of the run: ``next_key`` is the first never handed out; ``missing``
    holds keys whose insert failed or timed out (their row may or may not exist).

    A workload reads keys below ``next_key`` as it was when the workload started (inserts
    still in flight are above it) and never one in ``missing``: reading a key whose insert
    failed would count the load's failure a second time, as a read error.
    """

    next_key: int = 0
    missing: set[int] = field(default_factory=set)

    def take(self, n: int) -> list[int]:
        first = self.next_key
        self.next_key += n
        return list(range(first, first + n))

    def forget(self, keys: list[int]) -> None:
        self.missing.update(keys)

    def present(self, draw: Callable[[], int], tries: int = 100) -> int:
        """The first key ``draw`` gives that is not missing (or the last, after ``tries``)."""
        key = draw()
        for _ in range(tries):
            if key not in self.missing:
                break
            key = draw()
        return key


def load_operation(transport, keys: KeySpace, values: Values, rows: int, batch: int) -> Operation:
    """Each call inserts the next ``batch`` (fewer at the end) of ``rows`` new rows."""
    left = rows

    async def op(worker: int) -> Outcome:
        nonlocal left
        n = min(batch, left)
        left -= n
        chunk = [(k, values.row()) for k in keys.take(n)]
        error, done = await transport.insert(chunk)
        if error:
            keys.forget([k for k, _ in chunk])  # which rows failed is not said: all suspect
        return "insert_batch", done, error

    return op


def mix_operation(transport, mix: Mix, keys: KeySpace, values: Values, seed: int) -> Operation:
    """Each call draws one operation of ``mix`` and its key(s)."""
    rng = random.Random(seed)
    records = max(keys.next_key, 1)
    hot = ScrambledZipfian(records, rng=rng)  # YCSB's "zipfian" key chooser, scans included

    def batch() -> list[int]:
        wanted = min(BATCH_READ_KEYS, records)
        spare = min(len(keys.missing), records - wanted)
        drawn = rng.sample(range(records), wanted + spare)
        return [k for k in drawn if k not in keys.missing][:wanted]

    async def op(worker: int) -> Outcome:
        kind = mix.pick(rng.random())
        if kind == "read":
            error, rows = await transport.read(keys.present(hot.next))
        elif kind == "update":
            error, rows = await transport.update(keys.present(hot.next), *values.field())
        elif kind == "scan":
            error, rows = await transport.scan(hot.next(), rng.randint(1, SCAN_MAX_ROWS))
        elif kind == "insert":
            key = keys.take(1)[0]
            error, rows = await transport.insert([(key, values.row())])
            if error:
                keys.forget([key])
        else:
            error, rows = await transport.read_many(batch())
        return kind, rows, error

    return op


async def warm_up(transport, concurrency: int) -> None:
    """Open the pooled connections (and fill the client servers' routing caches) before a
    phase that has no warm-up window of its own: the load phase counts every request."""
    await asyncio.gather(*(transport.read_many([0]) for _ in range(2 * concurrency)))


def result(rec: Recorder, window_s: float) -> dict:
    """A workload's entry in the results: the summary, per-operation summaries, context."""
    return {**summarize(rec.samples, window_s), "by_op": summarize_by_op(rec.samples, window_s)}


async def run_load(
    transport, keys: KeySpace, values: Values, *, rows: int, batch: int, concurrency: int
) -> dict:
    """Insert ``rows`` new rows; on success they become readable keys for the next workloads."""
    requests = -(-rows // batch)
    rec, window = await run_count(
        load_operation(transport, keys, values, rows, batch),
        concurrency=concurrency,
        count=requests,
    )
    out = result(rec, window)
    return {**out, "batch_rows": batch, "concurrency": concurrency}


async def run_mix(
    transport,
    name: str,
    keys: KeySpace,
    values: Values,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    seed: int,
) -> dict:
    """Run workload ``name`` (a key of ``MIXES``) for ``duration_s`` after ``warmup_s``."""
    op = mix_operation(transport, MIXES[name], keys, values, seed)
    rec, window = await run_for(
        op, concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s
    )
    return {**result(rec, window), "concurrency": concurrency}

"""The closed-loop load driver: N concurrent workers, each sending its next operation as soon
as the previous one answered (YCSB's model), for a duration or a number of operations.

An operation is an async callable returning ``(op_name, rows, error_kind_or_None)``; the
driver times it and records it. An exception is recorded as an error named after its class,
never raised: a benchmark reports failures, it does not stop at the first one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from bench.stats import Recorder

Outcome = tuple[str, int, str | None]
Operation = Callable[[int], Awaitable[Outcome]]  # called with the worker's index


async def _timed(op: Operation, worker: int) -> tuple[float, float, Outcome]:
    start = time.perf_counter()
    try:
        outcome = await op(worker)
    except Exception as exc:  # any failure is a data point, not the end of the run
        outcome = ("error", 0, f"exception:{type(exc).__name__}")
    return start, time.perf_counter() - start, outcome


async def run_for(
    op: Operation,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.0,
) -> tuple[Recorder, float]:
    """Run ``op`` on ``concurrency`` workers; record what starts after the warm-up.

    The warm-up opens the pooled connections and warms the servers' caches, so that the
    measurement sees steady state. Returns the recorder and the measured window (s).
    """
    begin = time.perf_counter()
    measure_from = begin + warmup_s
    stop_at = measure_from + duration_s
    rec = Recorder(origin=measure_from)

    async def worker(i: int) -> None:
        while time.perf_counter() < stop_at:
            start, latency, (name, rows, error) = await _timed(op, i)
            if start >= measure_from:
                rec.record(name, start, latency, rows, error)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    # Operations started before stop_at finish after it: the window is until the last one.
    return rec, max(time.perf_counter(), stop_at) - measure_from


async def run_count(op: Operation, *, concurrency: int, count: int) -> tuple[Recorder, float]:
    """Run exactly ``count`` operations over ``concurrency`` workers (the load phase)."""
    begin = time.perf_counter()
    rec = Recorder(origin=begin)
    remaining = count

    async def worker(i: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1  # no await between the test and the decrement: no race
            start, latency, (name, rows, error) = await _timed(op, i)
            rec.record(name, start, latency, rows, error)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return rec, time.perf_counter() - begin


async def run_until(
    op: Operation, *, concurrency: int, stop: asyncio.Event, recorder: Recorder
) -> None:
    """Run ``op`` on ``concurrency`` workers until ``stop`` is set (the rebalance run, whose
    length is the rebalance's own)."""

    async def worker(i: int) -> None:
        while not stop.is_set():
            start, latency, (name, rows, error) = await _timed(op, i)
            recorder.record(name, start, latency, rows, error)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))

"""Latency samples and their summaries: percentiles, throughput, errors, time series (pure).

A ``Recorder`` keeps one sample per operation (start time, latency, rows, error kind)
so that the same data yields whole-run summaries, per-operation summaries, per-phase
summaries (rebalance: before / during / after) and a time series for the plots.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, linearly interpolated (numpy's default).

    NaN for no values: a summary of nothing must not look like a fast run.
    """
    if not 0 <= q <= 100:
        raise ValueError("q must be in [0, 100]")
    n = len(sorted_values)
    if n == 0:
        return math.nan
    if n == 1:
        return float(sorted_values[0])
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


@dataclass(slots=True)
class Sample:
    op: str
    start: float  # seconds since the recorder's origin
    latency: float  # seconds
    rows: int
    error: str | None  # an error kind ("http_503", "row:range_frozen", ...) or None


@dataclass
class Recorder:
    """Samples of one run; ``origin`` is the monotonic time all ``start`` values count from."""

    origin: float
    samples: list[Sample] = field(default_factory=list)

    def record(self, op: str, start: float, latency: float, rows: int, error: str | None) -> None:
        self.samples.append(Sample(op, start - self.origin, latency, rows, error))

    def between(self, t0: float, t1: float) -> list[Sample]:
        """Samples that started in [t0, t1) (seconds since origin)."""
        return [s for s in self.samples if t0 <= s.start < t1]


def summarize(samples: Iterable[Sample], duration_s: float) -> dict:
    """Throughput, latency percentiles (ms) and errors of a set of samples over a window.

    Latency percentiles cover every completed operation, failed or not (a fast failure
    still made a user wait); ``errors`` says how many failed and ``error_kinds`` why.
    """
    samples = list(samples)
    latencies = sorted(s.latency * 1000.0 for s in samples)
    errors = Counter(s.error for s in samples if s.error is not None)
    rows = sum(s.rows for s in samples if s.error is None)
    ops = len(samples)
    rate = (lambda x: x / duration_s) if duration_s > 0 else (lambda x: math.nan)
    return {
        "ops": ops,
        "duration_s": round(duration_s, 3),
        "ops_per_s": rate(ops),
        "rows": rows,
        "rows_per_s": rate(rows),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": sum(latencies) / ops if ops else math.nan,
        "max_ms": latencies[-1] if latencies else math.nan,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common()),
    }


def summarize_by_op(samples: Iterable[Sample], duration_s: float) -> dict[str, dict]:
    """``summarize`` per operation name (read / update / scan / insert...)."""
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.op, []).append(s)
    return {op: summarize(group, duration_s) for op, group in sorted(groups.items())}


def timeseries(samples: Iterable[Sample], bucket_s: float, t0: float, t1: float) -> list[dict]:
    """Per bucket of ``bucket_s`` seconds (by start time): throughput, p50/p99 and errors.

    Buckets with no completed operation still appear (ops 0, latencies NaN): a stall is
    exactly what the rebalance plot must show.
    """
    if bucket_s <= 0:
        raise ValueError("bucket_s must be positive")
    count = max(1, math.ceil((t1 - t0) / bucket_s))
    buckets: list[list[Sample]] = [[] for _ in range(count)]
    for s in samples:
        i = int((s.start - t0) // bucket_s)
        if 0 <= i < count:
            buckets[i].append(s)
    out = []
    for i, group in enumerate(buckets):
        latencies = sorted(s.latency * 1000.0 for s in group)
        out.append(
            {
                "t_s": round(t0 + i * bucket_s, 3),
                "ops_per_s": len(group) / bucket_s,
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
                "max_ms": latencies[-1] if latencies else math.nan,
                "errors": sum(1 for s in group if s.error is not None),
            }
        )
    return out


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing, NaN or the denominator is 0."""
    if numerator is None or denominator is None:
        return None
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return None
    return numerator / denominator

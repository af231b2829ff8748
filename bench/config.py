"""Benchmark settings: two presets (``full`` for ``make bench``, ``quick`` for
``make bench-quick``, which must finish in under 3 minutes on the 2-core machine) and the
command-line overrides. The quick preset runs the same workloads, only smaller and shorter.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

E2E_WORKLOADS = ["a", "b", "c", "e", "batch_read"]
# The HTTP servers measured for the tablet and client roles; the first is the primary (what
# ``make run`` uses): it alone also gets the one-hop baselines, the profile and the rebalance.
SERVERS = ["uvicorn", "daphne", "granian", "hypercorn"]


@dataclass(frozen=True)
class BenchConfig:
    preset: str
    rows: int  # rows of the load phase (~1 KB each)
    concurrency: int  # workers of every cluster workload (closed loop)
    duration_s: float  # measured seconds per workload
    warmup_s: float  # unrecorded seconds before each workload
    onehop_load_rows: int  # rows the one-hop load baseline inserts (after the e2e load)
    storage_duration_s: float
    rebalance_before_s: float
    rebalance_after_s: float
    rebalance_bucket_s: float  # time-series resolution of the rebalance plot
    batch_rows: int = 100
    fields: int = 10
    field_bytes: int = 100
    workloads: list[str] = field(default_factory=lambda: list(E2E_WORKLOADS))
    onehop_workloads: list[str] = field(default_factory=lambda: ["load", *E2E_WORKLOADS])
    storage_workloads: list[str] = field(default_factory=lambda: list(E2E_WORKLOADS))
    rebalance: bool = True
    rebalance_min_move: float = 0.3  # share of the rows the rebalance must move
    rebalance_timeout_s: float = 900.0
    seed: int = 42
    profile: bool = False
    servers: list[str] = field(default_factory=lambda: list(SERVERS))
    candidate_rows: int = 0  # rows loaded for a non-primary server (0: as many as ``rows``)
    candidate_duration_s: float = 0.0  # its seconds per workload (0: ``duration_s``)
    client_workers: int = 1  # worker processes per client server
    link_in_server: bool = True  # tablet links inside the tablet servers (where lifespan)
    baselines: bool = True  # the peer and ceiling baselines
    # Replication (issue #10, ``bench.replication``): its own 3-tablet cluster, last.
    replication: bool = True
    replication_only: bool = False  # skip everything else (``--replication-only``)
    replication_rows: int = 40_000  # rows the load inserts per table and round (~5-15 s)
    replication_duration_s: float = 8.0  # workload A per table and round
    replication_rounds: int = 2  # rf1/rf2 then rf2/rf1 ...: drift hits both alike
    failover_writers: int = 4  # concurrent single-row writers during the failover
    failover_before_s: float = 5.0  # steady writes before the kill
    failover_after_s: float = 10.0  # at least this long after the kill
    failover_timeout_s: float = 120.0  # give up waiting for the promotion / rf restored
    # Per-request metrics' cost (issue #11, ``bench.metrics_cost``): two clusters, on/off.
    metrics_cost: bool = True
    metrics_cost_rows: int = 10_000
    metrics_cost_rounds: int = 6  # slices per cluster, alternating order
    metrics_cost_slice_s: float = 8.0


PRESETS = {
    "full": BenchConfig(
        preset="full",
        rows=100_000,
        concurrency=16,
        duration_s=30.0,
        warmup_s=2.0,
        onehop_load_rows=50_000,
        storage_duration_s=10.0,
        rebalance_before_s=15.0,
        rebalance_after_s=15.0,
        rebalance_bucket_s=1.0,
        candidate_rows=20_000,
        candidate_duration_s=10.0,
    ),
    "quick": BenchConfig(
        preset="quick",
        rows=5_000,
        concurrency=8,
        duration_s=3.0,
        warmup_s=0.5,
        onehop_load_rows=2_000,
        storage_duration_s=1.0,
        rebalance_before_s=3.0,
        rebalance_after_s=3.0,
        rebalance_bucket_s=0.25,
        rebalance_timeout_s=60.0,
        replication=False,  # its own cluster: ~1.5 min more (``--replication`` adds it)
        metrics_cost=False,  # two clusters of its own (``--metrics-cost`` adds it)
        metrics_cost_rows=2_000,
        metrics_cost_rounds=2,
        metrics_cost_slice_s=3.0,
        replication_rows=2_000,
        replication_duration_s=3.0,
        replication_rounds=2,
        failover_before_s=2.0,
        failover_after_s=5.0,
        failover_timeout_s=60.0,
    ),
}


def configure(preset: str, **overrides) -> BenchConfig:
    """A preset with the overrides that were given (None means "keep the preset's")."""
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})

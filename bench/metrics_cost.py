"""What per-request metrics cost (issue #11's goal: at most 5 % of throughput).

Every request through a role's edge (``distdb.ops_http``) counts itself and observes its
latency in a histogram; in multi-process mode each is an mmap write. The cost is
measured as an A/B of whole clusters: two clusters of the primary server, alike but for
``DISTDB_REQUEST_METRICS`` (on / off), are up at once, loaded with the same rows, and
short slices of point reads (workload C, through the public API: a client server's and
a tablet server's edge per read) rotate between them, in reverse order every other
round, so that drift in the machine's load hits both alike (``bench.interleave``).

The result: mean ops/s of each, their ratio (on / off) and the cost in percent, each
slice's (ops/s, p50, p99). A ratio, never a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import cluster as cl
from bench.config import BenchConfig
from bench.interleave import drive

WORKLOAD = "c"
Say = Callable[[str], None]


def run_metrics_cost(cfg: BenchConfig, out_dir: Path, say: Say) -> dict[str, Any]:
    server = cfg.servers[0]
    clusters: dict[str, cl.Cluster] = {}
    dirs: list[Path] = []
    try:
        for name, flag in (("on", "1"), ("off", "0")):
            data_dir = Path(tempfile.mkdtemp(prefix=f"distdb-bench-metrics-{name}-"))
            dirs.append(data_dir)
            clusters[name] = cl.start_cluster(
                data_dir,
                out_dir / "logs" / f"metrics-{name}",
                server=server,
                client_workers=cfg.client_workers,
                link_in_server=cfg.link_in_server,
                env={"DISTDB_REQUEST_METRICS": flag},
            )
            say(f"metrics cost: cluster with request metrics {name} is up")
        args = argparse.Namespace(
            concurrency=cfg.concurrency,
            rows=cfg.metrics_cost_rows,
            seed=cfg.seed,
            rounds=cfg.metrics_cost_rounds,
            workload=WORKLOAD,
            slice=cfg.metrics_cost_slice_s,
        )
        measured = asyncio.run(drive(clusters, args))
    finally:
        cl.stop_clusters(clusters.values(), dirs)
    return metrics_cost_summary(measured, server, args)


def metrics_cost_summary(
    measured: dict[str, Any], server: str, args: argparse.Namespace
) -> dict[str, Any]:
    on, off = measured["on"]["mean_ops_per_s"], measured["off"]["mean_ops_per_s"]
    ratio = on / off if off else None
    return {
        "server": server,
        "workload": args.workload,
        "rounds": args.rounds,
        "slice_s": args.slice,
        "rows": args.rows,
        "concurrency": args.concurrency,
        "on": measured["on"],
        "off": measured["off"],
        "ratio_on_off": None if ratio is None else round(ratio, 3),
        "cost_pct": None if ratio is None else round((1 - ratio) * 100, 1),
    }


MAX_COST_PCT = 5.0  # issue #11: metrics may cost at most 5 % of throughput


def metrics_cost_ratios(mc: dict | None) -> dict[str, float | None]:
    """``metrics_on_vs_off``: point-read throughput with request metrics / without."""
    if not mc or mc.get("error"):
        return {}
    return {"metrics_on_vs_off": mc.get("ratio_on_off")}


def metrics_cost_targets(mc: dict | None) -> dict[str, dict]:
    """``metrics_cost``: the throughput lost to request metrics, in percent, <= 5."""
    if not mc:
        return {}
    rule = f"throughput lost to per-request metrics <= {MAX_COST_PCT:g} %"
    if mc.get("error"):
        return {"metrics_cost": {"value": None, "status": "unknown", "rule": rule,
                                 "reason": mc["error"][:200]}}  # fmt: skip
    cost = mc.get("cost_pct")
    status = "unknown" if cost is None else ("met" if cost <= MAX_COST_PCT else "missed")
    return {"metrics_cost": {"value": cost, "status": status, "rule": rule}}


def metrics_cost_section(mc: dict | None) -> list[str]:
    """The report's "Metrics cost" section (Markdown lines); empty when not run."""
    if not mc:
        return []
    out = ["", "## Per-request metrics: what they cost", ""]
    if mc.get("error"):
        return [*out, f"Not measured: {mc['error']}"]
    out += [
        f"Two {mc['server']} clusters up at once, alike but for `DISTDB_REQUEST_METRICS`; "
        f"{mc['rows']:,} rows each; workload {mc['workload'].upper()} (point reads) at "
        f"concurrency {mc['concurrency']}, {mc['rounds']} slices of {mc['slice_s']:g} s "
        "each, alternating order (`bench.metrics_cost`).",
        "",
        "| request metrics | mean ops/s | slices fastest | slices (ops/s · p50 · p99 ms) |",
        "|---|---|---|---|",
    ]
    for name in ("on", "off"):
        r = mc[name]
        cells = "; ".join(f"{o:,.0f} · {p50:.1f} · {p99:.1f}" for o, p50, p99 in r["slices"])
        out.append(f"| {name} | {r['mean_ops_per_s']:,.0f} | {r['rounds_fastest']} | {cells} |")
    out += ["", f"On / off: **{mc['ratio_on_off']}**, a cost of **{mc['cost_pct']} %**."]
    return out

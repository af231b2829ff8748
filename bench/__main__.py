"""``python -m bench``: run the benchmark and write ``bench/results/<run id>.json`` + report.

Order of a run, chosen so that each measurement has the machine to itself:

1. the storage-alone baseline, before any cluster process exists;
2. the peer (single-node Django + DRF) and ceiling (trivial asyncio server) baselines
   (``bench.external``), each alone;
3. per HTTP server candidate (``--servers``; the first is the primary, what ``make run``
   uses), a fresh cluster (``bench.cluster``) served by it, and a new table;
4. the load phase end to end, then (primary only) the one-hop load baseline;
5. each workload end to end, on the primary immediately followed by its one-hop twin
   (pairs, so that drift over the run — the master's change collection, a growing
   database — hits both);
6. on the primary, rebalance under load last, because it changes the table's layout;
7. every process's RSS, then the cluster is stopped and its data dir removed;
8. per-request metrics' cost (``bench.metrics_cost``, ``--no-metrics-cost`` skips it): two
   clusters of the primary server, request metrics on and off, interleaved point reads;
9. replication (``bench.replication``, ``--no-replication`` skips it, ``--replication-only``
   runs it alone): a cluster of its own with 3 tablet servers, rf=2 vs rf=1 writes, then a
   leader killed under writes; last, because it kills a server. Then the results are
   written and rendered.

The exit status is 0 when the run completed, whatever the targets say: missing a target
is a result, reported as such; a crash is not.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from bench import cluster as cl
from bench import report
from bench.baselines import storage_baseline
from bench.config import SERVERS, BenchConfig, configure
from bench.external import ceiling_baseline, peer_baseline
from bench.generators import Values
from bench.metrics_cost import metrics_cost_ratios, metrics_cost_targets, run_metrics_cost
from bench.profiling import Profiler, py_spy_path
from bench.rebalance import run_rebalance
from bench.replication import run_replication
from bench.replication_report import replication_ratios, replication_targets
from bench.transports import OneHop, PublicApi
from bench.workloads import DESCRIPTIONS, KeySpace, run_load, run_mix, warm_up
from distdb.cluster.config import ROOT

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TABLE = "usertable"
_T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {text}", flush=True)


def _brief(s: dict) -> str:
    rows = f", {s['rows_per_s']:,.0f} rows/s" if s.get("rows_per_s") != s.get("ops_per_s") else ""
    return (
        f"{s['ops_per_s']:,.0f} ops/s{rows}, p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
        f"{s['errors']} errors" + (f" {s['error_kinds']}" if s["errors"] else "")
    )


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line
        )
        meminfo = Path("/proc/meminfo").read_text().split()
        info["memory_gb"] = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return info


def git_info() -> dict:
    """The commit measured and whether the tree had uncommitted changes (read-only git)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or "?",
        "dirty": bool(git("status", "--porcelain")),
    }


class Profiling:
    """Profiles each cluster workload when asked; a no-op otherwise."""

    def __init__(self, enabled: bool, cluster: cl.Cluster, out_dir: Path) -> None:
        self.profiler = None
        self.results: dict = {"workloads": {}, "dir": str(out_dir)}
        if not enabled:
            return
        if py_spy_path() is None:
            self.results["error"] = "py-spy is not installed (make install)"
            return
        pids = cl.server_pids(cluster)
        self.results["pids"] = pids
        self.profiler = Profiler(out_dir, {n: p for n, p in pids.items() if n != "master"})

    def start(self, tag: str) -> None:
        if self.profiler:
            self.profiler.start(tag)

    def stop(self, tag: str) -> None:
        if self.profiler:
            self.results["workloads"][tag] = self.profiler.stop()


async def drive(cluster: cl.Cluster, cfg: BenchConfig, out_dir: Path) -> dict:
    """Everything that runs against the cluster; returns the results' cluster parts."""
    await asyncio.to_thread(cl.table_create, cluster, TABLE)
    meta = await asyncio.to_thread(cl.metadata, cluster)
    owner = next(t for t in meta["tablets"] if t["table"] == TABLE and t["start"] == "")
    api = PublicApi(cluster.client_urls, cluster.api_token, TABLE, cfg.concurrency)
    hop = OneHop(
        owner["url"], cluster.server_token("client-1"), TABLE, meta["version"], cfg.concurrency
    )
    prof = Profiling(cfg.profile, cluster, out_dir / "profiles")
    keys = KeySpace()
    values = Values(cfg.fields, cfg.field_bytes, rng=random.Random(cfg.seed))
    e2e: dict = {}
    onehop: dict = {}
    try:
        say(f"load: {cfg.rows:,} rows through {len(cluster.client_urls)} client servers")
        await warm_up(api, cfg.concurrency)
        await warm_up(hop, cfg.concurrency)
        load = functools.partial(
            run_load, keys=keys, values=values, batch=cfg.batch_rows, concurrency=cfg.concurrency
        )
        prof.start("load")
        e2e["load"] = await load(api, rows=cfg.rows)
        prof.stop("load")
        say(f"load e2e: {_brief(e2e['load'])}")
        if "load" in cfg.onehop_workloads:
            onehop["load"] = await load(hop, rows=cfg.onehop_load_rows)
            say(f"load one-hop ({owner['server']}): {_brief(onehop['load'])}")
        for i, name in enumerate(cfg.workloads):
            common = {
                "concurrency": cfg.concurrency,
                "duration_s": cfg.duration_s,
                "warmup_s": cfg.warmup_s,
                "seed": cfg.seed + i,
            }
            prof.start(name)
            e2e[name] = await run_mix(api, name, keys, values, **common)
            prof.stop(name)
            say(f"{name} e2e: {_brief(e2e[name])}")
            if name in cfg.onehop_workloads:
                onehop[name] = await run_mix(hop, name, keys, values, **common)
                say(f"{name} one-hop: {_brief(onehop[name])}")
        if cfg.rebalance:
            say("rebalance under workload A")
            e2e["rebalance"] = await run_rebalance(
                cluster,
                api,
                TABLE,
                keys,
                values,
                concurrency=cfg.concurrency,
                before_s=cfg.rebalance_before_s,
                after_s=cfg.rebalance_after_s,
                bucket_s=cfg.rebalance_bucket_s,
                min_move_fraction=cfg.rebalance_min_move,
                command_timeout_s=cfg.rebalance_timeout_s,
                seed=cfg.seed + 100,
            )
            r = e2e["rebalance"]
            if r.get("skipped"):
                say(f"rebalance skipped: {r['reason']}")
            else:
                say(f"rebalance: {_brief(r)}; command {json.dumps(r['command'])[:300]}")
    finally:
        await api.close()
        await hop.close()
    return {
        "workloads": e2e,
        "onehop": onehop,
        "layout": {"metadata_version": meta["version"], "tablets": meta["tablets"]},
        "onehop_server": owner["server"],
        "rows_written": keys.next_key,
        "profile": prof.results if cfg.profile else None,
    }


def run(cfg: BenchConfig, keep_data: bool) -> Path:
    started = dt.datetime.now(dt.UTC)
    run_id = (
        started.strftime("%Y%m%d-%H%M%S") + f"-{cfg.preset}" + ("-profile" if cfg.profile else "")
    )
    out_dir = RESULTS_DIR / run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    say(f"run {run_id}")

    storage: dict = {}
    external: dict = {}
    servers: dict[str, dict] = {}
    driven: dict = {"workloads": {}, "onehop": {}, "layout": None, "onehop_server": None}
    driven |= {"rows_written": 0, "profile": None}
    cluster_shape: dict = {}
    if not cfg.replication_only:
        storage, external, servers, driven, cluster_shape = run_servers(cfg, out_dir, keep_data)
    metrics_cost = None
    if cfg.metrics_cost and not cfg.replication_only:
        say("per-request metrics' cost: two clusters, metrics on and off, interleaved reads")
        try:
            metrics_cost = run_metrics_cost(cfg, out_dir, say)
            say(f"metrics on/off: {metrics_cost['ratio_on_off']} ({metrics_cost['cost_pct']} %)")
        except Exception as exc:  # reported; the run goes on
            say(f"metrics cost failed: {exc!r}")
            metrics_cost = {"error": repr(exc)[-2000:]}
    replication = None
    if cfg.replication or cfg.replication_only:
        replication = run_replication(cfg, out_dir, say)
    storage_ok = {} if "error" in storage else storage
    ratios = report.compute_ratios(
        driven["workloads"],
        driven["onehop"],
        storage_ok,
        peer=external.get("peer", {}),
        ceiling=external.get("ceiling", {}),
    )
    ratios |= replication_ratios(replication) | metrics_cost_ratios(metrics_cost)
    results = {
        "schema": report.SCHEMA_VERSION,
        "run_id": run_id,
        "timestamp": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - _T0, 1),
        "machine": machine,
        "git": git_info(),
        "config": asdict(cfg),
        "cluster": {
            **cluster_shape,
            "table": TABLE,
            "rows_written": driven["rows_written"],
            "onehop_server": driven["onehop_server"],
            "layout_before_rebalance": driven["layout"],
        },
        "descriptions": DESCRIPTIONS,
        "workloads": driven["workloads"],
        "baselines": {"onehop": driven["onehop"], "storage": storage, **external},
        "servers": servers,
        "primary_server": cfg.servers[0],
        "ratios": ratios,
        "targets": (
            {}  # a replication-only run measured nothing the other targets are about
            if cfg.replication_only
            else report.compute_targets(
                ratios, driven["workloads"].get("rebalance"), driven["workloads"].get("c")
            )
        )
        | replication_targets(ratios, replication)
        | metrics_cost_targets(metrics_cost),
        "replication": replication,
        "metrics_cost": metrics_cost,
        "profile": driven["profile"],
    }
    machine["load_avg_at_end"] = os.getloadavg()
    json_path = RESULTS_DIR / f"{run_id}.json"
    report.write_results(results, json_path)
    report_path = report.render_report(json.loads(json_path.read_text()), out_dir)
    for problem in report.shape_problems(results):
        say(f"results shape: {problem}")
    if results["workloads"]:
        print("\n".join(report.results_table(results)))
    for name, t in results["targets"].items():
        print(f"  target {name:<30} {t['status']:<8} value={t.get('value')}")
    say(f"results: {json_path.relative_to(ROOT)}; report: {report_path.relative_to(ROOT)}")
    return json_path


def run_servers(cfg: BenchConfig, out_dir: Path, keep_data: bool) -> tuple[dict, ...]:
    """Steps 1-7: the baselines, then each server candidate's cluster and workloads.

    Returns (storage, external baselines, per-server results, the primary's results,
    the cluster's shape)."""
    say(f"storage-alone baseline ({cfg.rows:,} rows, in-process)")
    try:
        storage = storage_baseline(
            rows=cfg.rows,
            duration_s=cfg.storage_duration_s,
            warmup_s=cfg.warmup_s,
            workloads=cfg.storage_workloads,
            seed=cfg.seed,
            out=out_dir / "storage.json",
        )
        for name, s in storage.items():
            say(f"{name} storage: {_brief(s)}")
    except RuntimeError as exc:
        say(str(exc))
        storage = {"error": str(exc)[-2000:]}

    external = run_external(cfg, out_dir) if cfg.baselines else {}
    servers: dict[str, dict] = {}
    driven: dict = {}
    for i, server in enumerate(cfg.servers):
        run_cfg = cfg if i == 0 else candidate_config(cfg)
        data_dir = Path(tempfile.mkdtemp(prefix="distdb-bench-"))
        say(f"[{server}] starting a cluster in {data_dir}")
        try:
            cluster = cl.start_cluster(
                data_dir,
                out_dir / "logs" / server,
                server=server,
                client_workers=cfg.client_workers,
                link_in_server=cfg.link_in_server,
            )
        except RuntimeError as exc:
            say(f"[{server}] {exc}")
            servers[server] = {"error": str(exc)[-2000:]}
            if i == 0:
                raise
            continue
        say(f"[{server}] up: clients {cluster.client_ports}, tablets {cluster.tablet_ports}")
        try:
            result = asyncio.run(drive(cluster, run_cfg, out_dir))
            mem = cl.memory(cluster)
            say(f"[{server}] RSS per node (MiB): {mem['nodes']}, total {mem['total_mib']}")
        finally:
            say(f"[{server}] stopping the cluster")
            cl.stop_cluster(cluster)
            if not keep_data:
                shutil.rmtree(data_dir, ignore_errors=True)
        servers[server] = {
            "workloads": result["workloads"],
            "memory": mem,
            "rows": run_cfg.rows,
            "duration_s": run_cfg.duration_s,
            "link_in_server": cluster.cfg.link_in_server,
            "client_workers": cluster.cfg.client_workers,
        }
        if i == 0:
            driven = result

    shape = {
        "tablet_servers": len(cluster.tablet_ports),
        "client_servers": len(cluster.client_ports),
    }
    return storage, external, servers, driven, shape


def candidate_config(cfg: BenchConfig) -> BenchConfig:
    """A non-primary server's run: the e2e load and workloads only, maybe smaller."""
    return replace(
        cfg,
        rows=cfg.candidate_rows or cfg.rows,
        duration_s=cfg.candidate_duration_s or cfg.duration_s,
        onehop_workloads=[],
        rebalance=False,
        profile=False,
    )


def run_external(cfg: BenchConfig, out_dir: Path) -> dict:
    """The peer and ceiling baselines (``bench.external``), each alone on the machine."""
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="distdb-bench-peer-") as tmp:
        say(f"peer baseline: Django + DRF, WSGI under uvicorn (2 workers), {cfg.rows:,} rows")
        try:
            out["peer"] = asyncio.run(peer_baseline(cfg, Path(tmp), out_dir / "logs"))
            for name, s in out["peer"].items():
                say(f"{name} peer: {_brief(s)}")
        except Exception as exc:  # a baseline that fails is reported, the run goes on
            say(f"peer baseline failed: {exc!r}")
            out["peer"] = {"error": repr(exc)[-2000:]}
    say("ceiling baseline: trivial asyncio server, one fixed row")
    try:
        out["ceiling"] = asyncio.run(ceiling_baseline(cfg, out_dir / "logs"))
        say(f"c ceiling: {_brief(out['ceiling']['c'])}")
    except Exception as exc:
        say(f"ceiling baseline failed: {exc!r}")
        out["ceiling"] = {"error": repr(exc)[-2000:]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small preset (< 3 minutes)")
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of the servers")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--duration", type=float, dest="duration_s")
    parser.add_argument("--warmup", type=float, dest="warmup_s")
    parser.add_argument("--workloads", help="comma-separated subset of a,b,c,e,batch_read")
    parser.add_argument("--no-rebalance", action="store_true")
    parser.add_argument(
        "--servers",
        help=f"comma-separated HTTP servers for tablets and clients, primary first "
        f"(default {','.join(SERVERS)})",
    )
    parser.add_argument("--client-workers", type=int, help="worker processes per client server")
    parser.add_argument(
        "--separate-link", action="store_true", help="tablet links as their own processes"
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip peer and ceiling")
    parser.add_argument(
        "--replication",
        action=argparse.BooleanOptionalAction,
        help="rf=2 vs rf=1 writes and a failover, on a 3-tablet cluster of their own "
        "(default: on in the full preset, off in --quick)",
    )
    parser.add_argument(
        "--replication-only", action="store_true", help="run only the replication part"
    )
    parser.add_argument(
        "--metrics-cost",
        action=argparse.BooleanOptionalAction,
        help="request metrics on vs off, two clusters of their own "
        "(default: on in the full preset, off in --quick)",
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--keep-data", action="store_true", help="keep the cluster's data dir")
    parser.add_argument("--report", type=Path, help="re-render the report of a results JSON")
    args = parser.parse_args(argv)
    if args.report:
        results = json.loads(args.report.read_text())
        path = report.render_report(results, args.report.with_suffix(""))
        print(path)
        return 0
    cfg = configure(
        "quick" if args.quick else "full",
        rows=args.rows,
        concurrency=args.concurrency,
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        workloads=args.workloads.split(",") if args.workloads else None,
        rebalance=False if args.no_rebalance else None,
        seed=args.seed,
        profile=args.profile or None,
        servers=args.servers.split(",") if args.servers else None,
        client_workers=args.client_workers,
        link_in_server=False if args.separate_link else None,
        baselines=False if args.no_baselines else None,
        replication=args.replication,
        replication_only=args.replication_only or None,
        metrics_cost=args.metrics_cost,
    )
    run(cfg, keep_data=args.keep_data)
    return 0


if __name__ == "__main__":
    sys.exit(main())

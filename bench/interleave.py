"""``python -m bench.interleave``: the HTTP server candidates compared without drift.

``make bench`` measures its server candidates one after another, minutes apart; on a
shared machine whose load changes from minute to minute that ranks the candidates by how
busy the machine was during each one's turn (docs/performance.md shows two full runs that
disagree). Here every candidate's cluster is up at once (idle clusters cost little), each
is loaded with the same rows, and short slices of one workload (point reads by default)
rotate between them, in reverse order every other round, so drift lands on all of them
alike. Each slice is a full closed-loop measurement (``bench.workloads.run_mix``); the
summary is per server: mean ops/s over the rounds, the rounds it was fastest in, and every
slice's (ops/s, p50 ms, p99 ms). Results go to ``bench/results/<run id>-interleave.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import tempfile
from pathlib import Path

from bench import cluster as cl
from bench.config import SERVERS
from bench.generators import Values
from bench.transports import PublicApi
from bench.workloads import KeySpace, run_load, run_mix, warm_up

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TABLE = "usertable"


async def drive(clusters: dict[str, cl.Cluster], args: argparse.Namespace) -> dict:
    apis: dict[str, PublicApi] = {}
    keys: dict[str, KeySpace] = {}
    try:
        for server, cluster in clusters.items():
            await asyncio.to_thread(cl.table_create, cluster, TABLE)
            apis[server] = PublicApi(
                cluster.client_urls, cluster.api_token, TABLE, args.concurrency
            )
            await warm_up(apis[server], args.concurrency)
            keys[server] = KeySpace()
            values = Values(rng=random.Random(args.seed))
            await run_load(
                apis[server], keys[server], values, rows=args.rows, batch=100,
                concurrency=args.concurrency,
            )  # fmt: skip
        slices: dict[str, list[tuple[float, float, float]]] = {s: [] for s in clusters}
        order = list(clusters)
        for r in range(args.rounds):
            for server in order if r % 2 == 0 else order[::-1]:
                s = await run_mix(
                    apis[server], args.workload, keys[server], Values(),
                    concurrency=args.concurrency, duration_s=args.slice, warmup_s=0.5,
                    seed=args.seed + r,
                )  # fmt: skip
                slices[server].append((s["ops_per_s"], s["p50_ms"], s["p99_ms"]))
                print(f"round {r} {server}: {s['ops_per_s']:,.0f} ops/s", flush=True)
    finally:
        for api in apis.values():
            await api.close()
    wins = {s: 0 for s in clusters}
    for r in range(args.rounds):
        wins[max(clusters, key=lambda s: slices[s][r][0])] += 1
    return {
        server: {
            "mean_ops_per_s": round(sum(x[0] for x in v) / len(v), 1),
            "rounds_fastest": wins[server],
            "slices": v,
        }
        for server, v in slices.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.interleave", description=__doc__)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--workload", default="c", help="a, b, c, e or batch_read")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--slice", type=float, default=6.0, help="seconds per slice")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S") + "-interleave"
    clusters: dict[str, cl.Cluster] = {}
    dirs: list[Path] = []
    try:
        for server in args.servers.split(","):
            data_dir = Path(tempfile.mkdtemp(prefix=f"distdb-bench-{server}-"))
            dirs.append(data_dir)
            logs = RESULTS_DIR / run_id / "logs" / server
            clusters[server] = cl.start_cluster(data_dir, logs, server=server, link_in_server=True)
            print(f"{server}: cluster up", flush=True)
        results = asyncio.run(drive(clusters, args))
    finally:
        cl.stop_clusters(clusters.values(), dirs)
    out = {"run_id": run_id, "config": vars(args), "servers": results}
    path = RESULTS_DIR / f"{run_id}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("| server | mean ops/s | rounds fastest | slices (ops/s · p50 · p99 ms) |")
    print("|---|---|---|---|")
    for server, r in results.items():
        cells = "; ".join(f"{o:,.0f} · {p50:.1f} · {p99:.1f}" for o, p50, p99 in r["slices"])
        print(f"| {server} | {r['mean_ops_per_s']:,.0f} | {r['rounds_fastest']} | {cells} |")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

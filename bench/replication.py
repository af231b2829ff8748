"""Replication (issue #10) in the benchmark: what rf=2 costs writes, how long a killed
leader leaves a range without writes, and how fast the lost copy is rebuilt.

One cluster of its own (3 tablet servers, so re-replication has a target, with the short
leases below so that a failover takes seconds, not the production ~25 s), two tables made
alike but for their replication factor:

1. **rf=2 vs rf=1**: the bench's write workloads (``load``, then workload ``a``) run on
   each table in turn, for ``rounds`` rounds, the order reversed every other round
   (rf1, rf2 / rf2, rf1 ...) so that drift in the machine's load hits both alike; the
   samples of all rounds are summarized together per table. After each rf=2 slice the
   metadata is checked: had the master shrunk the in-sync set, that slice would have
   measured rf=1, and the result says so.
2. **failover**: a few writers insert single rows through the client servers; the rf=2
   table's leader is SIGKILLed (with its link process, when it has one). From the
   writers' acknowledgements: the longest gap between two of them and the time from the
   kill until a write sent after it succeeds; from the metadata (polled): when the
   follower was promoted and when the range was back to rf copies; from the master: its
   ``Failover.unavailable_s`` and the re-replication's own report (worker log).
3. **re-replication rate**: rows of the range / seconds from the promotion until the new
   follower is in the in-sync set (what a user waits for), and the copy's own rows /
   duration as the master's worker reports it.

Everything is a ratio or a duration from one run; nothing here passes or fails a test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench import cluster as cl
from bench.config import BenchConfig
from bench.generators import Values
from bench.runner import run_count, run_for, run_until
from bench.stats import Recorder, Sample, summarize
from bench.transports import PublicApi
from bench.workloads import MIXES, KeySpace, load_operation, mix_operation, warm_up
from distdb.keys import decode_key

# Short leases and a fast repair loop: a failover in ~lease + margin, a dead server marked
# down (so re-replication does not pick it) after the heartbeat timeout. Not
# DISTDB_REPLICATE_TIMEOUT_S: it only matters when a *follower* dies, and a short one
# would let a follower slowed by this busy machine drop out of the in-sync set during the
# rf comparison, which would then quietly measure rf=1.
REPLICATION_ENV = {
    "DISTDB_LEADER_LEASE_S": "3",
    "DISTDB_LEADER_LEASE_MARGIN_S": "1",
    "DISTDB_REPAIR_INTERVAL_S": "3",
    "DISTDB_HEARTBEAT_TIMEOUT_S": "6",
}
TABLES = {1: "repl_rf1", 2: "repl_rf2"}
WRITE_WORKLOADS = ("load", "a")
POLL_S = 0.2  # metadata polling during the failover: the resolution of its timestamps
Say = Callable[[str], None]  # progress lines (``bench.__main__.say``)


# --- pure helpers (unit-tested) ---------------------------------------------------------------


def round_orders(rounds: int, rfs: tuple[int, ...] = (1, 2)) -> list[tuple[int, ...]]:
    """The order the tables run in, per round: as given, then reversed, alternately."""
    return [rfs if i % 2 == 0 else tuple(reversed(rfs)) for i in range(rounds)]


def ack_times(samples: Iterable[Sample]) -> list[float]:
    """When each successful write was acknowledged (s since the recorder's origin), sorted."""
    return sorted(s.start + s.latency for s in samples if s.error is None)


def longest_gap(acks: list[float], t0: float, t1: float) -> tuple[float, float]:
    """The longest time in [t0, t1] without an acknowledgement, and when it began.

    The window's edges count as acknowledgements: writers that stop acknowledging at the
    end (or never start) show as a gap, not as nothing."""
    points = [t0, *(a for a in acks if t0 < a < t1), t1]
    best, began = 0.0, t0
    for a, b in zip(points, points[1:], strict=False):
        if b - a > best:
            best, began = b - a, a
    return best, began


def recovery_after(samples: Iterable[Sample], kill_t: float) -> float | None:
    """Seconds from the kill until the first write *sent after it* was acknowledged.

    Writes sent before the kill may have been acknowledged by the old leader a moment
    before it died and reach the writer after; they say nothing about the new leader.
    None if no write sent after the kill succeeded."""
    acks = [s.start + s.latency for s in samples if s.error is None and s.start >= kill_t]
    return min(acks) - kill_t if acks else None


def rows_in_tablet(tablet: dict, key_count: int) -> int:
    """How many of the integer keys [0, key_count) fall in a tablet's range."""
    lo = 0 if not tablet["start"] else max(0, int(decode_key("int", tablet["start"])))
    end = tablet["end"]
    hi = key_count if end is None else min(key_count, int(decode_key("int", end)))
    return max(0, hi - lo)


def per_second(amount: float | None, seconds: float | None) -> float | None:
    """amount / seconds, or None when either is missing or seconds is not positive."""
    if amount is None or seconds is None or not seconds > 0:
        return None
    return amount / seconds


_REPAIR_RESULT = re.compile(
    r"^\[(?P<at>[\d-]+ [\d:]+),(?P<ms>\d+): [^\]]*\] Task distdb\.repair_replicas\[[^\]]*\] "
    r"succeeded in [\d.]+s: (?P<result>\{.*\})$",
    re.MULTILINE,
)
_ADDED_DURATION = re.compile(r"'duration_s': ([\d.]+)")


def repair_copies(worker_log: str, since_wall: float) -> list[dict[str, float]]:
    """The re-replication runs logged by the master's worker after ``since_wall`` (epoch s)
    that copied at least one range: when (epoch s), how many ranges, their copy seconds.

    Celery logs each task's return value, with nested dicts elided (``{'move': {...},
    'error': '', 'duration_s': 0.76}``), so only the durations of the ``added`` entries
    can be read; the log's timestamps are the worker's local time."""
    found = []
    for match in _REPAIR_RESULT.finditer(worker_log):
        added = match.group("result").split("'failed':")[0]
        durations = [float(d) for d in _ADDED_DURATION.findall(added)]
        at = dt.datetime.strptime(match.group("at"), "%Y-%m-%d %H:%M:%S").timestamp()
        at += int(match.group("ms")) / 1000
        if durations and at >= since_wall:
            found.append({"at": at, "ranges": len(durations), "duration_s": sum(durations)})
    return found


# --- the cluster side ---------------------------------------------------------------------------


def _tablet(meta: dict, table: str) -> dict:
    return next(t for t in meta["tablets"] if t["table"] == table and t["start"] == "")


async def _meta(cluster: cl.Cluster) -> dict:
    return await asyncio.to_thread(cl.metadata, cluster)


def replicated(meta: dict, table: str) -> bool:
    """Whether every tablet of ``table`` has an in-sync follower (rf=2: both copies)."""
    return all(t["in_sync"] for t in meta["tablets"] if t["table"] == table)


async def _wait_in_sync(cluster: cl.Cluster, table: str, timeout_s: float) -> bool:
    """Wait until ``replicated``; whether it was within ``timeout_s`` (checked at least once)."""
    deadline = time.monotonic() + timeout_s
    while not replicated(await _meta(cluster), table):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.5)
    return True


async def compare_rf(
    cluster: cl.Cluster, cfg: BenchConfig, say: Say
) -> tuple[dict, dict[int, KeySpace]]:
    """Step 1: the write workloads on the rf=1 and the rf=2 table, interleaved by round."""
    keys = {rf: KeySpace() for rf in TABLES}
    values = Values(cfg.fields, cfg.field_bytes, rng=random.Random(cfg.seed))
    apis = {
        rf: PublicApi(cluster.client_urls, cluster.api_token, t, cfg.concurrency)
        for rf, t in TABLES.items()
    }
    samples: dict[tuple[str, int], list[Sample]] = {}
    windows: dict[tuple[str, int], float] = {}
    in_sync_lost: list[str] = []
    try:
        for api in apis.values():
            await warm_up(api, cfg.concurrency)
        for r, order in enumerate(round_orders(cfg.replication_rounds)):
            for workload in WRITE_WORKLOADS:
                for rf in order:
                    if workload == "load":
                        requests = -(-cfg.replication_rows // cfg.batch_rows)
                        op = load_operation(
                            apis[rf], keys[rf], values, cfg.replication_rows, cfg.batch_rows
                        )
                        rec, window = await run_count(
                            op, concurrency=cfg.concurrency, count=requests
                        )
                    else:
                        op = mix_operation(
                            apis[rf], MIXES[workload], keys[rf], values, cfg.seed + 10 * r + rf
                        )
                        rec, window = await run_for(
                            op,
                            concurrency=cfg.concurrency,
                            duration_s=cfg.replication_duration_s,
                            warmup_s=cfg.warmup_s,
                        )
                    samples.setdefault((workload, rf), []).extend(rec.samples)
                    windows[(workload, rf)] = windows.get((workload, rf), 0.0) + window
                    out = summarize(rec.samples, window)
                    say(
                        f"replication round {r + 1} {workload} rf={rf}: "
                        f"{out['rows_per_s']:,.0f} rows/s, {out['ops_per_s']:,.0f} ops/s, "
                        f"p99 {out['p99_ms']:.1f} ms, {out['errors']} errors"
                    )
                    if rf > 1 and not await _wait_in_sync(cluster, TABLES[rf], 0):
                        in_sync_lost.append(f"round {r + 1} {workload}")
                        say("  the in-sync set shrank: waiting for the follower to rejoin")
                        await _wait_in_sync(cluster, TABLES[rf], 120)
    finally:
        for api in apis.values():
            await api.close()
    results: dict[str, Any] = {}
    for (workload, rf), group in samples.items():
        results.setdefault(workload, {})[f"rf{rf}"] = summarize(group, windows[(workload, rf)])
    return {"workloads": results, "in_sync_lost": in_sync_lost}, keys


async def failover(
    cluster: cl.Cluster, cfg: BenchConfig, keys: KeySpace, say: Say
) -> dict[str, Any]:
    """Step 2 and 3: kill the rf=2 table's leader under steady writes; time what follows."""
    table = TABLES[2]
    if not await _wait_in_sync(cluster, table, 120):
        return {"skipped": True, "reason": f"{table} never had an in-sync follower"}
    before = _tablet(await _meta(cluster), table)
    leader, followers = before["server"], [f["server"] for f in before["in_sync"]]
    values = Values(cfg.fields, cfg.field_bytes, rng=random.Random(cfg.seed + 7))
    api = PublicApi(cluster.client_urls, cluster.api_token, table, cfg.failover_writers)

    async def insert_one(worker: int) -> tuple[str, int, str | None]:
        key = keys.take(1)[0]
        error, rows = await api.insert([(key, values.row())])
        if error:
            keys.forget([key])
            await asyncio.sleep(0.05)  # a failing write must not spin the writer
        return "insert", rows, error

    origin = time.perf_counter()
    rec = Recorder(origin=origin)
    stop = asyncio.Event()
    writers = asyncio.create_task(
        run_until(insert_one, concurrency=cfg.failover_writers, stop=stop, recorder=rec)
    )

    def since() -> float:
        return time.perf_counter() - origin

    out: dict[str, Any] = {"skipped": False, "leader": leader, "followers": followers}
    try:
        await asyncio.sleep(cfg.failover_before_s)
        wall_kill = time.time()
        victims = [n for n in (leader, f"{leader}-link") if n in cluster.processes]
        await asyncio.to_thread(cluster.kill, *victims)
        kill_t = since()
        say(f"failover: killed {', '.join(victims)} at {kill_t:.1f} s; watching the metadata")
        promoted_t = restored_t = rows_then = None
        deadline = kill_t + cfg.failover_timeout_s
        while since() < deadline and (
            restored_t is None or since() < kill_t + cfg.failover_after_s
        ):
            tablet = _tablet(await _meta(cluster), table)
            if promoted_t is None and tablet["server"] != leader:
                promoted_t, out["new_leader"] = since(), tablet["server"]
                say(f"failover: {tablet['server']} leads after {promoted_t - kill_t:.2f} s")
            if promoted_t is not None and restored_t is None and tablet["in_sync"]:
                restored_t = since()
                out["new_follower"] = tablet["in_sync"][0]["server"]
                rows_then = rows_in_tablet(tablet, keys.next_key) - len(keys.missing)
                say(f"failover: rf restored after {restored_t - kill_t:.2f} s")
            await asyncio.sleep(POLL_S)
    finally:
        stop.set()
        await writers
        await api.close()
    end_t = since()
    acks = ack_times(rec.samples)
    gap, gap_began = longest_gap(acks, 0.0, end_t)
    after_kill = [s for s in rec.samples if s.start >= kill_t]
    out.update(
        {
            "writers": cfg.failover_writers,
            "kill_s": kill_t,
            "window_s": end_t,
            "longest_gap_s": gap,
            "longest_gap_began_s": gap_began - kill_t,  # relative to the kill
            "recovery_s": recovery_after(rec.samples, kill_t),
            "promoted_s": None if promoted_t is None else promoted_t - kill_t,
            "rf_restored_s": None if restored_t is None else restored_t - kill_t,
            "writes": summarize(rec.samples, end_t),
            "writes_after_kill": summarize(after_kill, end_t - kill_t),
            "poll_s": POLL_S,
        }
    )
    if restored_t is not None and promoted_t is not None:
        rereplicate_s = restored_t - promoted_t
        out["rereplication"] = {
            "rows": rows_then,
            "seconds": rereplicate_s,
            "rows_per_s": per_second(rows_then, rereplicate_s),
        }
    out["master_failovers"] = await asyncio.to_thread(master_failovers, cluster, table, wall_kill)
    log = cluster.cfg.logs / "worker.log"
    copies = repair_copies(log.read_text(errors="replace") if log.exists() else "", wall_kill)
    if copies:  # the first repair after the kill: this range's copy (the only one to make)
        first = copies[0]
        rate = per_second(rows_then, first["duration_s"])
        out["master_copy"] = {**first, "rows": rows_then, "rows_per_s": rate}
    return out


def master_failovers(cluster: cl.Cluster, table: str, since_wall: float) -> list[dict] | str:
    """The master's ``Failover`` records of ``table`` made after ``since_wall`` (epoch s):
    its own account of how long the range had no serving leader. An error text if the
    shell failed (the run goes on)."""
    code = (
        "import json; from master_app.models import Failover; "
        f"print(json.dumps([dict(at=f.at.timestamp(), from_server=f.from_server, "
        f"to_server=f.to_server, unavailable_s=f.unavailable_s, version=f.version) "
        f"for f in Failover.objects.filter(table={table!r})]))"
    )
    try:
        records = json.loads(cluster.shell("master", code))
    except Exception as exc:  # a diagnostic: its failure must not lose the run's numbers
        return f"{type(exc).__name__}: {str(exc)[-300:]}"
    return [r for r in records if r["at"] >= since_wall - 1]


def run_replication(cfg: BenchConfig, out_dir: Path, say: Say) -> dict[str, Any]:
    """Start the replication cluster, run the three measurements, stop it."""
    data_dir = Path(tempfile.mkdtemp(prefix="distdb-bench-repl-"))
    server = cfg.servers[0]
    say(f"[replication] starting a 3-tablet cluster ({server}) in {data_dir}")
    try:
        cluster = cl.start_cluster(
            data_dir,
            out_dir / "logs" / "replication",
            server=server,
            client_workers=cfg.client_workers,
            link_in_server=cfg.link_in_server,
            tablets=3,
            env=REPLICATION_ENV,
            default_rf=2,
        )
    except RuntimeError as exc:
        shutil.rmtree(data_dir, ignore_errors=True)
        return {"skipped": True, "reason": str(exc)[-2000:]}
    try:
        for rf, table in TABLES.items():
            cl.table_create_rf(cluster, table, rf)
        result = asyncio.run(_drive(cluster, cfg, say))
    finally:
        say("[replication] stopping the cluster")
        cl.stop_cluster(cluster)
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "skipped": False,
        "server": server,
        "tablet_servers": 3,
        "env": REPLICATION_ENV,
        "tables": {f"rf{rf}": t for rf, t in TABLES.items()},
        "rows_per_round": cfg.replication_rows,
        "duration_s": cfg.replication_duration_s,
        "rounds": cfg.replication_rounds,
        "concurrency": cfg.concurrency,
        **result,
    }


async def _drive(cluster: cl.Cluster, cfg: BenchConfig, say: Say) -> dict[str, Any]:
    if not await _wait_in_sync(cluster, TABLES[2], 120):
        return {"comparison": {"error": f"{TABLES[2]} never had an in-sync follower"}}
    comparison, keys = await compare_rf(cluster, cfg, say)
    fail = await failover(cluster, cfg, keys[2], say)
    if not fail.get("skipped"):
        rr = fail.get("rereplication") or {}
        say(
            f"failover: longest write gap {fail['longest_gap_s']:.2f} s, recovery "
            f"{_s(fail['recovery_s'])}, re-replication {_s(rr.get('seconds'))} for "
            f"{rr.get('rows')} rows"
        )
    return {"comparison": comparison, "failover": fail}


def _s(seconds: float | None) -> str:
    return "–" if seconds is None or math.isnan(seconds) else f"{seconds:.2f} s"

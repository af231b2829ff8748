"""One fault-harness run: a fresh local cluster, the workloads, the nemesis, the verdict.

``python -m chaos --seed N --duration S`` (``make chaos``) and the short seeded run in
``make test`` (``tests/integration/test_chaos.py``) both call ``chaos_run``. The run:

1. starts a cluster with ``distdb.cluster.LocalCluster`` on free ports, with short leases
   and timeouts so that faults and moves happen often;
2. runs the workloads (``chaos.workload``) through both client servers while the nemesis
   (``chaos.nemesis``) injects seeded faults, for ``duration_s``;
3. stops the faults, heals the cluster (every process running and answering) and measures
   how long it takes until every register answers again (must be within ``recover_s``);
4. reads every register once more, and every inserted row;
5. checks: per-key linearizability, acknowledged inserts, one owner per range;
6. writes ``<out>/``: ``history.jsonl``, ``faults.json``, ``verdict.json``, ``latency.png``.

The same seed replays the same fault schedule (what the system does in between may of
course differ: it is a real, concurrent system).
"""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from chaos.checker import check_history, inserts_check
from chaos.clockshift import build_clockshift, clockshift_unavailable
from chaos.nemesis import NEMESES, REPLICATED_ONLY, Nemesis
from chaos.ownership import ownership_check
from chaos.workload import (
    INSERT_TABLE,
    REGISTER_TABLE,
    Client,
    Mix,
    Recorder,
    Worker,
    final_inserts,
    register_keys,
    tables_create,
)
from distdb.cluster import ClusterConfig, ClusterError, LocalCluster
from distdb.cluster.config import REDIS_HOST
from distdb.cluster.netns import Network, netns_available

log = logging.getLogger("chaos")

# Short leases and timeouts: faults and their healing happen many times per minute.
CLUSTER_ENV = {
    "DISTDB_COLLECT_INTERVAL_S": "5",
    "DISTDB_HEARTBEAT_TIMEOUT_S": "6",
    "DISTDB_FREEZE_LEASE_S": "6",
    "DISTDB_FREEZE_MARGIN_S": "2",
    "DISTDB_MOVE_STEP_TIMEOUT_S": "20",
    "DISTDB_REBALANCE_MIN_ROWS": "1",
    "DISTDB_REBALANCE_THRESHOLD": "0.01",
    "DISTDB_TABLET_TIMEOUT_S": "3",
    # Replication: leases and repairs short enough that failovers and re-replications
    # happen many times in a run.
    "DISTDB_LEADER_LEASE_S": "3",
    "DISTDB_LEADER_LEASE_MARGIN_S": "1",
    "DISTDB_REPAIR_INTERVAL_S": "3",
    "DISTDB_REPLICATE_TIMEOUT_S": "1",
    "DISTDB_REPLICATE_WAIT_S": "2",  # below DISTDB_TABLET_TIMEOUT_S
    # Every node journals its range and row events (distdb.journal) into the run's
    # directory, outside its database: a failed run can then be traced (chaos.trace).
    "DISTDB_JOURNAL": "1",
}


@dataclass
class ChaosConfig:
    seed: int
    duration_s: float
    out_dir: Path
    workers: int = 6
    registers: int = 16
    kinds: tuple[str, ...] = NEMESES
    max_active: int = 2
    move_weight: int = 3  # moves are drawn this many times as often as each other fault
    recover_s: float = 60.0
    filler_rows: int = 400  # rows in the inserts table before the run, so moves carry data
    rf: int = 2  # the tables' replication factor (1: no replicas, and no ``disk`` nemesis)
    tablets: int = 2
    skipped: dict[str, str] = field(default_factory=dict)  # nemeses left out, and why


@dataclass
class ChaosResult:
    seed: int
    duration_s: float
    ok: bool
    ops: int
    faults: int
    moves: int
    recovery_s: float | None
    linearizability: dict[str, Any]
    inserts: dict[str, Any]
    ownership: dict[str, Any]
    fault_counts: dict[str, int] = field(default_factory=dict)
    skipped_nemeses: dict[str, str] = field(default_factory=dict)
    out_dir: str = ""
    failovers: int | None = None  # automatic failovers the master recorded (replicated runs)

    def summary(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        return (
            f"chaos seed={self.seed} duration={self.duration_s:.0f}s: {verdict} — {self.ops} ops, "
            f"{self.faults} faults {self.fault_counts}, {self.moves} moves, "
            f"{'-' if self.failovers is None else self.failovers} failovers, recovery "
            f"{'none' if self.recovery_s is None else f'{self.recovery_s:.1f}s'}; "
            f"linearizability {self.linearizability['verdict']}, inserts "
            f"{self.inserts['verdict']}, ownership {self.ownership['verdict']} -> {self.out_dir}"
            + "".join(f"\n  not run: {k} ({why})" for k, why in self.skipped_nemeses.items())
        )


class _Controls:
    """``chaos.nemesis.Controls`` over a LocalCluster."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def process_names(self) -> list[str]:
        return sorted(self.cluster.processes)

    def kill(self, name: str) -> None:
        self.cluster.kill(name)

    def restart(self, name: str) -> None:
        self.cluster.kill(name)
        self.cluster.start(name)

    def pause(self, name: str) -> None:
        self.cluster.pause(name)

    def resume(self, name: str) -> None:
        self.cluster.resume(name)

    def database_path(self, node_id: str) -> Path | None:
        path = self.cluster.data_dir / f"{node_id}.sqlite3"
        return path if path.exists() else None

    def master_manage(self, *args: str, timeout_s: float = 120) -> tuple[int, str]:
        try:
            return 0, self.cluster.manage(*args, timeout=timeout_s)
        except ClusterError as exc:
            return 1, str(exc)
        except subprocess.TimeoutExpired as exc:
            return 1, f"timed out: {exc}"

    def tablet_ids(self) -> list[str]:
        return [f"tablet-{i}" for i in range(1, len(self.cluster.tablet_ports) + 1)]

    def node_ids(self) -> list[str]:
        return list(self.cluster.cfg.node_ids)

    def hosts(self) -> list[str]:
        return [*self.cluster.cfg.node_ids, REDIS_HOST]

    def partition(self, side: list[str]) -> None:
        self._network().partition(side)

    def heal_partitions(self) -> None:
        self._network().heal()

    def clock_step(self, node_id: str, offset_s: float) -> None:
        self.cluster.clock_step(node_id, offset_s)

    def _tablet_processes(self, node_id: str) -> list[str]:
        return [n for n in (node_id, f"{node_id}-link") if n in self.cluster.processes]

    def wipe(self, node_id: str) -> None:
        """SIGKILL the tablet server, delete its database, migrate a new empty one."""
        self.cluster.kill(*self._tablet_processes(node_id))
        for suffix in ("", "-wal", "-shm"):
            (self.cluster.data_dir / f"{node_id}.sqlite3{suffix}").unlink(missing_ok=True)
        self.cluster.manage("migrate", "--no-input", node=node_id, timeout=120)

    def start_node(self, node_id: str) -> None:
        self.cluster.start(*self._tablet_processes(node_id))

    def fully_replicated(self) -> bool:
        """Whether every range of every replicated table has all its copies now."""
        code = (
            "from master_app.models import Tablet; "
            "print(all(1 + len(t.in_sync) >= t.table.rf "
            "for t in Tablet.objects.select_related('table')))"
        )
        try:
            return self.cluster.shell("master", code) == "True"
        except (ClusterError, subprocess.TimeoutExpired):
            return False

    def _network(self) -> Network:
        if self.cluster.cfg.network is None:
            raise ClusterError("this cluster's hosts are not in network namespaces")
        return self.cluster.cfg.network


def placement_unavailable(kinds: tuple[str, ...]) -> dict[str, str]:
    """The nemeses of ``kinds`` this machine cannot run, with the reason for each."""
    missing: dict[str, str] = {}
    if "partition" in kinds and (why := netns_available()):
        missing["partition"] = why
    if "clock" in kinds and (why := clockshift_unavailable()):
        missing["clock"] = why
    return missing


def chaos_run(cfg: ChaosConfig) -> ChaosResult:
    """One run; nemeses the machine cannot run (no root for namespaces, no compiler for
    the clock shifter) are left out with a warning, and named in the verdict."""
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    skipped = placement_unavailable(cfg.kinds)
    for kind, why in skipped.items():
        log.warning("the %s nemesis cannot run here: %s", kind, why)
    if cfg.rf < 2:
        for kind in REPLICATED_ONLY:
            if kind in cfg.kinds:
                skipped[kind] = "the tables have one copy (rf=1): a lost disk loses data"
    cfg.kinds = tuple(k for k in cfg.kinds if k not in skipped)
    cfg.skipped = skipped
    cluster_cfg = ClusterConfig.on_free_ports(
        cfg.out_dir / "cluster",
        tablets=cfg.tablets,
        env=dict(CLUSTER_ENV),
        netns="partition" in cfg.kinds,
        default_rf=cfg.rf,
    )
    if "clock" in cfg.kinds:
        cluster_cfg.clock_shift_lib = build_clockshift(cfg.out_dir)
    with LocalCluster(cluster_cfg).up() as cluster:
        return asyncio.run(_run(cfg, cluster))


async def _run(cfg: ChaosConfig, cluster: LocalCluster) -> ChaosResult:
    rng = random.Random(cfg.seed)
    rec = Recorder()
    keys = register_keys(cfg.registers)
    token = cluster.api_token
    urls = cluster.client_urls
    setup = Client(urls, token)
    try:
        await tables_create(setup)
        await _fill(setup, rec, cfg.filler_rows)
    finally:
        await setup.close()

    controls = _Controls(cluster)
    nemesis = Nemesis(
        controls,
        random.Random(rng.random()),
        rec.now,
        kinds=cfg.kinds,
        max_active=cfg.max_active,
        weights={"move": cfg.move_weight},
    )
    stop_faults = threading.Event()
    nemesis_thread = threading.Thread(target=nemesis.run, args=(stop_faults,), name="nemesis")
    stop_work = asyncio.Event()
    clients = [Client(urls, token) for _ in range(cfg.workers)]
    workers = [
        Worker(f"w{i}", c, rec, keys, random.Random(rng.random())) for i, c in enumerate(clients)
    ]
    tasks = [asyncio.create_task(w.run(stop_work, Mix())) for w in workers]
    nemesis_thread.start()
    try:
        await asyncio.sleep(cfg.duration_s)
        stop_faults.set()
        await asyncio.to_thread(nemesis_thread.join)
        healed_at = rec.now()
        await asyncio.to_thread(_heal, cluster)
        recovery = await _until_serving(clients[0], rec, keys, cfg.recover_s)
        recovery_s = None if recovery is None else recovery - healed_at
        await asyncio.sleep(min(10.0, cfg.duration_s / 6))  # the workload on a healed cluster
    finally:
        stop_work.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    try:
        await _final_reads(clients[0], rec, keys)
        found = await final_inserts(clients[0])
    finally:
        for c in clients:
            await c.close()

    lin = check_history(rec.ops, unique_values=True)  # every write writes a value of its own
    ins = inserts_check(rec.acked_inserts, rec.attempted_inserts, found)
    own = ownership_check(cluster)
    failovers = _failovers(cluster)
    fault_counts: dict[str, int] = {}
    for f in nemesis.faults:
        fault_counts[f.kind] = fault_counts.get(f.kind, 0) + 1
    result = ChaosResult(
        seed=cfg.seed,
        duration_s=cfg.duration_s,
        ok=lin.ok and ins.ok and own["ok"] and recovery_s is not None,
        ops=len(rec.ops),
        faults=len(nemesis.faults),
        moves=nemesis.moves_triggered,
        recovery_s=recovery_s,
        linearizability={
            # UNDECIDED: no anomaly found, but a key's search ran out of budget.
            "verdict": "ok" if lin.ok else ("ANOMALIES" if lin.anomalies else "UNDECIDED"),
            "keys": lin.keys,
            "ops": lin.ops,
            "anomalies": [v.explain() for v in lin.anomalies],
            "undecided": [v.key for v in lin.undecided],
        },
        inserts={
            "verdict": "ok" if ins.ok else "FAILED",
            "acked": ins.acked,
            "attempted": len(rec.attempted_inserts),
            "lost": ins.lost[:50],
            "duplicated": dict(list(ins.duplicated.items())[:50]),
            "wrong_value": {k: list(v) for k, v in list(ins.wrong_value.items())[:50]},
            "phantom": ins.phantom[:50],
        },
        ownership=own,
        fault_counts=fault_counts,
        skipped_nemeses=cfg.skipped,
        out_dir=str(cfg.out_dir),
        failovers=failovers,
    )
    _write(cfg, rec, nemesis, result)
    return result


async def _fill(client: Client, rec: Recorder, rows: int) -> None:
    """Rows for the moves to carry, acknowledged inserts like the workload's own."""
    for start in range(0, rows, 200):
        tokens = [f"fill-{i}" for i in range(start, min(rows, start + 200))]
        rec.attempted_inserts.update(tokens)
        # Sent again (same Idempotency-Key: at most once) while the answer says "retry":
        # a just-started cluster's leaders may still be taking their first leases.
        once = {"Idempotency-Key": f"chaos-fill-{start}"}
        for _ in range(20):
            answer = await client.send(
                "POST", f"/{INSERT_TABLE}/rows", [{"cells": {"t": t}} for t in tokens], once
            )
            if answer.status not in (None, 503):
                break
            await asyncio.sleep(0.5)
        if answer.status != 201:
            raise RuntimeError(f"could not fill: {answer.status} {answer.body}")
        rec.acked_inserts.update({t: t for t in tokens})


def _failovers(cluster: LocalCluster) -> int | None:
    """How many failovers the master recorded (None if it cannot tell)."""
    code = "from master_app.models import Failover; print(Failover.objects.count())"
    try:
        return int(cluster.shell("master", code))
    except (ClusterError, subprocess.TimeoutExpired, ValueError):
        return None


def _heal(cluster: LocalCluster) -> None:
    """No partition, every clock right, every process running and not paused, then ready."""
    if cluster.cfg.network is not None:
        cluster.cfg.network.heal()
    if cluster.cfg.clock_shift_lib is not None:
        for node_id in cluster.cfg.node_ids:
            cluster.clock_step(node_id, 0.0)
    for name, proc in cluster.processes.items():
        if proc.running:
            cluster.resume(name)
        else:
            cluster.start(name)
    cluster.wait_ready(timeout=180)


async def _until_serving(client: Client, rec: Recorder, keys: list[str], within_s: float):
    """The time at which every register answered a read, or None past ``within_s``."""
    deadline = time.monotonic() + within_s
    pending = set(keys)
    while pending and time.monotonic() < deadline:
        for key in sorted(pending):
            answer = await client.send("GET", f"/{REGISTER_TABLE}/rows/{key}")
            if answer.status in (200, 404):
                pending.discard(key)
        if pending:
            await asyncio.sleep(0.5)
    return None if pending else rec.now()


async def _final_reads(client: Client, rec: Recorder, keys: list[str]) -> None:
    reader = Worker("final", client, rec, keys, random.Random(0))
    for key in keys:
        reader.keys = [key]
        await reader.read()


def _write(cfg: ChaosConfig, rec: Recorder, nemesis: Nemesis, result: ChaosResult) -> None:
    out = cfg.out_dir
    with (out / "history.jsonl").open("wb") as f:
        for op in rec.ops:
            f.write(orjson.dumps(op.as_dict()) + b"\n")
    (out / "faults.json").write_bytes(
        orjson.dumps([f.as_dict() for f in nemesis.faults], option=orjson.OPT_INDENT_2)
    )
    (out / "verdict.json").write_bytes(orjson.dumps(asdict(result), option=orjson.OPT_INDENT_2))
    try:
        from chaos.plot import latency_plot

        latency_plot(rec.latencies, [f.as_dict() for f in nemesis.faults], out / "latency.png")
    except Exception as exc:  # noqa: BLE001 - a missing plot must not hide the verdict
        log.warning("no latency plot: %s", exc)

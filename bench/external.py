"""The baselines that are not distdb, measured with the same load generator (issue #12):

* **peer**: the single-node Django + DRF service of ``bench.peer`` (WSGI, uvicorn,
  2 workers, SQLite in WAL), loaded with as many rows as the cluster, driven with the
  point-read (``c``) and batched-read (``batch_read``) workloads;
* **ceiling**: ``bench.ceiling``, a trivial asyncio server answering one fixed row, driven
  with point reads: the most this machine serves to this load generator.

Each runs alone (before the cluster starts) as a supervised process of ``distdb.cluster``,
on a free port, and is stopped afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.config import BenchConfig
from bench.generators import Values
from bench.transports import PlainRows
from bench.workloads import KeySpace, run_mix
from distdb.cluster import ProcessSpec, free_ports
from distdb.cluster.config import ROOT, caller_env
from distdb.cluster.process import Process

PEER_WORKLOADS = ("c", "batch_read")


async def _drive(url: str, workloads: tuple[str, ...], rows: int, cfg: BenchConfig) -> dict:
    transport = PlainRows(url, cfg.concurrency)
    keys = KeySpace(next_key=rows)
    out = {}
    try:
        for i, name in enumerate(workloads):
            out[name] = await run_mix(
                transport,
                name,
                keys,
                Values(),
                concurrency=cfg.concurrency,
                duration_s=cfg.duration_s,
                warmup_s=cfg.warmup_s,
                seed=cfg.seed + i,
            )
    finally:
        await transport.close()
    return out


def _serve(name: str, argv: tuple[str, ...], env: dict[str, str], url: str, log_dir: Path):
    proc = Process(ProcessSpec(name, "", argv, env, ready_url=url), log_dir / f"{name}.log")
    proc.start()
    proc.wait_ready(time.monotonic() + 60)
    return proc


async def peer_baseline(cfg: BenchConfig, data_dir: Path, log_dir: Path) -> dict:
    """Load ``cfg.rows`` rows into the peer and measure its reads."""
    env = {"DJANGO_SETTINGS_MODULE": "bench.peer.settings", "PEER_DB": str(data_dir / "peer.db")}
    setup = [sys.executable, "-m", "bench.peer", "setup", "--rows", str(cfg.rows)]
    subprocess.run(setup, cwd=ROOT, env={**caller_env(), **env}, check=True, timeout=600)
    (port,) = free_ports(1)
    argv = (
        *(sys.executable, "-m", "uvicorn", "bench.peer.wsgi:application", "--interface", "wsgi"),
        *("--workers", "2", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
    )
    url = f"http://127.0.0.1:{port}"
    proc = _serve("peer", argv, env, f"{url}/rows/0", log_dir)
    try:
        return await _drive(url, PEER_WORKLOADS, cfg.rows, cfg)
    finally:
        proc.stop()


async def ceiling_baseline(cfg: BenchConfig, log_dir: Path) -> dict:
    """Point reads against the trivial server."""
    (port,) = free_ports(1)
    argv = (sys.executable, "-m", "bench.ceiling", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    proc = _serve("ceiling", argv, {}, f"{url}/rows/0", log_dir)
    try:
        return await _drive(url, ("c",), cfg.rows, cfg)
    finally:
        proc.stop()

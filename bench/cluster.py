"""A real local cluster for the benchmark, started by the project's launcher on free ports.

``distdb.cluster.LocalCluster`` does the work (the same launcher as ``make run`` and the
tests): its own data dir and its own Redis on a free port, so it never touches another
cluster. Differences from the tests' cluster, on purpose: no fixture seeding (the
benchmark loads its own table), the default collection interval (a benchmark should see
the production schedule, not the tests' 2 s), and the processes' logs go to the results
directory, which outlives the data dir.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from distdb import protocol
from distdb.cluster import ClusterConfig, ClusterError, LocalCluster, group_members

Cluster = LocalCluster  # what bench's type hints name


def start_cluster(
    data_dir: Path,
    log_dir: Path,
    timeout: float = 240,
    *,
    server: str = "daphne",
    client_workers: int = 1,
    link_in_server: bool = False,
    tablets: int = 2,
    env: dict[str, str] | None = None,
    default_rf: int = 1,
) -> LocalCluster:
    """Start master, ``tablets`` tablet servers, 2 client servers, Celery and Redis; wait
    until up.

    ``server`` serves the tablets and clients; the link runs inside the tablet server
    when asked and the server has ASGI lifespan (not Daphne). ``env`` is extra
    environment for every process (the replication part's short leases);
    ``default_rf`` the replication factor of tables created without one."""
    cfg = ClusterConfig.on_free_ports(
        data_dir,
        tablets=tablets,
        log_dir=log_dir,
        server=server,
        client_workers=client_workers,
        link_in_server=link_in_server and server != "daphne",
        env=dict(env or {}),
        default_rf=default_rf,
    )
    try:
        return LocalCluster(cfg).up(timeout=timeout)
    except ClusterError as exc:
        raise RuntimeError(f"the cluster did not come up: {exc}") from None


def stop_cluster(cluster: LocalCluster) -> None:
    """Stop every process of the cluster (and any child of theirs)."""
    cluster.close()


def stop_clusters(clusters: Iterable[LocalCluster], data_dirs: Iterable[Path]) -> None:
    """Stop clusters that ran side by side and remove their data dirs (A/B parts)."""
    for cluster in clusters:
        stop_cluster(cluster)
    for d in data_dirs:
        shutil.rmtree(d, ignore_errors=True)


def _request(url: str, token: str, body: dict | None = None, timeout: float = 30) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def metadata(cluster: LocalCluster) -> dict:
    """The master's routing metadata (``GET /internal/v1/metadata``, as a client server)."""
    url = cluster.node_url("master") + "/internal/v1/metadata"
    return _request(url, cluster.server_token("client-1"))


def table_create(cluster: LocalCluster, name: str) -> dict:
    """Create an integer-keyed table through the public API (first client server)."""
    url = cluster.client_urls[0] + "/api/v1/tables/"
    return _request(url, cluster.api_token, {"name": name, "key_type": "int"})


def table_create_rf(cluster: LocalCluster, name: str, rf: int) -> dict:
    """Create an integer-keyed table with replication factor ``rf``.

    Through the master's internal API, as a client server relays a create: the public
    API has no ``rf`` field (yet), and the benchmark needs an rf=1 and an rf=2 table side
    by side in one cluster. Client servers learn the table from the master on first use.
    """
    body = protocol.TableCreateRequest(name=name, key_type="int", rf=rf)
    url = cluster.node_url("master") + "/internal/v1/tables"
    return _request(url, cluster.server_token("client-1"), body.model_dump(mode="json"))


def manage(cluster: LocalCluster, *args: str, timeout: float = 120) -> tuple[bool, str]:
    """``manage.py <args>`` as the master: (whether it succeeded, its output)."""
    try:
        return True, cluster.manage(*args, timeout=timeout)
    except ClusterError as exc:
        return False, str(exc)


def server_pids(cluster: LocalCluster) -> dict[str, int]:
    """node id -> pid of each running server process (for the profiler, which follows
    its worker processes)."""
    return {
        node: proc.pid
        for node in cluster.cfg.node_ids
        if (proc := cluster.processes[node]).running and proc.pid is not None
    }


def rss_mib(pid: int) -> float:
    """Resident memory of one process (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def memory(cluster: LocalCluster) -> dict:
    """RSS (MiB) of every cluster process (with its children: server workers, Celery's
    pool) and per role: the master with its Celery processes, a tablet server with its
    link, a client server; the total without Redis."""
    processes: dict[str, dict] = {}
    for name, proc in cluster.processes.items():
        if proc.running and proc.pid is not None:
            members = group_members(proc.pid)
            total = sum(rss_mib(p) for p in members)
            processes[name] = {"rss_mib": round(total, 1), "processes": len(members)}
    roles: dict[str, float] = {}
    for name, info in processes.items():
        if name == "redis":
            continue
        node = name.removesuffix("-link")
        role = "master" if name in ("worker", "beat") else cluster.cfg.node(node).role
        roles[node if role != "master" else "master"] = (
            roles.get(node if role != "master" else "master", 0.0) + info["rss_mib"]
        )
    return {
        "processes": processes,
        "nodes": {k: round(v, 1) for k, v in roles.items()},
        "total_mib": round(sum(roles.values()), 1),
        "os_processes": sum(i["processes"] for n, i in processes.items() if n != "redis"),
    }

"""A real local cluster for the benchmark: ``manage.py runcluster`` on free ports.

Mirrors ``tests/integration/conftest.py`` (start_cluster / stop_cluster / Cluster.env):
its own data dir and its own Redis on a free port, so it never touches another cluster.
Differences, on purpose: no fixture seeding (the benchmark loads its own table), the
default collection interval (a benchmark should see the production schedule, not the
tests' 2 s), and the processes' output goes to a log file rather than memory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY_LINE = "distdb local cluster is up"


def free_ports(n: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


@dataclass
class Cluster:
    data_dir: Path
    master_port: int
    tablet_ports: list[int]
    client_ports: list[int]
    redis_port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def api_token(self) -> str:
        return (self.data_dir / "api-token").read_text().strip()

    def server_token(self, node_id: str) -> str:
        """A node's server JWT (``<data dir>/tokens/<node>.jwt``, written by runcluster)."""
        return (self.data_dir / "tokens" / f"{node_id}.jwt").read_text().strip()

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    @property
    def client_urls(self) -> list[str]:
        return [self.url(p) for p in self.client_ports]

    def env(self, node_id: str, role: str, port: int) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": f"distdb.settings.{role}",
            "DISTDB_NODE_ID": node_id,
            "DISTDB_PORT": str(port),
            "DISTDB_DATA_DIR": str(self.data_dir),
            "DISTDB_MASTER_URL": self.url(self.master_port),
            "DISTDB_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
        }

    def master_env(self) -> dict[str, str]:
        return self.env("master", "master", self.master_port)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""


def start_cluster(data_dir: Path, log_path: Path, timeout: float = 240) -> Cluster:
    """Start master, 2 tablet servers, 2 client servers, Celery and Redis; wait until up."""
    master, t1, t2, c1, c2, redis = free_ports(6)
    env = {
        **os.environ,
        "DISTDB_DATA_DIR": str(data_dir),
        "DISTDB_REDIS_URL": f"redis://127.0.0.1:{redis}/0",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "runcluster",
            "--no-seed",
            "--master-port",
            str(master),
            "--tablet-ports",
            f"{t1},{t2}",
            "--client-ports",
            f"{c1},{c2}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: stopped as a whole, and only it
    )
    cluster = Cluster(data_dir, master, [t1, t2], [c1, c2], redis, process, log_path)
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        with log_path.open("w") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if READY_LINE in line:
                    ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_cluster(cluster)
            raise RuntimeError(f"the cluster did not come up:\n{cluster.log_tail()}")
    return cluster


def stop_cluster(cluster: Cluster) -> int | None:
    """Ctrl-C the cluster's process group (honcho stops every process), SIGKILL if stuck."""
    if cluster.process.poll() is None:
        os.killpg(cluster.process.pid, signal.SIGINT)
        try:
            cluster.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.process.pid, signal.SIGKILL)
            cluster.process.wait(10)
    return cluster.process.returncode


def _request(url: str, token: str, body: dict | None = None, timeout: float = 30) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def metadata(cluster: Cluster) -> dict:
    """The master's routing metadata (``GET /internal/v1/metadata``, as a client server)."""
    url = cluster.url(cluster.master_port) + "/internal/v1/metadata"
    return _request(url, cluster.server_token("client-1"))


def table_create(cluster: Cluster, name: str) -> dict:
    """Create an integer-keyed table through the public API (first client server)."""
    url = cluster.client_urls[0] + "/api/v1/tables/"
    return _request(url, cluster.api_token, {"name": name, "key_type": "int"})


def manage(cluster: Cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``manage.py <args>`` with the master's environment (not checked: callers decide)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=cluster.master_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def server_pids(cluster: Cluster) -> dict[str, int]:
    """node id -> pid of each ``runserver`` process of this cluster (for the profiler).

    honcho logs "<name> started (pid=N)" for the ``/bin/sh -c`` wrapper of each process it
    runs; the server is that shell's Python child (or the shell itself once it exec'd).
    """
    started = dict(
        re.findall(r"system\s*\|\s*(\S+) started \(pid=(\d+)\)", cluster.log_tail(10**6))
    )
    nodes = [f"client-{i}" for i in range(1, 3)] + [f"tablet-{i}" for i in range(1, 3)]
    found: dict[str, int] = {}
    for node in nodes + ["master"]:
        if node in started:
            found[node] = _python_of(int(started[node]))
    return found


def _python_of(pid: int) -> int:
    try:
        children = (Path("/proc") / str(pid) / "task" / str(pid) / "children").read_text().split()
    except OSError:
        return pid
    return int(children[0]) if children else pid

"""A real local cluster for integration tests: ``manage.py runcluster`` on free ports.

Everything is real (Daphne, Celery worker and beat, Redis, the tablet links, SQLite
files in a temporary data dir); the cluster gets its own Redis on a free port so it
never touches another cluster's queues or groups.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
    output: list[str] = field(default_factory=list)

    @property
    def api_token(self) -> str:
        return (self.data_dir / "api-token").read_text().strip()

    @property
    def admin_password(self) -> str:
        return (self.data_dir / "admin-password").read_text().strip()

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

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

    def manage(self, node_id: str, role: str, port: int, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env(node_id, role, port),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def shell(self, node_id: str, code: str) -> str:
        """Run Python in a node's `manage.py shell` and return the last line it printed."""
        role = node_id.split("-")[0]
        ports = {
            "master": [self.master_port],
            "tablet": self.tablet_ports,
            "client": self.client_ports,
        }[role]
        index = int(node_id.split("-")[1]) - 1 if "-" in node_id else 0
        out = self.manage(node_id, role, ports[index], "shell", "-c", code)
        return out.strip().splitlines()[-1]

    def log(self) -> str:
        return "".join(self.output[-200:])


def start_cluster(tmp: Path, timeout: float = 180) -> Cluster:
    master, t1, t2, c1, c2, redis = free_ports(6)
    env = {
        **os.environ,
        "DISTDB_DATA_DIR": str(tmp),
        "DISTDB_REDIS_URL": f"redis://127.0.0.1:{redis}/0",
        "DISTDB_COLLECT_INTERVAL_S": "2",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "runcluster",
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
        start_new_session=True,
    )
    cluster = Cluster(tmp, master, [t1, t2], [c1, c2], redis, process)
    ready = threading.Event()

    def pump():
        assert process.stdout is not None
        for line in process.stdout:
            cluster.output.append(line)
            if "distdb local cluster is up" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_cluster(cluster)
            raise AssertionError(f"the cluster did not come up:\n{cluster.log()}")
    return cluster


def stop_cluster(cluster: Cluster) -> int | None:
    if cluster.process.poll() is None:
        os.killpg(cluster.process.pid, signal.SIGINT)
        try:
            cluster.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.process.pid, signal.SIGKILL)
            cluster.process.wait(10)
    return cluster.process.returncode


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    stop_cluster(cluster)

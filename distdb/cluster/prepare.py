"""Prepare every node of a local cluster: keys, tokens, databases, admin users, API token.

Runs in a process with the cluster's master settings (``manage.py runcluster``, directly
or as ``--prepare-only`` for ``LocalCluster.prepare``): it signs with the master's key
and writes under the master's data dir. State survives restarts; every step is idempotent.
"""

from __future__ import annotations

import secrets
import shutil
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings

from distdb.auth import generate_key_pair, token_sign, token_verify
from distdb.cluster.config import ClusterConfig, ClusterError
from distdb.cluster.process import manage
from distdb.errors import DistdbError


def cluster_prepare(cfg: ClusterConfig, log: Callable[[str], object] = print) -> dict[str, str]:
    """Keys, tokens, migrations, admin users and an API token; returns what to print."""
    busy = [n for n in cfg.nodes if port_in_use(cfg.host, n.port)]
    if busy:
        names = ", ".join(f"{n.node_id}:{n.port}" for n in busy)
        raise ClusterError(f"ports already in use ({names}); is a cluster already running?")
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    # Live metrics start from zero with the cluster (prometheus_client's multi-process
    # mode wants the directory emptied between runs; distdb.metrics).
    shutil.rmtree(cfg.data_dir / "metrics", ignore_errors=True)
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
    admin = {"DISTDB_ADMIN_PASSWORD": password}
    with ThreadPoolExecutor(max_workers=len(cfg.nodes)) as pool:
        list(pool.map(lambda n: manage(cfg, n.node_id, "setup_node", env=admin), cfg.nodes))

    token_file = cfg.data_dir / "api-token"
    if not token_file.exists():
        manage(cfg, "master", "issue_api_token", "local-cluster", "--out", str(token_file))
    return {"admin_password": password, "api_token": token_file.read_text().strip()}


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _token_ok(path: Path, role: str) -> bool:
    try:
        token_verify(path.read_text().strip(), roles=(role,))
        return True
    except (FileNotFoundError, DistdbError):
        return False

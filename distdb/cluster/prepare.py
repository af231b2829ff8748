"""Prepare every node of a local cluster: keys, tokens, databases, admin users, API token.

Runs in a process with the cluster's master settings (``manage.py runcluster``, directly
or as ``--prepare-only`` for ``LocalCluster.prepare``): it writes under the master's data
dir. State survives restarts; every step is idempotent.

Server tokens are signed by ``manage.py sign_jwt`` as the master, *after* the databases
are migrated, so that every token is recorded (and can be revoked); a tablet's token
binds its URL. A token already in place is kept if it still verifies for its node, role
and URL; delete a token file to have it signed again (e.g. after revoking it).
"""

from __future__ import annotations

import secrets
import shutil
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings

from distdb.auth import generate_key_pair, token_verify
from distdb.cluster.config import ClusterConfig, ClusterError, Node
from distdb.cluster.process import manage
from distdb.errors import DistdbError
from distdb.files import private_dir, write_private


def cluster_prepare(cfg: ClusterConfig, log: Callable[[str], object] = print) -> dict[str, str]:
    """Keys, tokens, migrations, admin users and an API token; returns what to print."""
    busy = [n for n in cfg.nodes if port_in_use(cfg.host, n.port)]
    if busy:
        names = ", ".join(f"{n.node_id}:{n.port}" for n in busy)
        raise ClusterError(f"ports already in use ({names}); is a cluster already running?")
    private_dir(cfg.data_dir)
    # Live metrics start from zero with the cluster (prometheus_client's multi-process
    # mode wants the directory emptied between runs; distdb.metrics).
    shutil.rmtree(cfg.data_dir / "metrics", ignore_errors=True)
    if generate_key_pair(settings.DISTDB_PRIVATE_KEY_FILE, settings.DISTDB_PUBLIC_KEY_FILE):
        log(f"generated the master's key pair in {settings.DISTDB_KEYS_DIR}")
    password_file = cfg.data_dir / "admin-password"
    if not password_file.exists():
        write_private(password_file, secrets.token_urlsafe(12) + "\n")
    password = password_file.read_text().strip()
    # Each node has its own database, so they are set up side by side.
    log("migrating every node's database")
    admin = {"DISTDB_ADMIN_PASSWORD": password}
    with ThreadPoolExecutor(max_workers=len(cfg.nodes)) as pool:
        list(pool.map(lambda n: manage(cfg, n.node_id, "setup_node", env=admin), cfg.nodes))

    tokens_dir = settings.DISTDB_TOKENS_DIR
    private_dir(tokens_dir)
    unsigned = [n for n in cfg.nodes if n.role != "master" and not _token_ok(cfg, n, tokens_dir)]
    if unsigned:  # each a manage.py start: signed side by side
        with ThreadPoolExecutor(max_workers=len(unsigned)) as pool:
            list(pool.map(lambda n: _token_sign(cfg, n, tokens_dir), unsigned))
        log(f"signed server tokens for {', '.join(n.node_id for n in unsigned)}")

    token_file = cfg.data_dir / "api-token"
    if not token_file.exists():
        manage(cfg, "master", "issue_api_token", "local-cluster", "--out", str(token_file))
    # Where the secrets are, never the secrets: this is printed (``--prepare-only``).
    return {"admin_password_file": str(password_file), "api_token_file": str(token_file)}


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _token_url(cfg: ClusterConfig, node: Node) -> str | None:
    """The URL bound into a tablet's token: its DISTDB_PUBLIC_URL (the settings' default)."""
    return cfg.url(node.port) if node.role == "tablet" else None


def _token_sign(cfg: ClusterConfig, node: Node, tokens_dir: Path) -> None:
    url = _token_url(cfg, node)
    out = str(tokens_dir / f"{node.node_id}.jwt")
    args = ("sign_jwt", node.node_id, node.role, *(("--url", url) if url else ()), "--out", out)
    manage(cfg, "master", *args)


def _token_ok(cfg: ClusterConfig, node: Node, tokens_dir: Path) -> bool:
    """Whether the node's token file holds a token for it that verifies, with its URL."""
    try:
        token = (tokens_dir / f"{node.node_id}.jwt").read_text().strip()
        claims = token_verify(token, roles=(node.role,))
    except (FileNotFoundError, DistdbError):
        return False
    return claims.sub == node.node_id and claims.url == _token_url(cfg, node)

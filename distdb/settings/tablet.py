"""Tablet server role: stores and serves the rows of the tablets it is assigned."""

from distdb.env import env_bool, env_float, env_http_url, env_node_id, env_port

from .base import *  # noqa: F403
from .base import (
    DISTDB_HOST,
    DISTDB_TOKENS_DIR,
    INSTALLED_APPS,
    database_config,
    read_threads,
)

DISTDB_ROLE = "tablet"
DISTDB_NODE_ID = env_node_id("DISTDB_NODE_ID", "tablet-1")
DISTDB_PORT = env_port("DISTDB_PORT", 7000)
DISTDB_PUBLIC_URL = env_http_url("DISTDB_PUBLIC_URL", f"http://{DISTDB_HOST}:{DISTDB_PORT}")
DISTDB_TOKEN_FILE = DISTDB_TOKENS_DIR / f"{DISTDB_NODE_ID}.jwt"
INSTALLED_APPS = [*INSTALLED_APPS, "tablet_app"]
ROOT_URLCONF = "distdb.urls.tablet"
HOT_PATH_APP = "tablet_app.internal_api.app"
HOT_PATH_PREFIXES = ("/internal/",)
DATABASES = {"default": database_config(DISTDB_NODE_ID)}
DISTDB_READ_THREADS = read_threads(DATABASES["default"])
DISTDB_METRICS_COLLECTORS = ["tablet_app.metrics.TabletCollector"]
DISTDB_READINESS_CHECKS = [
    "distdb.health.database_ready",
    "tablet_app.services.status.link_ready",
]

# Under a server with ASGI lifespan, run the link to the master in this process
# (tablet_app.link.link_in_server) instead of ``manage.py tablet_link``.
DISTDB_LINK_IN_SERVER = env_bool("DISTDB_LINK_IN_SERVER", False)
LIFESPAN_TASKS = ["tablet_app.link.link_in_server"] if DISTDB_LINK_IN_SERVER else []

# How often expired Idempotency-Key records are deleted (tablet_app.services.expiry).
DISTDB_IDEMPOTENCY_EXPIRE_INTERVAL_S = env_float(
    "DISTDB_IDEMPOTENCY_EXPIRE_INTERVAL_S", 600.0, minimum=0.1
)

# Replication (docs/architecture.md): a follower that has not acknowledged a batch of the
# leader's entries in this long is removed from the in-sync set (by the master) before the
# leader acknowledges without it; a write not replicated in DISTDB_REPLICATE_WAIT_S fails
# with replication_unconfirmed. Keep it below the client servers' DISTDB_TABLET_TIMEOUT_S:
# a write that waits longer makes the client server give up on a healthy tablet server.
DISTDB_REPLICATE_TIMEOUT_S = env_float("DISTDB_REPLICATE_TIMEOUT_S", 2.0, minimum=0.1)
DISTDB_REPLICATE_WAIT_S = env_float("DISTDB_REPLICATE_WAIT_S", 3.0, minimum=0.5)

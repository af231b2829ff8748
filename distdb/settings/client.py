"""Client server role: the public REST API, routing every request to the tablet servers."""

from distdb.env import env_float, env_http_url, env_node_id, env_port

from .base import *  # noqa: F403
from .base import DISTDB_HOST, DISTDB_TOKENS_DIR, INSTALLED_APPS, database_config

DISTDB_ROLE = "client"
DISTDB_NODE_ID = env_node_id("DISTDB_NODE_ID", "client-1")
DISTDB_PORT = env_port("DISTDB_PORT", 5000)
DISTDB_PUBLIC_URL = env_http_url("DISTDB_PUBLIC_URL", f"http://{DISTDB_HOST}:{DISTDB_PORT}")
DISTDB_TOKEN_FILE = DISTDB_TOKENS_DIR / f"{DISTDB_NODE_ID}.jwt"
INSTALLED_APPS = [
    *INSTALLED_APPS,
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "client_app",
]
ROOT_URLCONF = "distdb.urls.client"
# The two reads (one row, rows by key) served beside Django's handler, with the same
# functions as the DRF views; everything else to distdb.api_handler (client_app.hot_reads).
HOT_PATH_APP = "client_app.hot_reads.HotReadsApp"
HOT_PATH_PREFIXES = ("/api/",)
DATABASES = {"default": database_config(DISTDB_NODE_ID)}
LIFESPAN_SHUTDOWN = ["client_app.internal_client.sessions_close"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["client_app.authentication.ApiTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "client_app.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "distdb API",
    "DESCRIPTION": "Public REST API of a distdb client server.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the drf-spectacular-sidecar package, not a CDN: works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
DISTDB_METRICS_COLLECTORS = ["client_app.metrics.ClientCollector"]
DISTDB_READINESS_CHECKS = ["distdb.health.database_ready", "client_app.metrics.metadata_ready"]
# The circuit breaker per tablet server (client_app.breaker): after a call times out, the
# server's keys fail fast (503, Retry-After) for this long, then one probe is let through.
DISTDB_BREAKER_OPEN_S = env_float("DISTDB_BREAKER_OPEN_S", 2.0, minimum=0.1)
DISTDB_BREAKER_PROBE_TIMEOUT_S = env_float("DISTDB_BREAKER_PROBE_TIMEOUT_S", 0.5, minimum=0.05)
# How often it asks the master which tablet servers' heartbeats stopped (0: never).
DISTDB_BREAKER_MASTER_STATES_S = env_float("DISTDB_BREAKER_MASTER_STATES_S", 10.0, minimum=0)

"""Settings shared by every role. Role modules add their app, URL conf and role name.

Everything that differs between nodes or environments comes from ``DISTDB_*``
environment variables read through ``distdb.env`` (bad values fail at start-up
naming the variable).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url

from distdb.env import (
    env_bool,
    env_choice,
    env_float,
    env_http_url,
    env_int,
    env_path,
    env_redis_url,
    env_str,
)
from distdb.files import write_private
from distdb.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# --- node identity ---------------------------------------------------------------------------
DISTDB_ROLE = "base"  # overridden by each role module
DISTDB_DATA_DIR = env_path("DISTDB_DATA_DIR", BASE_DIR / "var")
DISTDB_HOST = env_str("DISTDB_HOST", "127.0.0.1")
DISTDB_CLUSTER = env_str("DISTDB_CLUSTER", "distdb")  # the JWT audience of this cluster
DISTDB_MASTER_URL = env_http_url("DISTDB_MASTER_URL", "http://127.0.0.1:3000")
# Credentials and TLS by URL (rediss://); DISTDB_REDIS_PASSWORD_FILE adds a password kept
# in a file (make run's own Redis), so it is in no environment or process listing.
DISTDB_REDIS_URL = env_redis_url(
    "DISTDB_REDIS_URL", "redis://127.0.0.1:6379/0", password_file="DISTDB_REDIS_PASSWORD_FILE"
)
DISTDB_KEYS_DIR = env_path("DISTDB_KEYS_DIR", DISTDB_DATA_DIR / "keys")
DISTDB_PRIVATE_KEY_FILE = DISTDB_KEYS_DIR / "master.pem"
DISTDB_PUBLIC_KEY_FILE = env_path("DISTDB_PUBLIC_KEY_FILE", DISTDB_KEYS_DIR / "master.pub.pem")
DISTDB_TOKENS_DIR = env_path("DISTDB_TOKENS_DIR", DISTDB_DATA_DIR / "tokens")

# Limits of the data model, documented in docs/api.md.
DISTDB_MAX_KEY_BYTES = 256
DISTDB_MAX_BODY_BYTES = env_int("DISTDB_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=1024)
DISTDB_MAX_ROWS_PER_REQUEST = env_int("DISTDB_MAX_ROWS_PER_REQUEST", 10_000, minimum=1)
DISTDB_MAX_SCAN_LIMIT = 10_000

# Idempotency-Key records (client_app.services.idempotency) are honoured this long; the
# tablet servers delete older ones from the ranges they lead (tablet_app.services.expiry).
DISTDB_IDEMPOTENCY_TTL_S = env_int("DISTDB_IDEMPOTENCY_TTL_S", 24 * 3600, minimum=1)

# Client -> tablet request policy (DESIGN §3): bounded retries with jittered backoff.
DISTDB_ROUTING_MAX_TRIES = env_int("DISTDB_ROUTING_MAX_TRIES", 10, minimum=1, maximum=100)
DISTDB_ROUTING_DEADLINE_S = env_float("DISTDB_ROUTING_DEADLINE_S", 10.0, minimum=0.1)
DISTDB_TABLET_TIMEOUT_S = env_float("DISTDB_TABLET_TIMEOUT_S", 5.0, minimum=0.1)
# Client server: read calls in flight per tablet server before further reads queue and
# go out merged as one multi-key read (client_app.coalesce); 0 turns coalescing off.
DISTDB_READ_COALESCE_IN_FLIGHT = env_int("DISTDB_READ_COALESCE_IN_FLIGHT", 1, minimum=0, maximum=64)


def _secret_key() -> str:
    """DISTDB_SECRET_KEY, else a per-data-dir key generated once and kept (never committed)."""
    configured = env_str("DISTDB_SECRET_KEY", "-")
    if configured != "-":
        return configured
    path = DISTDB_DATA_DIR / "secret_key"
    if not path.exists():
        write_private(path, secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DISTDB_DEBUG", False)
ALLOWED_HOSTS = env_str("DISTDB_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

INSTALLED_APPS = [
    # distdb first: its runserver (Daphne's, with the port from DISTDB_PORT) wins.
    "distdb",
    "daphne",  # its runserver serves the ASGI application (DESIGN §5)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
]

# Middleware of the Django handler (admin, docs). The client's public API is served by
# distdb.api_handler with HOT_PATH_MIDDLEWARE instead (async-capable middleware only), so
# that it does not pay a sync<->async thread hop per middleware hook (DESIGN §9); the
# internal APIs of the tablet and the master are distdb.internal_http apps, no middleware.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
HOT_PATH_MIDDLEWARE: list[str] = []
HOT_PATH_PREFIXES: tuple[str, ...] = ()
# ASGI lifespan (servers other than Daphne; distdb.asgi_server): coroutine functions run
# for the life of the server process, and coroutine functions awaited at its shutdown.
LIFESPAN_TASKS: list[str] = []
LIFESPAN_SHUTDOWN: list[str] = []

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "distdb.asgi.application"


SQLITE_ENGINE = "distdb.sqlite_backend"


def database_config(node_id: str) -> dj_database_url.DBConfig:
    """DISTDB_DATABASE_URL (PostgreSQL in production), else a SQLite file under the data dir."""
    url = env_str("DISTDB_DATABASE_URL", f"sqlite:///{DISTDB_DATA_DIR / (node_id + '.sqlite3')}")
    try:
        config = dj_database_url.parse(url, conn_max_age=600, conn_health_checks=True)
    except ValueError as exc:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"DISTDB_DATABASE_URL={url!r} is not valid: {exc}") from exc
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Django's backend, with one process's writers queueing in order (its docstring)
        config["ENGINE"] = SQLITE_ENGINE
        Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        config["CONN_MAX_AGE"] = None  # one connection per thread for the life of the process
        config["CONN_HEALTH_CHECKS"] = False
        config["OPTIONS"] = {
            # WAL lets the server, its link process and the admin read while one writes;
            # IMMEDIATE takes the write lock at BEGIN so concurrent writers queue on
            # busy_timeout instead of failing with "database is locked" mid-transaction.
            "init_command": (
                "PRAGMA journal_mode=WAL;"
                f"PRAGMA synchronous={env_str('DISTDB_SQLITE_SYNCHRONOUS', 'FULL')};"
                "PRAGMA busy_timeout=20000;"
            ),
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    return config


def read_threads(database: dj_database_url.DBConfig) -> int:
    """``DISTDB_READ_THREADS``: workers of a tablet server's reads-only pool
    (``distdb.internal_http.run_read``). One on SQLite, where reading threads only trade
    the GIL per row; 0 (reads share the general pool) elsewhere: a PostgreSQL read waits
    on its socket with the GIL released, and one thread would queue reads behind it."""
    default = 1 if database["ENGINE"] == SQLITE_ENGINE else 0
    return env_int("DISTDB_READ_THREADS", default, minimum=0, maximum=64)


AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DISTDB_DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns when it is missing
WHITENOISE_USE_FINDERS = True  # serve the admin's files straight from the apps, no collectstatic
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [DISTDB_REDIS_URL], "capacity": 1000, "expiry": 30},
    }
}

# Plain lines by default (make run's console); JSON lines with DISTDB_LOG_FORMAT=json, every
# record carrying the node, role and request id (distdb.logs). DISTDB_ACCESS_LOG=1 adds one
# line per HTTP request (method, path, status, duration, request id): off by default, as it
# costs ~65 us of CPU per request with JSON, a tenth of a point read (docs/deploy.md).
DISTDB_LOG_FORMAT = env_choice("DISTDB_LOG_FORMAT", "plain", ("plain", "json"))
DISTDB_ACCESS_LOG = env_bool("DISTDB_ACCESS_LOG", False)
LOGGING = logging_config(DISTDB_LOG_FORMAT, env_str("DISTDB_LOG_LEVEL", "INFO"))

# Prometheus metrics (/metrics on every role, distdb.metrics): collectors that read the
# role's state at scrape time; each role module appends its own. Readiness (/readyz):
# checks each role adds (dotted paths of callables returning None or raising).
DISTDB_METRICS_COLLECTORS: list[str] = []
# Per-request counters and latency histograms (distdb.ops_http). On by default; off only
# for ``make bench``'s A/B of their cost (bench.metrics_cost): /metrics then lacks
# distdb_requests_total and distdb_request_duration_seconds.
DISTDB_REQUEST_METRICS = env_bool("DISTDB_REQUEST_METRICS", True)
# A forensic journal of every node's range and row events (distdb.journal): the fault
# harness turns it on so a failed run can be traced; off by default (a write per event).
DISTDB_JOURNAL = env_bool("DISTDB_JOURNAL", False)
DISTDB_CLIENT_URLS: list[str] = []  # the master's dashboard reads these client servers' /metrics
DISTDB_READINESS_CHECKS: list[str] = ["distdb.health.database_ready"]

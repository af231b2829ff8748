"""Test settings: every role's app in one process, SQLite (or DISTDB_DATABASE_URL), no Redis.

Role apps never import each other, so installing all three is only a convenience for
running every app's tests in one pytest session; each app's tests select their role's
URL conf. Tests that need the real processes live in tests/integration.
"""

import tempfile
from pathlib import Path

from distdb.env import env_str

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, database_config, read_threads

DISTDB_ROLE = "test"
DISTDB_NODE_ID = "test"
DISTDB_PORT = 0
DISTDB_PUBLIC_URL = "http://testserver"
_tmp = Path(tempfile.mkdtemp(prefix="distdb-test-"))
DISTDB_DATA_DIR = _tmp
DISTDB_KEYS_DIR = _tmp / "keys"
DISTDB_PRIVATE_KEY_FILE = DISTDB_KEYS_DIR / "master.pem"
DISTDB_PUBLIC_KEY_FILE = DISTDB_KEYS_DIR / "master.pub.pem"
DISTDB_TOKENS_DIR = _tmp / "tokens"
DISTDB_TOKEN_FILE = DISTDB_TOKENS_DIR / "test.jwt"
INSTALLED_APPS = [
    *INSTALLED_APPS,
    "django_celery_beat",
    "rest_framework",
    "drf_spectacular",
    "master_app",
    "tablet_app",
    "client_app",
]
ROOT_URLCONF = "distdb.urls.master"
HOT_PATH_PREFIXES = ()
DATABASES = {"default": database_config("test")}
if env_str("DISTDB_DATABASE_URL", "-") == "-":
    DATABASES["default"]["TEST"] = {"NAME": str(_tmp / "test.sqlite3")}
DISTDB_READ_THREADS = read_threads(DATABASES["default"])
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast user creation
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
CELERY_BROKER_URL = "memory://"
CELERY_TASK_ALWAYS_EAGER = True
DISTDB_REBALANCE_INTERVAL_S = 3600
DISTDB_COLLECT_INTERVAL_S = 60
DISTDB_HEARTBEAT_S = 1
DISTDB_HEARTBEAT_TIMEOUT_S = 20
DISTDB_DEFAULT_RF = 1  # unit tests of moves and routing predate replication; rf tests set it
DISTDB_LEADER_LEASE_S = 4.0
DISTDB_LEADER_LEASE_MARGIN_S = 1.0
DISTDB_REPAIR_INTERVAL_S = 10
DISTDB_REPLICATE_TIMEOUT_S = 2.0
DISTDB_REPLICATE_WAIT_S = 3.0
DISTDB_IDEMPOTENCY_EXPIRE_INTERVAL_S = 600.0
DISTDB_KEY_BLOCK = 100
# The public API is configured exactly as on a client server, rebalancing as on the master.
from .client import (  # noqa: E402, F401
    DISTDB_BREAKER_OPEN_S,
    DISTDB_BREAKER_PROBE_TIMEOUT_S,
    REST_FRAMEWORK,
    SPECTACULAR_SETTINGS,
)

DISTDB_BREAKER_MASTER_STATES_S = 0.0  # the fake masters of the client tests do not answer it
from .master import (  # noqa: E402, F401
    DISTDB_FREEZE_LEASE_S,
    DISTDB_FREEZE_MARGIN_S,
    DISTDB_MOVE_COPY_CHUNK,
    DISTDB_MOVE_STEP_TIMEOUT_S,
    DISTDB_REBALANCE_LEASE_S,
    DISTDB_REBALANCE_MIN_ROWS,
    DISTDB_REBALANCE_THRESHOLD,
    DISTDB_REBALANCE_TIME_LIMIT_S,
)

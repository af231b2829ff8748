"""Master role: metadata, the consolidated copy, rebalancing, the admin of the cluster."""

from distdb.env import env_float, env_http_url, env_int, env_node_id, env_port, env_str

from .base import *  # noqa: F403
from .base import DISTDB_HOST, DISTDB_REDIS_URL, INSTALLED_APPS, database_config

DISTDB_ROLE = "master"
DISTDB_NODE_ID = env_node_id("DISTDB_NODE_ID", "master")
DISTDB_PORT = env_port("DISTDB_PORT", 3000)
DISTDB_PUBLIC_URL = env_http_url("DISTDB_PUBLIC_URL", f"http://{DISTDB_HOST}:{DISTDB_PORT}")
INSTALLED_APPS = [*INSTALLED_APPS, "django_celery_beat", "master_app"]
ROOT_URLCONF = "distdb.urls.master"
WEBSOCKET_ROUTES = "master_app.routing.websocket_urlpatterns"
HOT_PATH_APP = "master_app.internal_api.app"
HOT_PATH_PREFIXES = ("/internal/",)
DATABASES = {"default": database_config(DISTDB_NODE_ID)}

# Rebalancing and change collection (DESIGN §4). The beat schedule is seeded from these
# into django-celery-beat's tables, where the admin can edit it.
DISTDB_REBALANCE_INTERVAL_S = env_int("DISTDB_REBALANCE_INTERVAL_S", 3600, minimum=10)
DISTDB_COLLECT_INTERVAL_S = env_int("DISTDB_COLLECT_INTERVAL_S", 60, minimum=1)
DISTDB_HEARTBEAT_S = env_int("DISTDB_HEARTBEAT_S", 1, minimum=1)
# A tablet server whose link sent nothing for this long is marked down (and gets no data).
DISTDB_HEARTBEAT_TIMEOUT_S = env_int("DISTDB_HEARTBEAT_TIMEOUT_S", 20, minimum=2)
# Replication (docs/architecture.md, "Replication and failover"): a new table's replication
# factor; the leader lease granted at each heartbeat; the master fails a range over once its
# leader's last grant is older than lease + margin on its monotonic clock.
DISTDB_DEFAULT_RF = env_int("DISTDB_DEFAULT_RF", 2, minimum=1, maximum=5)
DISTDB_LEADER_LEASE_S = env_float("DISTDB_LEADER_LEASE_S", 4.0, minimum=0.5)
DISTDB_LEADER_LEASE_MARGIN_S = env_float("DISTDB_LEADER_LEASE_MARGIN_S", 1.0, minimum=0.1)
DISTDB_REPAIR_INTERVAL_S = env_int("DISTDB_REPAIR_INTERVAL_S", 10, minimum=1)
DISTDB_KEY_BLOCK = env_int("DISTDB_KEY_BLOCK", 1000, minimum=1)
# A table moves nothing while every server is within this fraction of the mean, or
# while no server is more than DISTDB_REBALANCE_MIN_ROWS above its share.
DISTDB_REBALANCE_THRESHOLD = env_float("DISTDB_REBALANCE_THRESHOLD", 0.1, minimum=0)
DISTDB_REBALANCE_MIN_ROWS = env_int("DISTDB_REBALANCE_MIN_ROWS", 100, minimum=0)
# A move's write freeze is a lease of this length; the master commits only while at
# least DISTDB_FREEZE_MARGIN_S of it is left (tablet_app.services.ownership).
DISTDB_FREEZE_LEASE_S = env_float("DISTDB_FREEZE_LEASE_S", 10.0, minimum=1)
DISTDB_FREEZE_MARGIN_S = env_float("DISTDB_FREEZE_MARGIN_S", 3.0, minimum=0.1)
# The run's lock expires this long after its holder died; renewed every third of it.
DISTDB_REBALANCE_LEASE_S = env_float("DISTDB_REBALANCE_LEASE_S", 30.0, minimum=3)
DISTDB_MOVE_STEP_TIMEOUT_S = env_float("DISTDB_MOVE_STEP_TIMEOUT_S", 300.0, minimum=1)
DISTDB_MOVE_COPY_CHUNK = env_int("DISTDB_MOVE_COPY_CHUNK", 20_000, minimum=100)
DISTDB_REBALANCE_TIME_LIMIT_S = env_int("DISTDB_REBALANCE_TIME_LIMIT_S", 3 * 3600, minimum=120)

CELERY_BROKER_URL = DISTDB_REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

DISTDB_METRICS_COLLECTORS = ["master_app.metrics.MasterCollector"]
DISTDB_READINESS_CHECKS = ["distdb.health.database_ready", "master_app.metrics.redis_ready"]
# The client servers' base URLs, for the dashboard's per-server request rates (the master
# does not otherwise know them: client servers never register). Comma-separated.
DISTDB_CLIENT_URLS = [
    u for u in env_str("DISTDB_CLIENT_URLS", "-").split(",") if u not in ("", "-")
]

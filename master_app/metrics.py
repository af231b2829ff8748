"""The master's metrics: live ones for rebalancing, scrape-time ones for the cluster.

Loaded by the master role. Rebalance runs and moves happen in the Celery worker (or a
``manage.py rebalance``), not in the server that answers ``/metrics``: the live
metrics below reach it through the node's ``PROMETHEUS_MULTIPROC_DIR`` (see
``distdb.metrics``). The cluster's state — servers, heartbeats, ranges, collection
positions, recorded runs — is read from the master's database at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from distdb.metrics import Counter, Histogram, ScrapeCollector

REBALANCE_RUNS = Counter(
    "distdb_rebalance_runs", "Rebalance runs finished, by outcome.", ["outcome", "dry_run"]
)
REBALANCE_DURATION = Histogram(
    "distdb_rebalance_duration_seconds",
    "Duration of finished rebalance runs (dry runs included).",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
MOVE_DURATION = Histogram(
    "distdb_move_duration_seconds",
    "Duration of range moves (copy, catch-up, freeze, commit), by outcome.",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
MOVE_FREEZE = Histogram(
    "distdb_move_freeze_seconds",
    "How long a move held its range's write freeze.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MOVE_ROWS = Counter("distdb_move_rows", "Rows copied by moves that committed.")


def move_observe(outcome: str, duration_s: float, freeze_ms: float, rows: int) -> None:
    """One move finished (hook in ``services.rebalance``)."""
    MOVE_DURATION.labels(outcome).observe(duration_s)
    if freeze_ms:
        MOVE_FREEZE.observe(freeze_ms / 1000)
    if outcome == "succeeded":
        MOVE_ROWS.inc(rows)


def run_observe(outcome: str, dry_run: bool, duration_s: float) -> None:
    """One rebalance run finished (hook in ``services.rebalance``)."""
    REBALANCE_RUNS.labels(outcome, str(dry_run).lower()).inc()
    REBALANCE_DURATION.observe(duration_s)


class MasterCollector(ScrapeCollector):
    """Servers, heartbeat ages, ranges, collection positions and recorded runs."""

    def families(self) -> Iterable[Any]:
        from master_app.models import RebalanceRun, Table, Tablet, TabletServer
        from master_app.services.metadata import metadata_version_current

        now = timezone.now()
        up = GaugeMetricFamily(
            "distdb_server_up", "1 if the tablet server's link is up.", labels=["server"]
        )
        draining = GaugeMetricFamily(
            "distdb_server_draining", "1 if the server is being drained.", labels=["server"]
        )
        age = GaugeMetricFamily(
            "distdb_server_heartbeat_age_seconds",
            "Seconds since the server's last heartbeat reached the master.",
            labels=["server"],
        )
        acked = GaugeMetricFamily(
            "distdb_collect_acked_seq",
            "The server's last change-log seq applied to the master's copy (compare with "
            "the server's distdb_changelog_last_seq for the collection lag).",
            labels=["server"],
        )
        ranges = GaugeMetricFamily(
            "distdb_server_ranges",
            "Key ranges the metadata assigns to the server.",
            labels=["server"],
        )
        counts = dict(
            Tablet.objects.values("server__node_id")
            .annotate(n=Count("id"))
            .values_list("server__node_id", "n")
        )
        for server in TabletServer.objects.order_by("node_id"):
            labels = [server.node_id]
            up.add_metric(labels, 1 if server.state == TabletServer.State.UP else 0)
            draining.add_metric(labels, 1 if server.draining else 0)
            if server.last_heartbeat is not None:
                age.add_metric(labels, max(0.0, (now - server.last_heartbeat).total_seconds()))
            acked.add_metric(labels, server.acked_seq)
            ranges.add_metric(labels, counts.get(server.node_id, 0))
        yield from (up, draining, age, acked, ranges)

        table_ranges = GaugeMetricFamily(
            "distdb_table_ranges", "Key ranges (tablets) per table.", labels=["table"]
        )
        for name, n in Table.objects.annotate(n=Count("tablets")).values_list("name", "n"):
            table_ranges.add_metric([name], n)
        yield table_ranges
        yield GaugeMetricFamily(
            "distdb_metadata_version",
            "The current metadata version.",
            value=metadata_version_current(),
        )
        recorded = GaugeMetricFamily(
            "distdb_rebalance_runs_recorded",
            "Rebalance runs in the master's records, by outcome (survives restarts).",
            labels=["outcome"],
        )
        for outcome, n in (
            RebalanceRun.objects.values("outcome")
            .annotate(n=Count("id"))
            .values_list("outcome", "n")
        ):
            recorded.add_metric([outcome], n)
        yield recorded
        last = RebalanceRun.objects.order_by("-started_at").first()
        if last is not None:
            yield GaugeMetricFamily(
                "distdb_rebalance_last_run_timestamp_seconds",
                "When the last rebalance run started (Unix time).",
                value=last.started_at.timestamp(),
            )
        yield GaugeMetricFamily(
            "distdb_scrape_timestamp_seconds", "When these figures were read.", value=time.time()
        )


def redis_ready() -> None:
    """Readiness check: the broker and channel layer (Redis) answers."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(
        settings.DISTDB_REDIS_URL, socket_timeout=1, socket_connect_timeout=1
    )
    try:
        client.ping()
    finally:
        client.close()

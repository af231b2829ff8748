"""Real local clusters for integration tests, started by the project's launcher.

Everything is real (Daphne, Celery worker and beat, Redis, the tablet links, SQLite
files in a temporary data dir); each cluster gets its own Redis on a free port so it
never touches another cluster's queues or groups. ``distdb.cluster.LocalCluster`` does
the work; this module only chooses the tests' settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from distdb.cluster import ClusterConfig, LocalCluster
from distdb.cluster.config import ROOT

FIXTURE = ROOT / "fixtures" / "products.jsonl"
# Collect every 2 s (default: 30) so tests see the master's copy catch up quickly.
TEST_ENV = {"DISTDB_COLLECT_INTERVAL_S": "2"}

Cluster = LocalCluster  # what the tests' type hints name


def start_cluster(tmp: Path, timeout: float = 240) -> LocalCluster:
    """master, 2 tablet servers, 2 client servers, Celery and Redis on free ports, seeded
    from the fixture and ready."""
    cluster = LocalCluster(ClusterConfig.on_free_ports(tmp, env=TEST_ENV)).up(timeout=timeout)
    try:
        cluster.seed(FIXTURE)
    except BaseException:
        cluster.close()
        raise
    return cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    with start_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster

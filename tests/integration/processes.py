"""A local cluster whose processes the tests SIGKILL and restart one by one.

``Harness`` is the project's launcher (``distdb.cluster.LocalCluster``, whose
``kill``/``start``/``wait_ready`` the crash tests use) plus the master commands and
public-API calls those tests repeat. Three tablet servers are prepared and two started
(tablet-3 joins later); Celery worker and beat are left out: the tests trigger
collection and rebalancing themselves, at moments they choose.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from distdb.cluster import ClusterConfig, LocalCluster
from distdb.cluster.config import MANAGE_PY, ROOT
from tests.integration.api import call
from tests.integration.conftest import FIXTURE

# Short leases so that crash tests recover in seconds (the defaults are 10 s and 30 s).
FAST_LEASES = {
    "DISTDB_FREEZE_LEASE_S": "5",
    "DISTDB_FREEZE_MARGIN_S": "2",
    "DISTDB_REBALANCE_LEASE_S": "6",
    "DISTDB_MOVE_COPY_CHUNK": "1000",
    "DISTDB_HEARTBEAT_S": "1",
}


class Harness(LocalCluster):
    """The launcher plus the master commands and API calls of the crash tests."""

    # --- master commands ------------------------------------------------------------------

    def manage_async(self, *args: str) -> subprocess.Popen:
        """``manage.py <args>`` as the master, running on while the test reads its output."""
        return subprocess.Popen(
            [sys.executable, str(MANAGE_PY), *args],
            env={**self.env("master"), "DISTDB_LOG_LEVEL": "INFO"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            start_new_session=True,
        )

    def status(self, *, collect: bool = False) -> dict[str, Any]:
        args = ["--collect"] if collect else []
        return json.loads(self.manage("cluster_status", "--json", *args))

    def rebalance(self) -> dict[str, Any]:
        out = self.manage("rebalance", "--json", check=False)
        return json.loads(out.strip().splitlines()[-1])

    def rows_per_server(self) -> dict[str, int]:
        return {s["node_id"]: s["rows"] for s in self.status(collect=True)["servers"]}

    # --- the public API -------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, client: int = 1, timeout=30):
        url = f"{self.node_url(f'client-{client}')}/api/v1{path}"
        return call(method, url, self.api_token, body, timeout=timeout)

    def scan_all(self, table: str) -> list[tuple[Any, dict]]:
        """Every row of ``table`` in key order, through the public API's cursor pages."""
        rows: list[tuple[Any, dict]] = []
        status, body, _ = self.api("GET", f"/tables/{table}/rows?limit=10000")
        while True:
            assert status == 200, body
            rows += [(r["key"], r["cells"]) for r in body["rows"]]
            if not body.get("cursor"):
                return rows
            status, body, _ = self.api(
                "GET", f"/tables/{table}/rows?cursor={body['cursor']}&limit=10000"
            )


def start_harness(tmp: Path) -> Harness:
    """The cluster with tablet-1 and tablet-2 up and seeded; tablet-3 is prepared, not started
    (a server that joins later)."""
    cfg = ClusterConfig.on_free_ports(tmp, tablets=3, celery=False, env=FAST_LEASES)
    harness = Harness(cfg)
    harness.up(*(n for n in harness.processes if not n.startswith("tablet-3")))
    try:
        harness.seed(FIXTURE, tablets=2)
    except BaseException:
        harness.close()
        raise
    return harness

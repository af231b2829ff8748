"""Moves under the faults a code review found them weak against (issue #9's defects 1-3).

Each test reproduces its defect against real processes, as the issue describes it:

1. the master's metadata lock held past the source's freeze lease: the commit must not
   happen once the lease may have ended (a write acknowledged by the source after its
   lease was lifted would be dropped with the source's copy);
2. the source's database locked while the move hands over: the source must not answer
   reads for the range once the target may accept writes (stale reads);
3. large non-ASCII rows: collection and moves must carry rows up to the request limit.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from distdb.cluster import ClusterConfig, LocalCluster
from distdb.cluster.config import MANAGE_PY
from tests.integration.api import call

pytestmark = pytest.mark.integration

LEASE_S = 4.0
ROWS = 300


def _cluster(tmp_path: Path, **env: str) -> LocalCluster:
    cfg = ClusterConfig.on_free_ports(
        tmp_path,
        celery=False,  # nothing but the test's own rebalance touches the master's data
        env={
            "DISTDB_FREEZE_LEASE_S": str(LEASE_S),
            "DISTDB_FREEZE_MARGIN_S": "1.5",
            "DISTDB_REBALANCE_MIN_ROWS": "1",
            **env,
        },
    )
    return LocalCluster(cfg).up()


def _api(cluster: LocalCluster, client: int = 0) -> str:
    return cluster.client_urls[client] + "/api/v1/tables"


def _load(cluster: LocalCluster, table: str, cells, n: int = ROWS) -> None:
    token = cluster.api_token
    status, body, _ = call("POST", _api(cluster) + "/", token, {"name": table, "key_type": "str"})
    assert status == 201, body
    for lo in range(0, n, 50):
        rows = [{"key": f"k{i:04d}", "cells": cells(i)} for i in range(lo, min(n, lo + 50))]
        status, body, _ = call("POST", f"{_api(cluster)}/{table}/rows", token, rows, timeout=120)
        assert status == 201, body


def _owner(cluster: LocalCluster, table: str) -> tuple[str, str]:
    """(source, target): the tablet server holding ``table`` now, and the other one."""
    owners = [n for n in ("tablet-1", "tablet-2") if _owned(cluster, n, table)]
    assert len(owners) == 1, owners
    return owners[0], ({"tablet-1", "tablet-2"} - set(owners)).pop()


def _db(cluster: LocalCluster, node: str) -> Path:
    return cluster.data_dir / f"{node}.sqlite3"


def _owned(cluster: LocalCluster, node: str, table: str) -> list[sqlite3.Row]:
    with sqlite3.connect(_db(cluster, node), timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(
            'SELECT * FROM tablet_app_ownedrange WHERE "table" = ?', [table]
        ).fetchall()


def _frozen(cluster: LocalCluster, node: str, table: str) -> bool:
    """Whether a freeze is set (``frozen_until`` before the monotonic lease, then
    ``frozen_deadline``: the test reads the file, whichever schema it has)."""
    return any(
        row[c] is not None
        for row in _owned(cluster, node, table)
        for c in ("frozen_until", "frozen_deadline")
        if c in row.keys()  # noqa: SIM118 - sqlite3.Row has no __contains__ for names
    )


def _rows(cluster: LocalCluster, node: str, table: str) -> int:
    with sqlite3.connect(_db(cluster, node), timeout=30) as conn:
        return conn.execute(
            'SELECT count(*) FROM tablet_app_row WHERE "table" = ?', [table]
        ).fetchone()[0]


def _until(condition, timeout: float = 60, what: str = "condition", run=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            output = run.communicate(timeout=60)[0] if run is not None else ""
            raise AssertionError(f"timed out waiting for {what}; the rebalance said:\n{output}")
        time.sleep(0.005)


def _rebalance(cluster: LocalCluster) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(MANAGE_PY), "rebalance", "--no-progress"],
        env=cluster.env("master"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class WriteLock:
    """``BEGIN IMMEDIATE`` on a node's SQLite file: its writers wait (a slow disk)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, timeout=60, isolation_level=None)

    def __enter__(self) -> WriteLock:
        self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def test_a_move_never_commits_after_the_sources_freeze_lease_may_have_ended(tmp_path):
    with _cluster(tmp_path) as cluster:
        token = cluster.api_token
        _load(cluster, "t", lambda i: {"v": "old"})
        source, target = _owner(cluster, "t")
        run = _rebalance(cluster)
        try:
            _until(lambda: _rows(cluster, target, "t") > 0, what="the copy")
            with WriteLock(_db(cluster, "master")):  # from the catch-up on
                _until(lambda: _frozen(cluster, source, "t"), what="the freeze")
                frozen_at = time.monotonic()
                time.sleep(LEASE_S + 1.0)  # the source's lease has ended
                acked: dict[str, int] = {}

                def write() -> None:
                    status, body, _ = call(
                        "PATCH", f"{_api(cluster)}/t/rows/k0299", token, {"cells": {"v": "new"}}
                    )
                    acked["status"] = status

                writer = threading.Thread(target=write)
                writer.start()
                time.sleep(max(0.0, frozen_at + LEASE_S + 3.0 - time.monotonic()))
            writer.join(timeout=60)
            run.communicate(timeout=120)
        finally:
            run.kill()
        status, body, _ = call("GET", f"{_api(cluster, 1)}/t/rows/k0299", token)
        if acked.get("status") == 200:
            assert status == 200 and body["cells"]["v"] == "new", "an acknowledged write was lost"
        else:
            assert acked.get("status") == 503, acked
        # Whatever happened, the range has exactly one owner with every row.
        total = _rows(cluster, "tablet-1", "t") + _rows(cluster, "tablet-2", "t")
        assert total >= ROWS


def test_the_old_owner_stops_answering_reads_before_the_new_owner_takes_writes(tmp_path):
    with _cluster(tmp_path, DISTDB_FREEZE_LEASE_S="12", DISTDB_FREEZE_MARGIN_S="3") as cluster:
        token = cluster.api_token
        _load(cluster, "t", lambda i: {"v": "old"})
        source, target = _owner(cluster, "t")
        # client-1 routes with the metadata of before the move from now on.
        status, body, _ = call("GET", f"{_api(cluster, 0)}/t/rows/k0299", token)
        assert status == 200 and body["cells"]["v"] == "old"
        run = _rebalance(cluster)
        try:
            _until(lambda: _rows(cluster, target, "t") > 0, what="the copy")
            with WriteLock(_db(cluster, "master")):  # hold the move just before its commit
                _until(lambda: _frozen(cluster, source, "t"), what="the freeze")
                source_lock = WriteLock(_db(cluster, source)).__enter__()
            try:
                # The move commits and the target serves; the source cannot apply it yet.
                _until(lambda: bool(_owned(cluster, target, "t")), what="the hand-over", run=run)
                cluster.kill("client-2")
                cluster.start("client-2")  # learns the new metadata at start
                cluster.wait_ready("client-2")
                status, body, _ = call(
                    "PATCH", f"{_api(cluster, 1)}/t/rows/k0299", token, {"cells": {"v": "new"}}
                )
                assert status == 200, body
                status, body, _ = call("GET", f"{_api(cluster, 0)}/t/rows/k0299", token)
                assert not (status == 200 and body["cells"]["v"] == "old"), "a stale read"
            finally:
                source_lock.__exit__()
            run.communicate(timeout=120)
        finally:
            run.kill()
        status, body, _ = call("GET", f"{_api(cluster, 0)}/t/rows/k0299", token)
        assert status == 200 and body["cells"]["v"] == "new"


def test_large_non_ascii_rows_flow_through_collection_and_moves(tmp_path):
    with _cluster(tmp_path) as cluster:
        token = cluster.api_token
        _load(cluster, "t", lambda i: {"d": "中" * 400}, n=2000)  # 1.2 KB of UTF-8 per row
        # One row near the request limit: 7 MB of three-byte characters, sent as UTF-8.
        big = {"key": "k1250", "cells": {"d": "中" * (7 * 1024 * 1024 // 3)}}
        body = orjson.dumps({"mutations": [{"op": "upsert", **big}]})
        request = urllib.request.Request(
            f"{_api(cluster)}/t/rows:batch", data=body, method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=120) as resp:
            assert resp.status == 200
        out = cluster.manage("rebalance", "--no-progress", timeout=300)
        assert "succeeded" in out, out
        assert _rows(cluster, "tablet-1", "t") > 0 and _rows(cluster, "tablet-2", "t") > 0
        status, body, _ = call("GET", f"{_api(cluster, 1)}/t/rows/k1250", token, timeout=60)
        assert status == 200 and body["cells"]["d"] == big["cells"]["d"]
        consolidated = cluster.shell(
            "master",
            "from master_app.models import ConsolidatedRow as C; "
            "print(C.objects.filter(table__name='t').count())",
        )
        assert int(consolidated) == 2000

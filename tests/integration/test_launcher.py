"""The launcher's own operations against a real (small) cluster: pause and resume a client
server, SIGKILL and restart a tablet server, close leaving no process behind."""

from __future__ import annotations

import socket
import time
import urllib.error

import pytest

from distdb.cluster import ClusterConfig, LocalCluster, group_members
from tests.integration.api import call

pytestmark = pytest.mark.integration
ROWS = [{"key": k, "cells": {"n": k}} for k in range(1, 21)]


def _times_out(url: str, token: str) -> bool:
    try:
        call("GET", url, token, timeout=3)
    except TimeoutError:
        return True
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, TimeoutError)
    return False


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _until(predicate, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return result


def test_pause_resume_kill_restart_and_close_leave_the_cluster_as_promised(tmp_path):
    cfg = ClusterConfig.on_free_ports(tmp_path, tablets=1, clients=1, celery=False)
    cluster = LocalCluster(cfg).up()
    with cluster:
        assert sorted(cluster.processes) == [
            "client-1", "master", "redis", "tablet-1", "tablet-1-link"
        ]  # fmt: skip
        api, token = f"{cluster.node_url('client-1')}/api/v1", cluster.api_token
        status, body, _ = call("POST", f"{api}/tables/", token, {"name": "t", "key_type": "int"})
        assert status == 201, body
        assert call("POST", f"{api}/tables/t/rows", token, ROWS)[0] == 201

        # Paused, the client server keeps its port but answers nothing; resumed, it answers.
        cluster.pause("client-1")
        try:
            assert _times_out(f"{api}/tables/t/rows/1", token)
        finally:
            cluster.resume("client-1")
        assert call("GET", f"{api}/tables/t/rows/1", token)[:2] == (200, ROWS[0])

        # SIGKILL takes the tablet server's whole process group; after a restart (same
        # port, same data dir) its rows are served again.
        killed = cluster.processes["tablet-1"].pid
        assert killed is not None
        cluster.kill("tablet-1")
        assert group_members(killed) == []
        assert not cluster.processes["tablet-1"].running
        cluster.start("tablet-1")
        cluster.wait_ready("tablet-1", timeout=120)
        assert cluster.processes["tablet-1"].pid != killed

        def all_rows():
            status, body, _ = call("GET", f"{api}/tables/t/rows?start=1&end=100", token)
            return body["rows"] if status == 200 else None

        assert _until(all_rows, "the restarted tablet server's rows") == ROWS
        groups = [p.pid for p in cluster.processes.values()]

    assert not [pid for pid in groups if group_members(pid)]
    ports = [cfg.master_port, *cfg.tablet_ports, *cfg.client_ports, cfg.redis_port]
    assert not [p for p in ports if _listening(p)]
    assert cluster.log("tablet-1", lines=10**6).count("=== tablet-1 started") == 2

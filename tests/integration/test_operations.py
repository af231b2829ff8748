"""Operating a real cluster: /metrics, /healthz, /readyz on every role, request ids in logs.

One cluster for the module (no Celery: the test runs the rebalance itself), with JSON
logs and access lines on, so that a request can be followed from the client server's
log to the tablet server's.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from distdb.cluster import ClusterConfig, LocalCluster
from tests.integration.api import call
from tests.integration.conftest import FIXTURE

pytestmark = pytest.mark.integration

OPS_ENV = {
    "DISTDB_LOG_FORMAT": "json",
    "DISTDB_ACCESS_LOG": "1",
    "DISTDB_HEARTBEAT_S": "1",
}
TABLETS = ("tablet-1", "tablet-2")
CLIENTS = ("client-1", "client-2")


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    cfg = ClusterConfig.on_free_ports(tmp_path_factory.mktemp("ops"), celery=False, env=OPS_ENV)
    with LocalCluster(cfg).up() as cluster:
        cluster.seed(FIXTURE)
        yield cluster


def scrape(cluster: LocalCluster, node: str) -> dict[tuple[str, tuple], float]:
    status, body, headers = call("GET", f"{cluster.node_url(node)}/metrics", None)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain")
    text = body if isinstance(body, str) else body.decode()
    out: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(
        v
        for (n, lbls), v in samples.items()
        if n == name and all(dict(lbls).get(k) == want for k, want in labels.items())
    )


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def api(cluster: LocalCluster, client: str, method: str, path: str, body=None, headers=None):
    return call(method, f"{cluster.node_url(client)}/api/v1{path}", cluster.api_token, body)


# --- metrics ------------------------------------------------------------------------------------


def test_every_role_counts_the_requests_of_a_workload_in_its_metrics(ops):
    nodes = ("master", *TABLETS, *CLIENTS)
    before = {n: scrape(ops, n) for n in nodes}
    reads = {"client-1": 12, "client-2": 8}
    for client, n in reads.items():
        for i in range(n):
            status, body, _ = api(ops, client, "GET", f"/tables/products/rows/{1 + i * 83}")
            assert status == 200, body
    status, body, _ = api(
        ops,
        "client-1",
        "POST",
        "/tables/products/rows",
        [{"key": 5000 + i, "cells": {"n": i}} for i in range(3)],
    )
    assert status in (200, 201), body
    after = {n: scrape(ops, n) for n in nodes}

    def delta(node: str, name: str, **labels: str) -> float:
        return total(after[node], name, **labels) - total(before[node], name, **labels)

    for client, n in reads.items():
        got = delta(
            client,
            "distdb_http_requests_total",
            api="public",
            endpoint="row",
            method="GET",
            status="200",
        )
        assert got == n, client
        assert (
            delta(
                client, "distdb_http_request_duration_seconds_count", api="public", endpoint="row"
            )
            == n
        )
    assert (
        delta(
            "client-1", "distdb_http_requests_total", api="public", endpoint="rows", method="POST"
        )
        == 1
    )
    tablet_reads = sum(
        delta(t, "distdb_http_requests_total", api="internal", endpoint="read", status="200")
        for t in TABLETS
    )
    assert tablet_reads == sum(reads.values())
    tablet_writes = sum(
        delta(t, "distdb_http_requests_total", api="internal", endpoint="mutate") for t in TABLETS
    )
    assert tablet_writes >= 1
    # What the tablets hold, and the master's view of them.
    assert sum(total(after[t], "distdb_tablet_rows", table="products") for t in TABLETS) >= 1000
    assert all(total(after[t], "distdb_link_up") == 1 for t in TABLETS)
    assert all(total(after[t], "distdb_tablet_ranges", table="products") >= 1 for t in TABLETS)
    master = after["master"]
    assert total(master, "distdb_http_requests_total", api="internal", endpoint="metadata") >= 2
    # Both client servers asked which tablet servers' heartbeats stopped (their breakers).
    assert total(master, "distdb_http_requests_total", endpoint="servers", status="200") >= 2
    assert {t: total(master, "distdb_server_up", server=t) for t in TABLETS} == dict.fromkeys(
        TABLETS, 1
    )
    assert all(total(master, "distdb_server_heartbeat_age_seconds", server=t) < 10 for t in TABLETS)
    assert total(after["client-1"], "distdb_metadata_version") >= 1


def test_a_rebalance_run_in_another_process_shows_in_the_masters_metrics(ops):
    before = total(scrape(ops, "master"), "distdb_rebalance_runs_total")
    ops.manage("rebalance", "--dry-run")
    after = scrape(ops, "master")
    assert total(after, "distdb_rebalance_runs_total", dry_run="true") >= before + 1
    assert total(after, "distdb_rebalance_duration_seconds_count") >= 1
    # The recorded runs are read from the database, at most every 2 s.
    wait_for(
        "the recorded run",
        lambda: total(scrape(ops, "master"), "distdb_rebalance_runs_recorded") >= 1,
        timeout=10,
    )


# --- health ---------------------------------------------------------------------------------------


def readyz(cluster: LocalCluster, node: str) -> tuple[int, Any]:
    status, body, _ = call("GET", f"{cluster.node_url(node)}/readyz", None, timeout=10)
    return status, body


def test_every_role_is_alive_and_ready_without_a_token(ops):
    for node in ("master", *TABLETS, *CLIENTS):
        status, body, _ = call("GET", f"{ops.node_url(node)}/healthz", None)
        assert (status, body["node_id"]) == (200, node)
        status, body = readyz(ops, node)
        assert status == 200, (node, body)
        assert set(body["checks"].values()) == {"ok"}


def test_a_tablet_server_is_not_ready_while_its_link_is_down(ops):
    ops.kill("tablet-2-link")
    try:
        status, body = wait_for(
            "tablet-2 not ready", lambda: (s := readyz(ops, "tablet-2"))[0] == 503 and s
        )
        assert body["error"]["code"] == "not_ready"
        assert body["error"]["detail"]["checks"]["link_ready"] != "ok"
        assert readyz(ops, "tablet-1")[0] == 200  # its neighbour is not affected
        assert call("GET", f"{ops.node_url('tablet-2')}/healthz", None)[0] == 200  # alive
    finally:
        ops.start("tablet-2-link")
        ops.wait_ready("tablet-2-link", timeout=60)
    wait_for("tablet-2 ready again", lambda: readyz(ops, "tablet-2")[0] == 200)


# --- request ids ---------------------------------------------------------------------------------


def json_lines(cluster: LocalCluster, process: str) -> list[dict[str, Any]]:
    lines = []
    for raw in cluster.log(process, lines=5000).splitlines():
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
    return lines


def test_one_requests_client_and_tablet_log_lines_share_its_request_id(ops):
    import urllib.request

    rid = f"itest-{uuid.uuid4().hex[:12]}"
    request = urllib.request.Request(f"{ops.node_url('client-1')}/api/v1/tables/products/rows/42")
    request.add_header("Authorization", f"Bearer {ops.api_token}")
    request.add_header("X-Request-ID", rid)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert response.headers["X-Request-ID"] == rid

    def line(process: str) -> dict[str, Any] | None:
        return next(
            (entry for entry in json_lines(ops, process) if entry.get("request_id") == rid), None
        )

    client_line = wait_for("the client's access line", lambda: line("client-1"))
    assert client_line["logger"] == "distdb.access"
    assert client_line["path"] == "/api/v1/tables/products/rows/42"
    assert client_line["status"] == 200 and client_line["node"] == "client-1"
    tablet_line = wait_for("a tablet's access line", lambda: line("tablet-1") or line("tablet-2"))
    assert tablet_line["path"] == "/internal/v1/read"
    assert tablet_line["role"] == "tablet"

    # Without one, the client server makes an id and returns it.
    status, _, headers = api(ops, "client-2", "GET", "/tables/products/rows/43")
    headers = {k.lower(): v for k, v in headers.items()}
    assert status == 200 and len(headers["x-request-id"]) == 16


# --- a hung tablet server -------------------------------------------------------------------------


def key_on(cluster: LocalCluster, server: str) -> int:
    """A products key that ``server`` holds (the start of its first range)."""
    status = json.loads(cluster.manage("cluster_status", "--json"))
    mine = next(s for s in status["servers"] if s["node_id"] == server)
    first = next(t for t in mine["tablets"] if t["table"] == "products")
    return 1 if first["start"] == "-inf" else int(first["start"])


def timed_get(cluster: LocalCluster, client: str, key: int) -> tuple[int, Any, dict, float]:
    started = time.monotonic()
    status, body, headers = api(cluster, client, "GET", f"/tables/products/rows/{key}")
    return status, body, {k.lower(): v for k, v in headers.items()}, time.monotonic() - started


def test_a_paused_tablet_servers_keys_fail_fast_after_the_first_timeout(ops):
    hung, healthy = key_on(ops, "tablet-2"), key_on(ops, "tablet-1")
    assert timed_get(ops, "client-1", hung)[0] == 200
    ops.pause("tablet-2")
    try:
        status, body, _, _ = timed_get(ops, "client-1", hung)  # waits out the call timeout
        assert status == 503, body
        for _ in range(5):
            status, body, headers, took = timed_get(ops, "client-1", hung)
            assert status == 503, body
            assert body["error"]["code"] == "tablet_unavailable"
            assert body["error"]["detail"]["reason"] == "circuit_open"
            assert int(headers["retry-after"]) >= 1
            assert took <= 1.0, f"a fast failure took {took:.2f} s"
            status, body, _, took = timed_get(ops, "client-1", healthy)
            assert status == 200, body  # the other server's keys are served as usual
        metrics = scrape(ops, "client-1")
        assert total(metrics, "distdb_breaker_open", server="tablet-2") == 1
        assert total(metrics, "distdb_breaker_open", server="tablet-1") == 0
        assert total(metrics, "distdb_breaker_rejected_calls_total", server="tablet-2") >= 5
    finally:
        ops.resume("tablet-2")
    # Served again within seconds: the next probe after the open period finds it.
    wait_for("tablet-2's keys served again", lambda: timed_get(ops, "client-1", hung)[0] == 200, 15)
    assert total(scrape(ops, "client-1"), "distdb_breaker_open", server="tablet-2") == 0

"""Every role on its own host: Linux network namespaces joined by veth pairs to a bridge.

The master, each tablet server (with its link agent), each client server and Redis run in
a network namespace of their own with their own address (``ip netns exec``; the launcher's
``ClusterConfig.hosts``/``netns``). Inside a namespace 127.0.0.1 reaches nothing but the
namespace itself, so a role that assumed its peers on localhost would fail here. The test
drives CRUD through both client servers and one rebalance that moves data.

It needs root and namespaces (CI runs as root); elsewhere it is skipped, saying why.
Databases are SQLite files in the one shared data directory, which also carries the keys
and tokens: what an operator copies between real hosts is in docs/deploy.md.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from distdb.cluster import ClusterConfig, LocalCluster
from tests.integration.api import call
from tests.integration.conftest import FIXTURE

pytestmark = pytest.mark.integration

NAMES = ("master", "tablet-1", "tablet-2", "client-1", "client-2", "redis")


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)


class Network:
    """A bridge with one namespace per name, each with an address on the bridge's subnet."""

    def __init__(self) -> None:
        tag = secrets.token_hex(2)
        self.subnet = f"10.213.{secrets.randbelow(200) + 20}"
        self.bridge = f"ddbr{tag}"
        self.namespaces = {name: f"distdb-{tag}-{name}" for name in NAMES}
        self.hosts = {name: f"{self.subnet}.{10 + i}" for i, name in enumerate(NAMES)}
        self._veths: list[str] = []
        self._iptables = False

    def create(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        if shutil.which("iptables"):  # a host firewall (Docker's) may drop bridged traffic
            try:
                sh(
                    "iptables",
                    "-I",
                    "FORWARD",
                    "-i",
                    self.bridge,
                    "-o",
                    self.bridge,
                    "-j",
                    "ACCEPT",
                )
                self._iptables = True
            except subprocess.CalledProcessError:
                pass
        for i, name in enumerate(NAMES):
            ns, host_end, ns_end = self.namespaces[name], f"{self.bridge}h{i}", f"{self.bridge}n{i}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            self._veths.append(host_end)
            sh("ip", "link", "set", ns_end, "netns", ns)
            sh(
                "ip",
                "netns",
                "exec",
                ns,
                "ip",
                "addr",
                "add",
                f"{self.hosts[name]}/24",
                "dev",
                ns_end,
            )
            sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_end, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "link", "set", host_end, "master", self.bridge)
            sh("ip", "link", "set", host_end, "up")

    def destroy(self) -> None:
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        for veth in self._veths:
            subprocess.run(["ip", "link", "del", veth], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
        if self._iptables:
            subprocess.run(
                ["iptables", "-D", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"],
                capture_output=True,
                timeout=30,
            )


def namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be made here (None if they can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if not shutil.which("ip"):
        return "needs iproute2's `ip` command"
    probe = f"distdb-probe-{secrets.token_hex(3)}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot create a network namespace here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.fixture(scope="module")
def hosts(tmp_path_factory) -> Iterator[LocalCluster]:
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(f"multi-host test skipped: {reason}")
    network = Network()
    try:
        network.create()
    except subprocess.CalledProcessError as exc:
        network.destroy()
        pytest.skip(f"multi-host test skipped: could not build the network: {exc.stderr}")
    try:
        base = ClusterConfig.on_free_ports(tmp_path_factory.mktemp("hosts"), celery=False)
        cfg = ClusterConfig(
            data_dir=base.data_dir,
            host=network.hosts["master"],  # never used for a node: each has its own
            master_port=base.master_port,
            tablet_ports=base.tablet_ports,
            client_ports=base.client_ports,
            redis_url=f"redis://{network.hosts['redis']}:{base.redis_port}/0",
            celery=False,
            env={"DISTDB_HEARTBEAT_S": "1"},
            hosts=dict(network.hosts),
            netns=dict(network.namespaces),
        )
        with LocalCluster(cfg, redis=True).up() as cluster:
            cluster.seed(FIXTURE)
            yield cluster
    finally:
        network.destroy()


def api(cluster: LocalCluster, client: str, method: str, path: str, body: Any = None):
    return call(method, f"{cluster.node_url(client)}/api/v1{path}", cluster.api_token, body)


def test_every_role_listens_on_its_own_address_and_is_ready(hosts):
    cfg = hosts.cfg
    addresses = {cfg.host_of(n) for n in ("master", "tablet-1", "tablet-2", "client-1", "client-2")}
    assert len(addresses) == 5 and not addresses & {"127.0.0.1", "localhost"}
    for node in ("master", "tablet-1", "tablet-2", "client-1", "client-2"):
        url = hosts.node_url(node)
        assert url.startswith(f"http://{cfg.host_of(node)}:")
        status, body, _ = call("GET", f"{url}/readyz", None, timeout=10)
        assert status == 200, (node, body)


def test_crud_works_through_both_client_servers(hosts):
    key = 700_001
    status, body, _ = api(
        hosts,
        "client-1",
        "POST",
        "/tables/products/rows",
        [{"key": key, "cells": {"name": "netns", "n": 1}}],
    )
    assert status in (200, 201), body
    status, body, _ = api(hosts, "client-2", "GET", f"/tables/products/rows/{key}")
    assert status == 200 and body["cells"] == {"name": "netns", "n": 1}, body
    status, body, _ = api(
        hosts,
        "client-2",
        "PATCH",
        f"/tables/products/rows/{key}",
        {"cells": {"n": 2, "extra": True}},
    )
    assert status == 200, body
    status, body, _ = api(hosts, "client-1", "GET", f"/tables/products/rows/{key}")
    assert body["cells"] == {"name": "netns", "n": 2, "extra": True}, body
    status, body, _ = api(
        hosts, "client-1", "DELETE", f"/tables/products/rows/{key}/cells?columns=extra"
    )
    assert status == 200, body
    status, body, _ = api(hosts, "client-2", "GET", f"/tables/products/rows/{key}")
    assert body["cells"] == {"name": "netns", "n": 2}, body
    status, body, _ = api(hosts, "client-2", "DELETE", f"/tables/products/rows/{key}")
    assert status in (200, 204), body
    status, body, _ = api(hosts, "client-1", "GET", f"/tables/products/rows/{key}")
    assert status == 404 and body["error"]["code"] == "row_not_found", body
    status, body, _ = api(hosts, "client-1", "GET", "/tables/products/rows?keys=1,500,999")
    assert status == 200 and [r["key"] for r in body["rows"]] == [1, 500, 999], body


def test_a_rebalance_moves_data_between_hosts_and_both_clients_follow(hosts):
    for client in ("client-1", "client-2"):  # both cache the metadata before it changes
        assert api(hosts, client, "GET", "/tables/products/rows/900")[0] == 200
    hosts.manage("drain", "tablet-2")
    run = json.loads(hosts.manage("rebalance", "--json").strip().splitlines()[-1])
    assert run["outcome"] == "succeeded", run
    assert run["rows_moved"] >= 400
    status = json.loads(hosts.manage("cluster_status", "--json"))
    owners = {s["node_id"]: len(s["tablets"]) for s in status["servers"]}
    assert owners["tablet-2"] == 0 and owners["tablet-1"] >= 1, owners
    deadline = time.monotonic() + 30
    for client in ("client-1", "client-2"):  # routed anew after "outdated" from tablet-2
        for key in (1, 500, 900, 1000):
            while True:
                status, body, _ = api(hosts, client, "GET", f"/tables/products/rows/{key}")
                if status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert status == 200 and body["key"] == key, (client, key, body)

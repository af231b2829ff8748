"""Every role on its own host: Linux network namespaces joined by veth pairs to a bridge.

The master, each tablet server (with its link agent), each client server and Redis run in
a network namespace of their own with their own address (``ip netns exec``; the launcher's
``ClusterConfig.hosts``/``netns``). Inside a namespace 127.0.0.1 reaches nothing but the
namespace itself, so a role that assumed its peers on localhost would fail here. The test
drives CRUD through both client servers and one rebalance that moves data.

Each tablet server keeps its rows in a PostgreSQL database of its own on a database host
(a throw-away PostgreSQL server in a namespace too), where the machine has PostgreSQL's
server programs; else in SQLite files, saying so. The master and client servers use
SQLite. The one shared data directory carries the keys and tokens: what an operator
copies between real hosts is in docs/deploy.md.

It needs root and namespaces (CI runs as root); elsewhere it is skipped, saying why.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distdb.cluster import ClusterConfig, LocalCluster
from tests.integration.api import call
from tests.integration.conftest import FIXTURE

pytestmark = pytest.mark.integration

NAMES = ("master", "tablet-1", "tablet-2", "client-1", "client-2", "redis", "postgres")
TABLETS = ("tablet-1", "tablet-2")


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


class Postgres:
    """A throw-away PostgreSQL server in the "postgres" namespace, one database per tablet."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.host = network.hosts["postgres"]
        initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        self.bin = Path(initdb[-1]).parent if initdb else None
        self.dir: Path | None = None
        self.started = False

    def start(self) -> dict[str, dict[str, str]]:
        """Start it; each tablet's DISTDB_DATABASE_URL ({} without PostgreSQL here)."""
        if self.bin is None or not shutil.which("runuser"):
            warnings.warn("no PostgreSQL server programs: tablet servers use SQLite", stacklevel=2)
            return {}
        self.dir = Path(tempfile.mkdtemp(prefix="distdb-netns-pg-"))
        self.dir.chmod(0o755)
        shutil.chown(self.dir, "postgres")
        data = self.dir / "data"
        as_pg = ("runuser", "-u", "postgres", "--")
        sh(*as_pg, str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.network.subnet}.0/24 trust\n")
        ns = self.network.namespaces["postgres"]
        options = f"-p 5432 -k {self.dir} -c listen_addresses={self.host} -c fsync=off"
        sh(
            "ip", "netns", "exec", ns, *as_pg, str(self.bin / "pg_ctl"), "-D", str(data),
            "-o", options, "-l", str(self.dir / "log"), "-w", "start",
        )  # fmt: skip
        self.started = True
        urls = {}
        for tablet in TABLETS:
            name = f"distdb_{tablet.replace('-', '_')}"
            sh("ip", "netns", "exec", ns, *as_pg, "psql", "-h", self.host, "-U", "postgres",
               "-c", f"CREATE DATABASE {name}")  # fmt: skip
            urls[tablet] = {"DISTDB_DATABASE_URL": f"postgres://postgres@{self.host}:5432/{name}"}
        return urls

    def stop(self) -> None:
        if self.started and self.bin is not None and self.dir is not None:
            subprocess.run(
                ["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D",
                 str(self.dir / "data"), "-m", "immediate", "stop"],
                capture_output=True, timeout=60,
            )  # fmt: skip
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


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
    postgres = Postgres(network)
    try:
        databases = postgres.start()
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
            env_by_node=databases,
        )
        with LocalCluster(cfg, redis=True) as cluster:
            cluster.prepare()
            # prepare migrated every node as the master sees it (SQLite); each tablet now
            # migrates its own database, from its own host.
            for tablet in databases:
                admin = {"DISTDB_ADMIN_PASSWORD": cluster.admin_password}
                cluster.manage("setup_node", node=tablet, env=admin)
            cluster.start()
            cluster.wait_ready(timeout=240)
            cluster.seed(FIXTURE)
            yield cluster
    finally:
        postgres.stop()
        network.destroy()


def api(cluster: LocalCluster, client: str, method: str, path: str, body: Any = None):
    return call(method, f"{cluster.node_url(client)}/api/v1{path}", cluster.api_token, body)


def test_each_tablet_server_stores_its_rows_in_its_own_database_host(hosts):
    urls = {t: hosts.cfg.env_by_node.get(t, {}).get("DISTDB_DATABASE_URL") for t in TABLETS}
    if not all(urls.values()):
        pytest.skip("no PostgreSQL server programs here: the tablet servers use SQLite")
    for tablet, url in urls.items():
        code = (
            "from django.db import connection;"
            "print(connection.vendor, connection.settings_dict['HOST'])"
        )
        assert hosts.shell(tablet, code) == f"postgresql {hosts.cfg.host_of('postgres')}", url
        rows = hosts.shell(tablet, "from tablet_app.models import Row; print(Row.objects.count())")
        assert int(rows) > 0


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

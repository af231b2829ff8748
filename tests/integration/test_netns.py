"""The launcher's network-namespace mode: every host its own address; links can be cut.

The fault harness's partition nemesis stands on this; here it is checked directly: the
cluster comes up with each host in its own namespace, serves through both client
servers, and a cut between the client servers and one tablet server fails only that
server's keys, until the cut is healed.
"""

from __future__ import annotations

import time

import pytest

from distdb.cluster import ClusterConfig, LocalCluster
from distdb.cluster.netns import netns_available
from tests.integration.api import call
from tests.integration.conftest import FIXTURE, TEST_ENV

pytestmark = pytest.mark.integration

WHY_NOT = netns_available()


@pytest.mark.skipif(WHY_NOT is not None, reason=f"no network namespaces here: {WHY_NOT}")
def test_hosts_in_namespaces_serve_and_a_cut_fails_only_the_cut_servers_keys(tmp_path):
    cfg = ClusterConfig.on_free_ports(
        tmp_path, netns=True, env={**TEST_ENV, "DISTDB_TABLET_TIMEOUT_S": "2"}
    )
    with LocalCluster(cfg).up() as cluster:
        cluster.seed(FIXTURE)
        assert len({cfg.host_of(n) for n in cfg.node_ids}) == len(cfg.node_ids)
        token = cluster.api_token
        rows = [f"{url}/api/v1/tables/products/rows" for url in cluster.client_urls]
        for base in rows:  # both client servers, keys of both tablets
            status, body, _ = call("GET", f"{base}?keys=1,1000", token)
            assert status == 200 and len(body["rows"]) == 2, body
        assert call("PATCH", f"{rows[1]}/1000", token, {"cells": {"v": 1}})[0] == 200

        cfg.network.cut("client-1", "tablet-1")
        answers = {key: call("GET", f"{rows[0]}/{key}", token) for key in (1, 1000)}
        assert sorted(a[0] for a in answers.values()) == [200, 503], answers
        [cut_off] = [a[1] for a in answers.values() if a[0] == 503]
        assert cut_off["error"]["code"] == "tablet_unavailable", cut_off
        assert cut_off["error"]["detail"]["server"] == "tablet-1", cut_off
        for key in (1, 1000):  # client-2 is not cut off
            assert call("GET", f"{rows[1]}/{key}", token)[0] == 200
        cfg.network.heal()
        # The client server's breaker for tablet-1 opened at the timeout: it closes when a
        # probe gets through again, within seconds.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all(call("GET", f"{rows[0]}/{key}", token)[0] == 200 for key in (1, 1000)):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("client-1 did not serve tablet-1's keys again after the heal")

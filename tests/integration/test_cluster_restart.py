"""Ctrl-C stops every process of the cluster; a restart keeps the data and does not re-seed."""

from __future__ import annotations

import socket

import pytest

from tests.integration.api import call
from tests.integration.conftest import start_cluster, stop_cluster

pytestmark = pytest.mark.integration


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ctrl_c_stops_everything_and_a_restart_keeps_the_data(tmp_path):
    first = start_cluster(tmp_path)
    api = f"{first.url(first.client_ports[0])}/api/v1"
    try:
        status, body, _ = call(
            "POST",
            f"{api}/tables/products/rows",
            first.api_token,
            [{"key": 5000, "cells": {"product_name": "kept"}}],
        )
        assert status == 201, body
    finally:
        stop_cluster(first)
    ports = [first.master_port, *first.tablet_ports, *first.client_ports, first.redis_port]
    assert not [p for p in ports if _listening(p)]

    second = start_cluster(tmp_path)
    try:
        api = f"{second.url(second.client_ports[1])}/api/v1"
        status, body, _ = call("GET", f"{api}/tables/products/rows/5000", second.api_token)
        assert (status, body["cells"]) == (200, {"product_name": "kept"})
        assert "products already seeded" in second.log()
    finally:
        stop_cluster(second)

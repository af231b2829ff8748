"""`manage.py runcluster` (`make run`): it prints where everything is, Ctrl-C stops every
process of the cluster, and a restart keeps the data and does not re-seed.

The command runs as one launcher ``Process`` (its own process group, output to a log
file), so the test sends Ctrl-C's SIGINT exactly as a terminal would.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import time

import pytest

from distdb.cluster import ClusterConfig, Process, ProcessSpec, group_members
from distdb.cluster.config import MANAGE_PY
from tests.integration.api import call
from tests.integration.conftest import TEST_ENV

pytestmark = pytest.mark.integration
READY = "distdb local cluster is up"


# Started as a shell without job control starts a background command (`make run &`, a CI
# script): SIGINT ignored, and inherited across exec. Ctrl-C must stop it all the same.
SIGINT_IGNORED = (
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
)


def runcluster(cfg: ClusterConfig, run: int) -> Process:
    """``manage.py runcluster`` on ``cfg``'s ports, up and seeded."""
    argv = (
        sys.executable,
        *SIGINT_IGNORED,
        str(MANAGE_PY),
        "runcluster",
        *("--master-port", str(cfg.master_port)),
        *("--tablet-ports", ",".join(map(str, cfg.tablet_ports))),
        *("--client-ports", ",".join(map(str, cfg.client_ports))),
    )
    env = {**TEST_ENV, "DISTDB_DATA_DIR": str(cfg.data_dir), "DISTDB_REDIS_URL": cfg.redis_url}
    spec = ProcessSpec("runcluster", "", argv, env, ready_line=READY)
    proc = Process(spec, cfg.data_dir / f"runcluster-{run}.log")
    proc.start()
    try:
        proc.wait_ready(time.monotonic() + 240)
    except BaseException:
        proc.stop()
        raise
    return proc


def ctrl_c(proc: Process) -> list[int]:
    """SIGINT to the command (a terminal's Ctrl-C); the pids it had started."""
    started = [int(p) for p in re.findall(r"started \(pid=(\d+)\)", proc.log_tail(10**6))]
    proc.signal(signal.SIGINT)
    assert proc.popen is not None
    # Every process gets SIGTERM at once and up to 20 s, then Redis its 20 s: ~10 s on a
    # quiet machine, longer on a loaded one (CI beside a fault-harness run took over 60 s).
    proc.popen.wait(120)
    return started


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> ClusterConfig:
    return ClusterConfig.on_free_ports(tmp_path_factory.mktemp("runcluster"))


@pytest.fixture(scope="module")
def first(cfg):
    proc = runcluster(cfg, 1)
    yield proc
    if proc.running:
        ctrl_c(proc)


def test_the_summary_says_where_everything_is_but_prints_no_secret(cfg, first):
    log = first.log_tail(10**6)
    for port in (cfg.master_port, *cfg.tablet_ports, *cfg.client_ports):
        assert f"127.0.0.1:{port}/admin/" in log
    token = (cfg.data_dir / "api-token").read_text().strip()
    password = (cfg.data_dir / "admin-password").read_text().strip()
    assert token not in log and password not in log
    assert str(cfg.data_dir / "api-token") in log and str(cfg.data_dir / "admin-password") in log
    assert (cfg.data_dir / "api-token").stat().st_mode & 0o077 == 0


def test_ctrl_c_stops_everything_and_a_restart_keeps_the_data(cfg, first):
    token = (cfg.data_dir / "api-token").read_text().strip()
    api = f"{cfg.url(cfg.client_ports[0])}/api/v1"
    try:
        status, body, _ = call(
            "POST",
            f"{api}/tables/products/rows",
            token,
            [{"key": 5000, "cells": {"product_name": "kept"}}],
        )
        assert status == 201, body
    finally:
        started = ctrl_c(first)
    # redis, master, worker, beat, 2 tablets (uvicorn, each with its link inside), 2 clients
    assert len(started) == 8
    assert not [pid for pid in started if group_members(pid)]
    ports = [cfg.master_port, *cfg.tablet_ports, *cfg.client_ports, cfg.redis_port]
    assert not [p for p in ports if _listening(p)]

    second = runcluster(cfg, 2)
    try:
        api = f"{cfg.url(cfg.client_ports[1])}/api/v1"
        status, body, _ = call("GET", f"{api}/tables/products/rows/5000", token)
        assert status == 200, body
        assert body["cells"] == {"product_name": "kept"}
        assert "products already seeded" in second.log_tail(10**6)
    finally:
        ctrl_c(second)

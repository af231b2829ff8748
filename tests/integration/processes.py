"""A local cluster whose processes the tests start, SIGKILL and restart one by one.

``manage.py runcluster --prepare-only`` prepares every node (keys, tokens, databases,
admin users, API token) and lists the processes; this harness runs each of them itself
(honcho, used by ``runcluster``, stops the whole cluster when one process dies, which
is right for ``make run`` and wrong for crash tests). Celery worker and beat are left
out: the tests trigger collection and rebalancing themselves, at moments they choose.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.api import call
from tests.integration.conftest import ROOT, free_ports

# Short leases so that crash tests recover in seconds (the defaults are 10 s and 30 s).
FAST_LEASES = {
    "DISTDB_FREEZE_LEASE_S": "5",
    "DISTDB_FREEZE_MARGIN_S": "2",
    "DISTDB_REBALANCE_LEASE_S": "6",
    "DISTDB_MOVE_COPY_CHUNK": "1000",
    "DISTDB_HEARTBEAT_S": "1",
}


@dataclass
class Harness:
    data_dir: Path
    ports: dict[str, int]
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    running: dict[str, subprocess.Popen] = field(default_factory=dict)
    api_token: str = ""

    # --- processes ------------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        return {
            **env,
            **FAST_LEASES,
            "DISTDB_DATA_DIR": str(self.data_dir),
            "DISTDB_REDIS_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",
            "PYTHONUNBUFFERED": "1",
        }

    def prepare(self) -> None:
        p = self.ports
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "runcluster",
                "--prepare-only",
                "--master-port",
                str(p["master"]),
                "--tablet-ports",
                f"{p['tablet-1']},{p['tablet-2']},{p['tablet-3']}",
                "--client-ports",
                f"{p['client-1']},{p['client-2']}",
            ],
            env=self.base_env(),
            capture_output=True,
            text=True,
            timeout=180,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        info = json.loads(done.stdout.strip().splitlines()[-1])
        self.api_token = info["api_token"]
        for proc in info["processes"]:
            if proc["name"] in ("worker", "beat"):
                continue
            self.specs[proc["name"]] = proc

    def start(self, *names: str) -> None:
        for name in names or list(self.specs):
            spec = self.specs[name]
            log = open(self.data_dir / f"{name}.log", "a")  # noqa: SIM115 - kept by the process
            self.running[name] = subprocess.Popen(
                shlex.split(spec["command"]),
                env={**self.base_env(), **spec["env"]},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )

    def kill(self, *names: str, sig: int = signal.SIGKILL) -> None:
        for name in names:
            proc = self.running.pop(name)
            proc.send_signal(sig)
            proc.wait(30)

    def stop_all(self) -> None:
        for name in list(self.running):
            proc = self.running.pop(name)
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def wait_up(self, *nodes: str, timeout: float = 90) -> None:
        for node in nodes:
            url = f"http://127.0.0.1:{self.ports[node]}/admin/login/"
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{node} did not come up:\n{self.log(node)}") from None
                    time.sleep(0.3)

    def log(self, name: str, lines: int = 60) -> str:
        path = self.data_dir / f"{name}.log"
        return "".join(path.read_text().splitlines(True)[-lines:]) if path.exists() else ""

    # --- master commands ------------------------------------------------------------------

    def master_env(self) -> dict[str, str]:
        return {**self.base_env(), **self.specs["master"]["env"]}

    def manage(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        done = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.master_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def manage_async(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env={**self.master_env(), "DISTDB_LOG_LEVEL": "INFO"},
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
        url = f"http://127.0.0.1:{self.ports[f'client-{client}']}/api/v1{path}"
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
    names = ["master", "tablet-1", "tablet-2", "tablet-3", "client-1", "client-2", "redis"]
    harness = Harness(tmp, dict(zip(names, free_ports(len(names)), strict=True)))
    harness.prepare()
    harness.start(*(n for n in harness.specs if not n.startswith("tablet-3")))
    harness.wait_up("master", "tablet-1", "tablet-2", "client-1", "client-2")
    fixture = str(ROOT / "fixtures" / "products.jsonl")
    harness.manage("cluster_seed", "--fixture", fixture, "--tablets", "2", "--no-progress")
    return harness

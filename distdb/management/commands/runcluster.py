"""``manage.py runcluster`` (``make run``): the whole local cluster in one command.

Prepares keys, tokens, databases and admin users, starts Redis if none is reachable,
runs the master (+ Celery worker and beat), the tablet servers (+ their links) and the
client servers under honcho, seeds the master from the fixture on first start, and
prints where everything is. Ctrl-C stops every process it started.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from honcho.manager import Manager

from distdb.cluster import ClusterConfig, cluster_prepare, cluster_processes, manage


def _ports(text: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise CommandError(f"not a list of ports: {text!r}") from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise CommandError(f"not a list of ports: {text!r}")
    return ports


class Command(BaseCommand):
    help = "Run a local distdb cluster: master, tablet servers, client servers, Celery, Redis."

    def add_arguments(self, parser):
        parser.add_argument("--master-port", type=int, default=3000)
        parser.add_argument("--tablet-ports", default="7000,8000")
        parser.add_argument("--client-ports", default="5000,6000")
        parser.add_argument(
            "--fixture", type=Path, default=settings.BASE_DIR / "fixtures" / "products.jsonl"
        )
        parser.add_argument("--no-seed", action="store_true", help="Do not seed from the fixture.")
        parser.add_argument(
            "--prepare-only",
            action="store_true",
            help="Prepare every node, print the processes to run as JSON, and exit "
            "(to run them under another supervisor, e.g. systemd or a test harness).",
        )

    def handle(self, *args, **options):
        if settings.DISTDB_ROLE != "master":
            raise CommandError("run it with the master's settings (the default)")
        cfg = ClusterConfig(
            data_dir=settings.DISTDB_DATA_DIR,
            host=settings.DISTDB_HOST,
            master_port=options["master_port"],
            tablet_ports=_ports(options["tablet_ports"]),
            client_ports=_ports(options["client_ports"]),
            redis_url=settings.DISTDB_REDIS_URL,
            fixture=None if options["no_seed"] else options["fixture"],
        )
        try:
            info = cluster_prepare(cfg, log=lambda m: self.stdout.write(f"[prepare] {m}"))
            processes = cluster_processes(cfg)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None

        if options["prepare_only"]:
            procs = [{"name": n, "command": c, "env": e} for n, c, e in processes]
            self.stdout.write(json.dumps({"processes": procs, **info}))
            return
        manager = Manager()
        for name, command, env in processes:
            manager.add_process(name, command, env={**os.environ, **env})
        threading.Thread(target=self._when_ready, args=(cfg, info, manager), daemon=True).start()
        manager.loop()
        sys.exit(manager.returncode)

    def _when_ready(self, cfg: ClusterConfig, info: dict[str, str], manager: Manager) -> None:
        """Wait for every node, seed on first start, then print the summary."""
        try:
            for node in cfg.nodes:
                _wait_http(f"http://{cfg.host}:{node.port}/admin/login/", timeout=90)
            if cfg.fixture is not None:
                out = manage(
                    cfg,
                    cfg.nodes[0],
                    "cluster_seed",
                    "--fixture",
                    str(cfg.fixture),
                    "--tablets",
                    str(len(cfg.tablet_ports)),
                    "--no-progress",
                )
                self.stdout.write(f"[seed] {out.strip()}")
        except Exception as exc:  # report and stop the cluster rather than run half-ready
            self.stderr.write(f"[cluster] not ready: {exc}")
            manager.terminate()
            return
        lines = ["", "distdb local cluster is up", ""]
        for node in cfg.nodes:
            url = f"http://{cfg.host}:{node.port}"
            lines.append(f"  {node.node_id:<10} {url}/admin/   (admin / {info['admin_password']})")
        api = f"http://{cfg.host}:{cfg.client_ports[0]}"
        lines += [
            "",
            f"  REST API   {api}/api/v1/tables/   docs: {api}/api/docs/",
            f"  API token  {info['api_token']}",
            f"             (also in {cfg.data_dir / 'api-token'})",
            "",
            f'  try: curl -H "Authorization: Bearer $(cat {cfg.data_dir / "api-token"})" '
            f"{api}/api/v1/tables/products/rows/1",
            "  Ctrl-C stops everything.",
            "",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")
        time.sleep(0.3)

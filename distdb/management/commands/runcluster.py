"""``manage.py runcluster`` (``make run``): the whole local cluster in one command.

Prepares keys, tokens, databases and admin users, then starts every process through the
project's one launcher (``distdb.cluster.LocalCluster``: Redis if none is reachable, the
master with its Celery worker and beat, the tablet servers with their links, the client
servers), echoes their output, seeds the master from the fixture on first start, and
prints where everything is. Ctrl-C (or SIGTERM) stops every process it started; so does
any process exiting on its own, rather than running on half a cluster.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from distdb.cluster import ClusterConfig, ClusterError, LocalCluster
from distdb.cluster.config import DEFAULT_SERVER, LOCAL_HOSTS, SERVERS
from distdb.cluster.prepare import cluster_prepare


def _node_hosts(text: str) -> dict[str, str]:
    try:
        pairs = [item.split("=", 1) for item in text.split(",") if item]
        return {node.strip(): host.strip() for node, host in pairs}
    except ValueError:
        raise CommandError(f"--node-hosts {text!r}: give node=address,...") from None


def _optional_path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _ports(text: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise CommandError(f"not a list of ports: {text!r}") from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise CommandError(f"not a list of ports: {text!r}")
    return ports


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt  # SIGTERM stops the cluster the way Ctrl-C does


class Command(BaseCommand):
    help = "Run a local distdb cluster: master, tablet servers, client servers, Celery, Redis."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--master-port", type=int, default=3000)
        parser.add_argument("--tablet-ports", default="7000,8000")
        parser.add_argument(
            "--tablets",
            type=int,
            default=0,
            help="number of tablet servers, on ports 7000, 8000, 9000, ... (overrides "
            "--tablet-ports)",
        )
        parser.add_argument(
            "--rf",
            type=int,
            default=2,
            choices=range(1, 6),
            help="replication factor of tables created without one (default 2: a leader "
            "and a follower per range; 1: no replicas)",
        )
        parser.add_argument("--client-ports", default="5000,6000")
        parser.add_argument(
            "--node-hosts",
            default="",
            help="node=address,... for nodes that do not listen on DISTDB_HOST "
            "(hosts of their own; the tablets' tokens name their URLs).",
        )
        parser.add_argument(
            "--fixture", type=Path, default=settings.BASE_DIR / "fixtures" / "products.jsonl"
        )
        parser.add_argument("--no-seed", action="store_true", help="Do not seed from the fixture.")
        parser.add_argument(
            "--ready-timeout",
            type=float,
            default=180,
            help="Seconds every process gets to come up (default 180).",
        )
        parser.add_argument(
            "--server",
            choices=SERVERS,
            default=DEFAULT_SERVER,
            help=f"HTTP server of the tablet and client servers (default {DEFAULT_SERVER}, "
            "chosen by measurement; daphne is manage.py runserver). The master always "
            "runs runserver.",
        )
        parser.add_argument(
            "--client-workers", type=int, default=1, help="worker processes per client server"
        )
        parser.add_argument(
            "--separate-link",
            action="store_true",
            help="run each tablet's link as its own process (always so under daphne)",
        )
        parser.add_argument(
            "--prepare-only",
            action="store_true",
            help="Prepare every node, print the processes to run as JSON, and exit "
            "(what LocalCluster.prepare runs; or to run them under another supervisor).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.DISTDB_ROLE != "master":
            raise CommandError("run it with the master's settings (the default)")
        cfg = ClusterConfig(  # raises ClusterError on a bad combination
            data_dir=settings.DISTDB_DATA_DIR,
            host=settings.DISTDB_HOST,
            master_port=options["master_port"],
            tablet_ports=(
                [7000 + 1000 * i for i in range(options["tablets"])]
                if options["tablets"] > 0
                else _ports(options["tablet_ports"])
            ),
            client_ports=_ports(options["client_ports"]),
            hosts=_node_hosts(options["node_hosts"]),
            # The URL as configured, without the password a file adds (the processes
            # are given the file, and --prepare-only's output must not hold secrets).
            redis_url=os.environ.get("DISTDB_REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_password_file=_optional_path(os.environ.get("DISTDB_REDIS_PASSWORD_FILE")),
            server=options["server"],
            client_workers=options["client_workers"],
            # One process per tablet server where the server has lifespan (DESIGN §5).
            link_in_server=options["server"] != "daphne" and not options["separate_link"],
            default_rf=options["rf"],
        )
        try:
            info = cluster_prepare(cfg, log=lambda m: self.stdout.write(f"[prepare] {m}"))
            # A Redis elsewhere (another host, another network namespace) is not ours to
            # start: --prepare-only then lists the processes without one.
            remote_redis = urlparse(cfg.redis_url).hostname not in LOCAL_HOSTS
            cluster = LocalCluster(
                cfg,
                console=not options["prepare_only"],
                redis=False if options["prepare_only"] and remote_redis else None,
            )
        except ClusterError as exc:
            raise CommandError(str(exc)) from None

        if options["prepare_only"]:
            procs = [
                {"name": s.name, "command": shlex.join(s.argv), "env": s.env}
                for s in cluster.specs.values()
            ]
            self.stdout.write(json.dumps({"processes": procs, "secrets": info}))
            return
        signal.signal(signal.SIGTERM, _interrupt)
        # Ctrl-C stops the cluster even where SIGINT was inherited as ignored: a shell
        # without job control starts background commands so (`make run &`, CI scripts),
        # and Python then installs no KeyboardInterrupt handler at all.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        fixture = None if options["no_seed"] else options["fixture"]
        failed = ""
        with cluster:
            try:
                cluster.start()
                cluster.wait_ready(timeout=options["ready_timeout"])
                if fixture is not None:
                    self.stdout.write(f"[seed] {cluster.seed(fixture)}")
                self._summary(cfg)
                # A tablet server that dies comes back by itself: with replication its
                # ranges are served by their followers meanwhile (README, "Replication").
                failed = f"{cluster.supervise(restart_tablets_after_s=10).name} exited"
            except KeyboardInterrupt:
                pass
            except ClusterError as exc:  # report and stop the cluster rather than run half-ready
                failed = f"not ready: {exc}"
            finally:
                # A second Ctrl-C must not cut the shutdown short and leave processes behind.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                if failed:
                    self.stderr.write(f"[cluster] {failed}")
                self.stdout.write("[cluster] stopping every process")
        if failed:
            sys.exit(1)

    def _summary(self, cfg: ClusterConfig) -> None:
        # Secrets are never printed (consoles end up in logs and CI output): where they are.
        lines = ["", "distdb local cluster is up", ""]
        for node in cfg.nodes:
            url = f"http://{cfg.host}:{node.port}"
            lines.append(f"  {node.node_id:<10} {url}/admin/")
        api = f"http://{cfg.host}:{cfg.client_ports[0]}"
        lines += [
            f"  admin      user admin, password in {cfg.data_dir / 'admin-password'}",
            "",
            f"  REST API   {api}/api/v1/tables/   docs: {api}/api/docs/",
            f"  API token  in {cfg.data_dir / 'api-token'}",
            f"  logs       {cfg.logs}/<process>.log",
            "",
            f'  try: curl -H "Authorization: Bearer $(cat {cfg.data_dir / "api-token"})" '
            f"{api}/api/v1/tables/products/rows/1",
            "  Ctrl-C stops everything.",
            "",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

"""``manage.py cluster_status [--json]``: metadata version, servers, ranges, rows, last run,
per-range replication (leader, in-sync followers, lag) and recent failovers."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from master_app.services.collect import changes_collect_all
from master_app.services.status import cluster_status


class Command(BaseCommand):
    help = (
        "Show the cluster: the metadata version, every tablet server with its state, last "
        "heartbeat, ranges and row counts (master's copy), the last rebalance run, each "
        "replicated range's leader, in-sync followers and their lag, and recent failovers."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")
        parser.add_argument(
            "--collect",
            action="store_true",
            help="First collect the live servers' changes, so the row counts are current.",
        )

    def handle(self, *args, **options):
        if options["collect"]:
            changes_collect_all()
        status = cluster_status()
        if options["json"]:
            self.stdout.write(json.dumps(status, indent=2))
            return
        w = self.stdout.write
        w(f"metadata version {status['metadata_version']}")
        tables = [f"{name} (rf {t['rf']})" for name, t in status["tables"].items()]
        w(f"tables: {', '.join(tables) or '(none)'}")
        if status["running"]:
            w(f"running now: {status['running']}")
        w("tablet servers:")
        for s in status["servers"]:
            flags = " draining" if s["draining"] else ""
            w(
                f"  {s['node_id']:<12} {s['state']:<5}{flags} {s['rows']:>9} rows  "
                f"last heartbeat {s['last_heartbeat'] or 'never'}  {s['url']}"
            )
            for t in s["tablets"]:
                span = f"[{t['start']}, {t['end']})"
                followers = f", followers {', '.join(t['in_sync'])}" if t["in_sync"] else ""
                w(f"      {t['table']} {span} {t['rows']} rows (v{t['version']}{followers})")
        run = status["last_run"]
        if run is None:
            w("last rebalance run: none yet")
        else:
            w(
                f"last rebalance run: #{run['id']} ({run['trigger']}) {run['outcome']} at "
                f"{run['started_at']}, {run['rows_moved']} rows moved in "
                f"{run['duration_s'] or 0:.1f}s, longest freeze {run['longest_freeze_ms']:.0f} ms"
            )
            if run["error"]:
                w(f"  error: {run['error']}")
        self._replication(status)

    def _replication(self, status):
        w = self.stdout.write
        if status["replication"]:
            w("replication (leader; followers: lag):")
        for r in status["replication"]:
            short = f"  UNDER-REPLICATED {r['copies']}/{r['rf']}" if r["under_replicated"] else ""
            w(f"  {r['table']} [{r['start']}, {r['end']}) rf {r['rf']}: leader {r['leader']} "
              f"({r['leader_state']}){short}")  # fmt: skip
            for f in r["followers"]:
                where = "in sync" if f["in_sync"] else "not in sync"
                w(f"      {f['server']} ({f['state']}, {where}): {f['lag']}")
        if status["failovers"]:
            w("recent failovers:")
        for f in status["failovers"]:
            w(f"  {f['at']}  {f['table']} [{f['start']}, {f['end']}) {f['from_server']} -> "
              f"{f['to_server']} (v{f['version']}), unavailable {f['unavailable']}")  # fmt: skip

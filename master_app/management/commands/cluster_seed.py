"""``manage.py cluster_seed``: seed a table from a fixture once the tablet servers have linked."""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from distdb.errors import LeaseHeld
from fixtures.products import read_jsonl
from master_app.services.leases import MAINTENANCE, held, holder_name
from master_app.services.seed import table_seed
from master_app.services.servers import tablet_servers_live


class Command(BaseCommand):
    help = "Seed a table from a JSON-lines fixture over the live tablet servers (first start only)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--fixture", type=Path, default=settings.BASE_DIR / "fixtures" / "products.jsonl"
        )
        parser.add_argument("--table", default="products")
        parser.add_argument("--tablets", type=int, default=2, help="Wait for this many servers.")
        parser.add_argument("--timeout", type=float, default=120.0)
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, fixture: Path, table: str, tablets: int, timeout: float, **options):
        if not fixture.is_file():
            raise CommandError(f"no fixture at {fixture}")
        deadline = time.monotonic() + timeout
        while len(servers := tablet_servers_live()) < tablets:
            if time.monotonic() > deadline:
                raise CommandError(
                    f"only {len(servers)} of {tablets} tablet servers linked after {timeout:.0f}s"
                )
            time.sleep(0.5)
        try:
            rows = list(read_jsonl(fixture))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        # Seeding copies rows into ranges before they are owned; a rebalance run would
        # drop them as leftovers, so the two never overlap.
        holder = holder_name(f"seeding {table}")
        try:
            self._seed(table, rows, servers[:tablets], holder, timeout, options)
        except LeaseHeld as exc:
            raise CommandError(f"cannot seed while a rebalance runs: {exc.message}") from None

    def _seed(self, table, rows, servers, holder, timeout, options):
        with (
            held(MAINTENANCE, holder, settings.DISTDB_REBALANCE_LEASE_S, wait_s=timeout),
            tqdm(
                total=len(rows),
                desc=f"seeding {table}",
                unit="row",
                disable=options["no_progress"] or None,
            ) as bar,
        ):
            result = table_seed(
                table,
                rows,
                [s.node_id for s in servers],
                progress=lambda n: bar.update(n - bar.n),
            )
        if result.already_seeded:
            self.stdout.write(f"{table} already seeded ({result.rows} rows)")
        else:
            spread = ", ".join(f"{r.server_id}" for r in result.ranges)
            self.stdout.write(f"seeded {table}: {result.rows} rows over {spread}")

"""``manage.py drain <node> [--undo] [--rebalance]``: empty a tablet server, or stop doing so."""

from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from distdb.errors import DistdbError
from master_app.services.servers import tablet_server_drain


class Command(BaseCommand):
    help = (
        "Mark a tablet server as draining: the next rebalance moves every range it holds "
        "(as leader or follower) to the other servers (--undo: it takes its share again). "
        "--rebalance runs one now."
    )

    def add_arguments(self, parser):
        parser.add_argument("node_id", help="the tablet server, e.g. tablet-2")
        parser.add_argument("--undo", action="store_true", help="stop draining it")
        parser.add_argument("--rebalance", action="store_true", help="rebalance right away")

    def handle(self, *args, node_id: str, undo: bool, rebalance: bool, **opts):
        try:
            server = tablet_server_drain(node_id, draining=not undo)
        except DistdbError as exc:
            raise CommandError(exc.message) from None
        state = "draining" if server.draining else "not draining"
        self.stdout.write(f"{server.node_id} is {state}")
        if rebalance:
            call_command("rebalance", "--no-progress", stdout=self.stdout, stderr=self.stderr)

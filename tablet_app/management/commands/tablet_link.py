"""``manage.py tablet_link``: run this tablet server's link to the master (reconnects forever)."""

from __future__ import annotations

import asyncio
import contextlib

from django.core.management.base import BaseCommand

from tablet_app.link import TabletLink, master_ws_url


class Command(BaseCommand):
    help = "Link this tablet server to the master over a WebSocket (heartbeats, commands)."

    def handle(self, *args, **options):
        self.stdout.write(f"tablet link: dialling {master_ws_url()}")
        with contextlib.suppress(KeyboardInterrupt):
            # Its own process: it checks that its server answers before each heartbeat.
            asyncio.run(TabletLink(probe_server=True).run_forever())

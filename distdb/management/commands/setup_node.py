"""``manage.py setup_node``: migrate this node's database and create ``admin`` if missing.

One process per node does both, so a local cluster's start-up pays Django's import
cost once per node rather than once per step.
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Migrate, then create superuser 'admin' with DISTDB_ADMIN_PASSWORD if it is missing."
    # It prepares a node before its token exists: the master records each token it signs,
    # so tokens are signed after the databases are migrated (distdb.cluster.prepare).
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get("DISTDB_ADMIN_PASSWORD", "")
        if len(password) < 8:
            raise CommandError("DISTDB_ADMIN_PASSWORD must hold at least 8 characters")
        call_command("migrate", interactive=False, verbosity=0)
        users = get_user_model().objects
        if users.filter(username="admin").exists():
            self.stdout.write("admin exists")
            return
        users.create_superuser("admin", "admin@localhost", password)
        self.stdout.write("created admin")

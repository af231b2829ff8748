"""``manage.py ensure_admin``: create the superuser ``admin`` if missing (local clusters)."""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create superuser 'admin' with the password in DISTDB_ADMIN_PASSWORD, if missing."

    def handle(self, *args, **options):
        password = os.environ.get("DISTDB_ADMIN_PASSWORD", "")
        if len(password) < 8:
            raise CommandError("DISTDB_ADMIN_PASSWORD must hold at least 8 characters")
        users = get_user_model().objects
        if users.filter(username="admin").exists():
            self.stdout.write("admin exists")
            return
        users.create_superuser("admin", "admin@localhost", password)
        self.stdout.write("created admin")

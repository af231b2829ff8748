"""``manage.py generate_keys``: the master's RSA key pair for signing tokens."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from distdb.auth import generate_key_pair


class Command(BaseCommand):
    help = "Generate the master's RS256 key pair (private key mode 0600) if it does not exist."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Replace an existing key pair.")

    def handle(self, *args, force: bool = False, **options):
        private, public = settings.DISTDB_PRIVATE_KEY_FILE, settings.DISTDB_PUBLIC_KEY_FILE
        if generate_key_pair(private, public, overwrite=force):
            self.stdout.write(f"wrote {private} and {public}")
        else:
            self.stdout.write(f"keys already exist at {private} (use --force to replace them)")

"""``manage.py sign_jwt <id> <tablet|client>``: print a server token (as signJwt.js did)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from distdb.auth import DEFAULT_SERVER_TTL_S, token_sign
from distdb.errors import DistdbError
from distdb.files import write_private


class Command(BaseCommand):
    help = "Sign an RS256 token for a tablet or client server with the master's private key."

    def add_arguments(self, parser):
        parser.add_argument("node_id", help="The server's node id (the token's subject).")
        parser.add_argument("role", choices=["tablet", "client"])
        parser.add_argument("--days", type=int, default=DEFAULT_SERVER_TTL_S // 86400)
        parser.add_argument("--out", type=Path, help="Write the token to this file (mode 0600).")

    def handle(self, *args, node_id: str, role: str, days: int, out: Path | None, **options):
        if days < 1:
            raise CommandError("--days must be at least 1")
        if not node_id or len(node_id) > 64:
            raise CommandError("node_id must be 1-64 characters")
        try:
            token = token_sign(node_id, role, ttl_s=days * 86400)
        except DistdbError as exc:
            raise CommandError(exc.message) from None
        if out:
            write_private(out, token + "\n")
            self.stderr.write(f"wrote {role} token for {node_id} to {out}")
        else:
            self.stdout.write(token)

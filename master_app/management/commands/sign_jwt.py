"""``manage.py sign_jwt <id> <tablet|client> [--url URL]``: a server token (as signJwt.js did).

Every token is recorded (``master_app.models.ServerToken``) so it can be revoked; its id
is printed on stderr. A tablet's token carries its URL (``--url``, required): the master
refuses a link that registers any other.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from distdb.auth import DEFAULT_SERVER_TTL_S
from distdb.errors import DistdbError
from distdb.files import write_private
from master_app.services.tokens import server_token_issue


class Command(BaseCommand):
    help = "Sign an RS256 token for a tablet or client server with the master's private key."

    def add_arguments(self, parser):
        parser.add_argument("node_id", help="The server's node id (the token's subject).")
        parser.add_argument("role", choices=["tablet", "client"])
        parser.add_argument("--days", type=int, default=DEFAULT_SERVER_TTL_S // 86400)
        parser.add_argument(
            "--url", help="A tablet's public URL (required for role tablet): bound to its token."
        )
        parser.add_argument("--out", type=Path, help="Write the token to this file (mode 0600).")

    def handle(self, *args, node_id: str, role: str, days: int, url: str | None, out, **options):
        if role == "tablet" and not url:
            raise CommandError("a tablet's token needs --url (its DISTDB_PUBLIC_URL)")
        try:
            record, token = server_token_issue(node_id, role, ttl_days=days, url=url)
        except (ValueError, DistdbError) as exc:
            raise CommandError(str(exc)) from None
        if out:
            write_private(out, token + "\n")
            self.stderr.write(f"wrote {role} token {record.jti} for {node_id} to {out}")
        else:
            self.stderr.write(f"signed {role} token {record.jti} for {node_id}")
            self.stdout.write(token)

"""``manage.py issue_api_token <name>``: a token for the public REST API (shown once)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from distdb.errors import DistdbError
from distdb.files import write_private
from master_app.services.tokens import DEFAULT_TTL_DAYS, api_token_issue


class Command(BaseCommand):
    help = "Issue a public API token; callers send it as 'Authorization: Bearer <token>'."

    def add_arguments(self, parser):
        parser.add_argument("name", help="Who the token is for.")
        parser.add_argument("--days", type=int, default=DEFAULT_TTL_DAYS)
        parser.add_argument(
            "--out", type=Path, help="Write the token to this file (0600) instead of printing it."
        )

    def handle(self, *args, name: str, days: int, out: Path | None, **options):
        try:
            _, token = api_token_issue(name, ttl_days=days)
        except (ValueError, DistdbError) as exc:
            raise CommandError(str(exc)) from None
        if out:  # the token goes to the file only: consoles end up in logs
            write_private(out, token + "\n")
            self.stderr.write(f"wrote the API token {name!r} to {out}")
        else:
            self.stdout.write(token)

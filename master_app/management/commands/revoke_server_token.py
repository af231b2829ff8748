"""``manage.py revoke_server_token --jti <id> | --node <id> [--except <id>]``.

Revokes server tokens the master recorded (``sign_jwt``, the cluster command): the master
refuses them at once, linked tablet servers within a heartbeat. Rotation: sign a new token
(``sign_jwt ... --out <the node's token file>``), then revoke the node's others with
``--node <id> --except <the new jti>``.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from master_app.services.tokens import server_tokens_revoke


class Command(BaseCommand):
    help = "Revoke server tokens by id (jti) or every token of a node."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--jti", action="append", default=[], help="A token's id (repeat).")
        which.add_argument("--node", help="Revoke every token of this node id.")
        parser.add_argument(
            "--except",
            dest="keep",
            action="append",
            default=[],
            help="With --node: keep this token id (the new one of a rotation).",
        )

    def handle(self, *args, jti: list[str], node: str | None, keep: list[str], **options):
        if keep and not node:
            raise CommandError("--except goes with --node")
        try:
            revoked = server_tokens_revoke(jtis=jti, node_id=node, keep=keep)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(f"revoked {revoked} server token(s)")

"""Daphne's ``runserver`` with this node's address and port as defaults.

``DISTDB_PORT``/``DISTDB_HOST`` give the default bind, so ``manage.py runserver``
under a role's settings starts that node where the cluster expects it. The node's
keys and token are checked first, so a misconfigured node fails at start-up. A request
body over the limit is refused by the HTTP server itself (``distdb.body_limit``).
"""

from __future__ import annotations

from typing import Any

from daphne.management.commands.runserver import Command as DaphneRunserver
from django.conf import settings
from django.core import checks
from django.core.management.base import CommandError

from distdb import body_limit
from distdb.checks import RUNTIME


class Command(DaphneRunserver):
    @property
    def default_port(self) -> str:
        return str(getattr(settings, "DISTDB_PORT", 8000))

    @property
    def default_addr(self) -> str:
        return settings.DISTDB_HOST

    def handle(self, *args: Any, **options: Any) -> None:
        problems = checks.run_checks(tags=[RUNTIME], include_deployment_checks=True)
        errors = [p for p in problems if p.is_serious()]
        if errors:
            raise CommandError("\n".join(f"{e.id}: {e.msg} ({e.hint})" for e in errors))
        body_limit.install(settings.DISTDB_MAX_BODY_BYTES)  # before Daphne builds its factory
        super().handle(*args, **options)

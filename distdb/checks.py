"""System checks that name the setting at fault (CONVENTIONS §7).

Checks tagged ``distdb_runtime`` need files that exist only once the node is set up
(keys, tokens); they run when a server starts (``runserver``), not for ``migrate``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, register

RUNTIME = "distdb_runtime"


@register()
def check_role(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    if settings.DISTDB_ROLE not in ("master", "tablet", "client", "test"):
        return [
            Error(
                f"DISTDB_ROLE is {settings.DISTDB_ROLE!r}",
                hint="Use --settings=distdb.settings.master|tablet|client.",
                id="distdb.E001",
            )
        ]
    return []


@register(RUNTIME, deploy=True)
def check_keys_and_token(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if settings.DISTDB_ROLE == "master" and not Path(settings.DISTDB_PRIVATE_KEY_FILE).exists():
        errors.append(
            Error(
                f"DISTDB_KEYS_DIR: no private key at {settings.DISTDB_PRIVATE_KEY_FILE}",
                hint="Run: manage.py generate_keys",
                id="distdb.E002",
            )
        )
    if not Path(settings.DISTDB_PUBLIC_KEY_FILE).exists():
        errors.append(
            Error(
                f"DISTDB_PUBLIC_KEY_FILE: no public key at {settings.DISTDB_PUBLIC_KEY_FILE}",
                hint="Copy the master's public key there, or run manage.py generate_keys.",
                id="distdb.E003",
            )
        )
    token_file = getattr(settings, "DISTDB_TOKEN_FILE", None)
    if token_file and not os.environ.get("DISTDB_TOKEN") and not Path(token_file).exists():
        errors.append(
            Error(
                f"DISTDB_TOKEN: no token in the environment and none at {token_file}",
                hint=(
                    "On the master: manage.py sign_jwt "
                    f"{settings.DISTDB_NODE_ID} {settings.DISTDB_ROLE}"
                    + (
                        f" --url {settings.DISTDB_PUBLIC_URL}"
                        if settings.DISTDB_ROLE == "tablet"
                        else ""
                    )
                    + f" --out {token_file}"
                ),
                id="distdb.E004",
            )
        )
    return errors


@register()
def check_leader_lease(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """A leader renews its lease at every heartbeat: a lease not longer than two heartbeats
    lapses between renewals, and every replicated range keeps going unavailable."""
    if settings.DISTDB_ROLE != "master":
        return []
    lease, beat = settings.DISTDB_LEADER_LEASE_S, settings.DISTDB_HEARTBEAT_S
    if lease <= 2 * beat:
        return [
            Error(
                f"DISTDB_LEADER_LEASE_S ({lease}) must be more than twice "
                f"DISTDB_HEARTBEAT_S ({beat})",
                hint="Lengthen the lease or heartbeat more often (defaults: 4 s and 1 s).",
                id="distdb.E010",
            )
        ]
    return []

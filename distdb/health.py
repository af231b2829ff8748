"""Liveness and readiness of a node (``/healthz``, ``/readyz``, served by ``distdb.ops_http``).

``/healthz`` says only that the process answers (its event loop runs): a restart is the
cure when it fails. ``/readyz`` says the node can serve now: every check in
``settings.DISTDB_READINESS_CHECKS`` passes — the database answers on every role, plus
the role's own (client: routing metadata loaded; tablet: link to the master up; master:
Redis reachable). A check is a callable that returns nothing or raises; a coroutine
function runs on the event loop, anything else in a worker thread. Each has a deadline,
so a hung dependency makes the node not ready instead of hanging the probe.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils.module_loading import import_string

CHECK_TIMEOUT_S = 2.0


def database_ready() -> None:
    """The node's database answers a query."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _checks() -> list[tuple[str, Callable[[], Any]]]:
    return [
        (path.rsplit(".", 1)[-1], import_string(path)) for path in settings.DISTDB_READINESS_CHECKS
    ]


async def readiness(run_sync: Callable[..., Any]) -> dict[str, str]:
    """Every check's outcome: ``"ok"`` or the reason it failed (by check name)."""

    async def one(check: Callable[[], Any]) -> str:
        try:
            if inspect.iscoroutinefunction(check):
                await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
            else:
                await asyncio.wait_for(run_sync(check), CHECK_TIMEOUT_S)
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_S:.0f} s"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with why
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return "ok"

    checks = _checks()
    outcomes = await asyncio.gather(*(one(check) for _, check in checks))
    return {name: outcome for (name, _), outcome in zip(checks, outcomes, strict=True)}

"""ASGI entry point of every role (``manage.py runserver``'s Daphne, or uvicorn, granian or
hypercorn as ``distdb.asgi:application``; ``distdb.asgi_server`` adds the body limit and
the lifespan those servers need).

HTTP paths under ``settings.HOT_PATH_PREFIXES`` go to the role's hot-path app
(``settings.HOT_PATH_APP``: on a client server ``client_app.hot_reads.HotReadsApp``, which
answers the two reads and hands the rest to ``distdb.api_handler.PublicApiASGIHandler``; a
``distdb.internal_http`` app on the master and the tablets); everything else (admin,
docs) to Django's handler.
WebSockets go to the role's Channels routes (``settings.WEBSOCKET_ROUTES``).
Every HTTP request passes ``distdb.ops_http.OpsApp`` first: it answers ``/healthz``,
``/readyz`` and ``/metrics``, and gives everything else a request id, metrics and an
access log line.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "distdb.settings.master")
django_app = get_asgi_application()  # sets Django up before anything imports models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.utils.module_loading import import_string  # noqa: E402

from distdb import asgi_server  # noqa: E402
from distdb.ops_http import OpsApp  # noqa: E402

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class PathDispatcher:
    """Send hot-path prefixes to one ASGI app and the rest to another."""

    def __init__(self, prefixes: tuple[str, ...], hot: ASGIApp, default: ASGIApp) -> None:
        self.prefixes, self.hot, self.default = prefixes, hot, default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefixes):
            return await self.hot(scope, receive, send)
        return await self.default(scope, receive, send)


def build_application() -> ASGIApp:
    hot_path = getattr(settings, "HOT_PATH_APP", None)
    http: ASGIApp = django_app
    if hot_path and settings.HOT_PATH_PREFIXES:
        hot = import_string(hot_path)
        http = PathDispatcher(
            settings.HOT_PATH_PREFIXES, hot() if isinstance(hot, type) else hot, django_app
        )
    routes = getattr(settings, "WEBSOCKET_ROUTES", None)
    protocols: dict[str, Any] = {"http": OpsApp(http)}
    if routes:
        protocols["websocket"] = URLRouter(import_string(routes))
    return asgi_server.wrap(ProtocolTypeRouter(protocols))


application = build_application()

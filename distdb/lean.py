"""Django's ASGI handler with its own, short middleware list for the hot path.

The admin needs sessions, CSRF, messages...; the public API does not (it authenticates
with bearer tokens), and every sync middleware hook costs a thread hop under ASGI
(DESIGN §9). ``distdb.asgi`` sends ``settings.HOT_PATH_PREFIXES`` here.
"""

from __future__ import annotations

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.test.utils import override_settings


class LeanASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        # override_settings only swaps the list while the chain is built at start-up.
        with override_settings(MIDDLEWARE=settings.HOT_PATH_MIDDLEWARE):
            super().load_middleware(is_async=is_async)

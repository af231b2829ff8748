"""Django's ASGI handler, trimmed for the public API's hot path.

The admin needs sessions, CSRF, messages...; the public API does not (it authenticates
with bearer tokens), and every sync middleware hook costs a thread hop under ASGI
(DESIGN §9). ``distdb.asgi`` sends ``settings.HOT_PATH_PREFIXES`` here.

Per request, Django's own ``ASGIHandler`` also (1) opens a ``ThreadSensitiveContext``,
which gives the request its own one-thread executor — a thread started and joined per
request — and (2) sends ``request_started``/``request_finished``, whose sync receivers
(``close_old_connections``, ``reset_queries``) each run in that thread. Profiles of the
client server showed these at about half of a point read's CPU time. The API views are
async and touch no database, so this handler calls ``get_response_async`` directly and
sends the response; any sync work a view still hands to ``sync_to_async`` runs on
asgiref's shared thread.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.test.utils import override_settings
from django.urls import set_script_prefix


class LeanASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        # override_settings only swaps the list while the chain is built at start-up.
        with override_settings(MIDDLEWARE=settings.HOT_PATH_MIDDLEWARE):
            super().load_middleware(is_async=is_async)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"the hot path serves HTTP only, not {scope['type']}")
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                await self.send_response(error_response, send)
                return
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            finally:
                # Closes the response's resources and sends request_finished. Its sync
                # receivers only touch database connections opened in this thread, and
                # the event loop's thread opens none, so they are no-ops here.
                response.close()
        finally:
            body_file.close()

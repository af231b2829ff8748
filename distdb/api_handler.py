"""The client server's public API handler: Django's ASGI handler, trimmed for the hot path.

Loaded by the client role behind ``client_app.hot_reads.HotReadsApp`` (its
``settings.HOT_PATH_APP``, which answers the two reads itself); ``distdb.asgi`` sends the
paths under ``settings.HOT_PATH_PREFIXES`` there and everything else (admin, docs) to
Django's handler.

The admin needs sessions, CSRF, messages...; the public API does not (it authenticates with
bearer tokens), and every sync middleware hook costs a thread hop under ASGI (DESIGN §9). So
the chain is built from ``settings.HOT_PATH_MIDDLEWARE`` (empty today), not ``MIDDLEWARE``,
and only from async-capable middleware.

Per request, Django's own ``ASGIHandler`` also (1) opens a ``ThreadSensitiveContext``, which
gives the request its own one-thread executor — a thread started and joined per request —
and (2) sends ``request_started``/``request_finished``, whose sync receivers
(``close_old_connections``, ``reset_queries``) each run in that thread. Profiles of the
client server showed these at about half of a point read's CPU time. The API views are async
and touch no database, so this handler calls ``run_get_response`` directly and sends the
response; any sync work a view still hands to ``sync_to_async`` runs on asgiref's shared
thread.

It builds on these parts of Django (pinned by ``distdb/tests/test_api_handler.py``, which
fails when an upgrade changes them): ``ASGIHandler.read_body``, ``create_request``,
``run_get_response``, ``send_response``, ``BaseHandler._get_response_async``,
``adapt_method_mode`` and ``convert_exception_to_response``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed, RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponseBase
from django.urls import set_script_prefix
from django.utils.module_loading import import_string

__all__ = ["PublicApiASGIHandler"]

Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]


class PublicApiASGIHandler(ASGIHandler):
    """``ASGIHandler`` with ``HOT_PATH_MIDDLEWARE``, no per-request thread, no signal hops."""

    # What this handler uses of BaseHandler's private side, which django-stubs leaves out.
    # Annotations only: at run time these names resolve to Django's own. The hook lists hold
    # methods of several signatures, adapted by adapt_method_mode (typed loosely upstream).
    _get_response_async: Callable[[HttpRequest], Awaitable[HttpResponseBase]]
    _view_middleware: list[Callable[..., Any]]
    _template_response_middleware: list[Callable[..., Any]]
    _exception_middleware: list[Callable[..., Any]]

    def load_middleware(self, is_async: bool = False) -> None:
        """Build the async middleware chain from ``settings.HOT_PATH_MIDDLEWARE``.

        ``BaseHandler.load_middleware`` reads ``settings.MIDDLEWARE`` (the admin's), so this
        is its async branch written out for another list. It yields the same chain as
        Django's for async-capable middleware; sync-only middleware is refused instead of
        adapted, because adapting it is exactly the thread hop per request this handler
        exists to avoid. ``ASGIHandler.__init__`` calls this once, at start-up.
        """
        if not is_async:
            raise ImproperlyConfigured("PublicApiASGIHandler serves the async (ASGI) path only")
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []

        handler = convert_exception_to_response(self._get_response_async)
        for path in reversed(settings.HOT_PATH_MIDDLEWARE):
            factory = import_string(path)
            if not getattr(factory, "async_capable", False):
                raise ImproperlyConfigured(
                    f"HOT_PATH_MIDDLEWARE: {path} is not async-capable; on the public API "
                    "every sync middleware hook would cost a thread hop (DESIGN §9)"
                )
            try:
                middleware = factory(handler)
            except MiddlewareNotUsed:
                continue
            if middleware is None:
                raise ImproperlyConfigured(f"HOT_PATH_MIDDLEWARE: {path} returned None")
            # The same hook lists, in the same order and modes, as BaseHandler builds.
            if hasattr(middleware, "process_view"):
                self._view_middleware.insert(
                    0, self.adapt_method_mode(True, middleware.process_view)
                )
            if hasattr(middleware, "process_template_response"):
                self._template_response_middleware.append(
                    self.adapt_method_mode(True, middleware.process_template_response)
                )
            if hasattr(middleware, "process_exception"):
                # Django runs the exception middleware synchronously (in a thread) still.
                self._exception_middleware.append(
                    self.adapt_method_mode(False, middleware.process_exception)
                )
            handler = convert_exception_to_response(middleware)
        # Assigned last: Django reads it as "initialization is complete".
        self._middleware_chain = handler

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"the public API serves HTTP only, not {scope['type']}")
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return  # the client left before its body arrived: nobody to answer (as Django)
        try:
            set_script_prefix(get_script_prefix(scope))
            request, response = self.create_request(scope, body_file)
            if request is not None:
                response = await self.run_get_response(request)
                match = getattr(request, "resolver_match", None)
                # The URL's name labels the request's metrics (distdb.ops_http).
                scope["distdb.endpoint"] = (match and match.url_name) or "unmatched"
            assert response is not None  # create_request gives a request or an error response
            try:
                await self.send_response(response, send)
            finally:
                # Closes the response's resources and sends request_finished. Its sync
                # receivers only touch database connections opened in this thread, and
                # the event loop's thread opens none, so they are no-ops here.
                response.close()
        finally:
            body_file.close()

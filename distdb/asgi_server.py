"""What every role's ASGI application does whatever HTTP server runs it (not only Daphne).

Loaded by ``distdb.asgi`` for every role. Two jobs that Daphne's ``runserver`` did, or
could not do, in the server itself:

* **Body limit.** ``distdb.body_limit`` patches Daphne's request class; uvicorn, granian
  and hypercorn need the same guarantee (issue #9, defect 5: a huge body must not grow a
  server). ``BodyLimit`` checks a declared ``Content-Length`` before the application
  reads anything, counts a chunked body as it arrives, and past the limit (plus the same
  slack as Daphne's, so the applications' own exact checks still answer first) sends 413
  in the API's error shape, tells the application the client left, and drops whatever
  the application sends afterwards. The servers read the socket only as the application
  asks (flow control), so nothing more is buffered.
* **Lifespan.** Servers that implement the ASGI lifespan protocol (uvicorn, granian,
  hypercorn) start ``settings.LIFESPAN_TASKS`` (coroutine functions run for the life of
  the process, such as the tablet link when ``DISTDB_LINK_IN_SERVER`` is set) and await
  ``settings.LIFESPAN_SHUTDOWN`` (such as closing pooled HTTP sessions) on the way out.
  Daphne never sends a lifespan scope, which is why ``manage.py tablet_link`` exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from distdb.checks import RUNTIME
from distdb.errors import PayloadTooLarge

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SLACK_BYTES = 1024 * 1024  # as distdb.body_limit: the applications' exact limits answer first


class BodyLimit:
    """Refuse an HTTP request body over ``limit`` bytes before it is buffered anywhere."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                if value.isdigit() and int(value) > self.limit:
                    return await self._refuse(send)
                break
        refused = False
        received = 0

        async def bounded_receive() -> Message:
            nonlocal refused, received
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:  # a chunked body: counted as it arrives
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # after our 413, the application's answer goes nowhere
                await send(message)

        await self.app(scope, bounded_receive, guarded_send)

    async def _refuse(self, send: Send) -> None:
        error = PayloadTooLarge(f"the body is over {self.limit} bytes", limit=self.limit)
        body = orjson.dumps(error.as_dict())
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Lifespan:
    """``app`` plus the ASGI lifespan protocol (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.tasks: list[asyncio.Task[None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.startup()
                except Exception as exc:  # a wrong setting: the server must not start
                    log.exception("lifespan start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        # What ``runserver`` checks before it serves (keys, token): a misconfigured node
        # fails at start-up under every server (CONVENTIONS §7).
        problems = checks.run_checks(tags=[RUNTIME], include_deployment_checks=True)
        errors = [p for p in problems if p.is_serious()]
        if errors:
            raise ImproperlyConfigured("\n".join(f"{e.id}: {e.msg} ({e.hint})" for e in errors))
        # Everything loaded at start-up (Django, the apps, their modules) lives as long as
        # the process: out of the collector's generations, so that a full collection
        # under load walks only request garbage (shorter pauses, a shorter p99 tail).
        gc.collect()
        gc.freeze()
        for path in getattr(settings, "LIFESPAN_TASKS", ()):
            factory: Callable[[], Coroutine[Any, Any, None]] = import_string(path)
            self.tasks.append(asyncio.create_task(factory(), name=path))

    async def shutdown(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for path in getattr(settings, "LIFESPAN_SHUTDOWN", ()):
            hook: Callable[[], Awaitable[None]] = import_string(path)
            try:
                await hook()
            except Exception:  # shutting down anyway: say so, run the others
                log.exception("lifespan shutdown hook %s failed", path)


def wrap(app: ASGIApp) -> ASGIApp:
    """Every role's application as any ASGI server should run it."""
    return Lifespan(BodyLimit(app, settings.DISTDB_MAX_BODY_BYTES + SLACK_BYTES))

"""The operator's edge of every role: ``/healthz``, ``/readyz``, ``/metrics``, request ids,
per-request metrics and access logs. ``distdb.asgi`` wraps each role's HTTP app in ``OpsApp``.

The three operator paths are answered here, before Django or a hot-path app sees them:
unauthenticated (probes and Prometheus carry no token; they reveal no data) and cheap
(no middleware, no thread hop for ``/healthz``). Every other HTTP request is passed on
with a request id (the caller's ``X-Request-ID`` if sane, else a new one, echoed in the
response; ``distdb.logs``), counted and timed by API and endpoint (``distdb.metrics``) and,
with ``DISTDB_ACCESS_LOG``, logged in one line. The endpoint label is what the inner app
wrote to ``scope["distdb.endpoint"]`` (an internal route's name, a public API URL name),
never the raw path, so that row keys in paths cannot explode the label set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from django.conf import settings

from distdb import health, logs, metrics
from distdb.errors import MethodNotAllowed, NotReady
from distdb.internal_http import run_sync

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("distdb.access")
OPS_PATHS = ("/healthz", "/readyz", "/metrics")
_WEB_ENDPOINTS = ("admin", "static")


def api_of(path: str) -> str:
    """Which API a path belongs to: the metrics' ``api`` label."""
    if path.startswith("/internal/"):
        return "internal"
    if path.startswith("/api/"):
        return "public"
    return "web"


def _default_endpoint(api: str, path: str) -> str:
    if api == "web":
        first = path.strip("/").split("/", 1)[0]
        return first if first in _WEB_ENDPOINTS else "other"
    return "unmatched"


class OpsApp:
    """Serve the operator paths; instrument everything else on its way to ``inner``."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner
        self.access_log = bool(settings.DISTDB_ACCESS_LOG)
        self.request_metrics = bool(settings.DISTDB_REQUEST_METRICS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        path = scope["path"]
        if path in OPS_PATHS:
            return await self._ops(path, scope, send)
        headers = dict(scope.get("headers") or ())
        rid = logs.request_id_from(headers.get(logs.HEADER_BYTES))
        token = logs.request_id.set(rid)
        status = 500  # what is counted if the app fails before it answers
        started = time.perf_counter()

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (logs.HEADER_BYTES, rid.encode())],
                }
            await send(message)

        try:
            await self.inner(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            api = api_of(path)
            endpoint = scope.get("distdb.endpoint") or _default_endpoint(api, path)
            if self.request_metrics:
                metrics.request_observe(api, endpoint, scope["method"], status, seconds)
            if self.access_log:
                access_log.info(
                    "%s %s %d %.1f ms",
                    scope["method"],
                    path,
                    status,
                    seconds * 1000,
                    extra={
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                        "endpoint": endpoint,
                    },
                )
            logs.request_id.reset(token)

    async def _ops(self, path: str, scope: Scope, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            refused = MethodNotAllowed(f"{path} answers GET only")
            return await _send(send, refused.status, orjson.dumps(refused.as_dict()))
        body: dict[str, Any]
        if path == "/healthz":
            body = {
                "status": "ok",
                "node_id": settings.DISTDB_NODE_ID,
                "role": settings.DISTDB_ROLE,
            }
            return await _send(send, 200, orjson.dumps(body))
        if path == "/readyz":
            checks = await health.readiness(run_sync)
            if all(outcome == "ok" for outcome in checks.values()):
                body = {
                    "status": "ready",
                    "node_id": settings.DISTDB_NODE_ID,
                    "checks": checks,
                }
                return await _send(send, 200, orjson.dumps(body))
            failed = ", ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
            err = NotReady(f"not ready ({failed})", node_id=settings.DISTDB_NODE_ID, checks=checks)
            return await _send(send, err.status, orjson.dumps(err.as_dict()), err.headers())
        text = await run_sync(metrics.metrics_render)
        return await _send(send, 200, text, {"Content-Type": metrics.CONTENT_TYPE_LATEST})


async def _send(
    send: Send, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    extra = dict(headers or {})
    content_type = extra.pop("Content-Type", "application/json")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *((k.lower().encode(), v.encode()) for k, v in extra.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""Fixtures of the tablet server's tests: ownership set-up, tokens, and an ASGI caller."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from django.db import connections

from distdb import auth, internal_http, protocol
from tablet_app.services import freezes, metadata_apply

NODE = "test"  # settings.DISTDB_NODE_ID of distdb.settings.test
OTHER = "tablet-2"


@pytest.fixture(autouse=True)
def tablet_urls(settings):
    settings.ROOT_URLCONF = "distdb.urls.tablet"


class FakeClock:
    """A monotonic clock the test moves by hand (``freezes.clock``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def clock(monkeypatch) -> FakeClock:
    """Every tablet test runs on a fake monotonic clock: freezes never depend on timing."""
    fake = FakeClock()
    monkeypatch.setattr(freezes, "clock", fake)
    return fake


def freeze(table: str, start: str = "", end: str | None = None, ends_in_s: float = 30.0) -> None:
    """Freeze [start, end) with a lease that ends ``ends_in_s`` from the fake clock's now
    (negative: it has ended already)."""
    lease_s = 30.0
    freezes.range_freeze(table, start, end, lease_s, freezes.clock() + ends_in_s - lease_s)


def tablet(table: str, start: str = "", end: str | None = None, server: str = NODE):
    return protocol.TabletAssignment(
        table=table, start=start, end=end, server=server, url=f"http://{server}"
    )


@pytest.fixture
def assign(db) -> Callable[..., protocol.Metadata]:
    """``assign(tablet(...), ..., version=1)``: apply metadata naming this server's tablets."""

    def apply(*tablets: protocol.TabletAssignment, version: int = 1) -> protocol.Metadata:
        tables = {t.table: protocol.TableInfo(key_type="str") for t in tablets}
        metadata = protocol.Metadata(version=version, tables=tables, tablets=list(tablets))
        metadata_apply(metadata, NODE)
        return metadata

    return apply


@pytest.fixture
def owned(assign) -> protocol.Metadata:
    """This server owns all of table ``t`` and [m, +inf) of ``u``; tablet-2 owns u [, m)."""
    return assign(tablet("t"), tablet("u", "m"), tablet("u", "", "m", server=OTHER), version=3)


# --- tokens and the ASGI app --------------------------------------------------------------------


@pytest.fixture(scope="session")
def tokens(master_keys) -> dict[str, str]:
    return {
        role: auth.token_sign(f"{role}-1", role) for role in ("client", "tablet", "master", "api")
    }


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a sync service from an async test, closing the thread's connection afterwards."""

    def call() -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return await asyncio.to_thread(call)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@pytest.fixture
def api(transactional_db, tokens, monkeypatch) -> Callable[..., Any]:
    """``await api("POST", path, body, role="client")`` through the tablet's ASGI app.

    The app runs service calls in its own worker threads, so the tests need committed
    data (``transactional_db``) and each worker's connection is closed after its call,
    letting pytest-django flush and drop the test database.
    """
    from tablet_app.internal_api import app
    from tablet_app.services import revocations_store

    revocations_store([])  # the master's list has arrived (empty): tokens are checked
    assert app.revoked is not None
    app.revoked.reset()
    real_call = internal_http._call

    def call_then_close(fn, args):
        try:
            return real_call(fn, args)
        finally:
            connections.close_all()

    monkeypatch.setattr(internal_http, "_call", call_then_close)

    async def request(
        method: str,
        path: str,
        body: Any = None,
        *,
        role: str | None = "client",
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        raw = body if isinstance(body, bytes) else b"" if body is None else orjson.dumps(body)
        sent: list[dict[str, Any]] = []
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:  # the app never reads past the body; wait like a real server
                await asyncio.Event().wait()
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        bearer = token if token is not None else tokens[role] if role else None
        scope_headers = [(b"content-type", b"application/json")]
        if bearer is not None:
            scope_headers.append((b"authorization", f"Bearer {bearer}".encode()))
        for name, value in (headers or {}).items():
            scope_headers.append((name.lower().encode(), value.encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": scope_headers,
        }
        await asyncio.wait_for(app(scope, receive, send), timeout=30)
        start, body_msg = sent[0], sent[1]
        return Response(
            status=start["status"],
            headers={k.decode(): v.decode() for k, v in start["headers"]},
            body=body_msg["body"],
        )

    return request

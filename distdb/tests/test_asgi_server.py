"""The application's own body limit and lifespan, whatever ASGI server runs it."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from distdb import asgi_server
from distdb.asgi_server import BodyLimit, Lifespan

started: list[str] = []
stopped: list[str] = []


async def task_forever() -> None:
    started.append("task")
    try:
        await asyncio.Event().wait()
    finally:
        stopped.append("task")


async def close_sessions() -> None:
    stopped.append("sessions")


class App:
    """Reads the whole body, then answers 200 with its size."""

    def __init__(self) -> None:
        self.called = False
        self.saw_disconnect = False

    async def __call__(self, scope, receive, send) -> None:
        self.called = True
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.saw_disconnect = True
                break
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


def http(headers=()) -> dict:
    return {"type": "http", "method": "POST", "path": "/x", "headers": list(headers)}


def feeder(chunks: list[bytes]):
    queue = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    return receive


async def run(app, scope, receive) -> list[dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_a_declared_length_over_the_limit_is_refused_before_the_app_reads():
    app = App()
    sent = await run(BodyLimit(app, 100), http([(b"content-length", b"101")]), feeder([b""]))
    assert not app.called
    assert sent[0]["status"] == 413
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"


async def test_a_chunked_body_is_cut_off_once_it_passes_the_limit():
    app = App()
    sent = await run(BodyLimit(app, 100), http(), feeder([b"x" * 60, b"x" * 60, b"x" * 60]))
    assert app.saw_disconnect
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [413]
    assert len(sent) == 2  # the application's own answer went nowhere


async def test_a_body_within_the_limit_reaches_the_app_whole():
    app = App()
    sent = await run(BodyLimit(app, 100), http([(b"content-length", b"100")]), feeder([b"y" * 100]))
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"100"


def lifespan_events(*types: str):
    queue = [{"type": t} for t in types]
    gate = asyncio.Event()

    async def receive():
        if len(queue) == 1:  # shutdown: only once the test let the tasks start
            await gate.wait()
        return queue.pop(0)

    return receive, gate


async def test_lifespan_runs_the_tasks_for_the_life_of_the_server_and_the_shutdown_hooks(
    settings, monkeypatch
):
    monkeypatch.setattr(asgi_server.checks, "run_checks", lambda **kw: [])  # a node set up
    settings.LIFESPAN_TASKS = ["distdb.tests.test_asgi_server.task_forever"]
    settings.LIFESPAN_SHUTDOWN = ["distdb.tests.test_asgi_server.close_sessions"]
    started.clear(), stopped.clear()
    receive, gate = lifespan_events("lifespan.startup", "lifespan.shutdown")
    app = Lifespan(App())
    sent: list[dict] = []

    async def send(message):
        sent.append(message)
        if message["type"] == "lifespan.startup.complete":
            await asyncio.sleep(0)  # the task starts
            gate.set()

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert started == ["task"] and stopped == ["task", "sessions"]


async def test_a_node_that_fails_its_runtime_checks_does_not_start(settings, monkeypatch):
    from django.core.checks import Error

    monkeypatch.setattr(
        asgi_server.checks,
        "run_checks",
        lambda **kw: [Error("DISTDB_TOKEN: no token", hint="sign one", id="distdb.E004")],
    )
    receive, _ = lifespan_events("lifespan.startup", "lifespan.shutdown")
    sent = await run(Lifespan(App()), {"type": "lifespan"}, receive)
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "distdb.E004" in sent[0]["message"]


@pytest.mark.parametrize("scope_type", ["http", "websocket"])
async def test_other_scopes_pass_through_the_lifespan(scope_type):
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    await Lifespan(inner)({"type": scope_type}, None, None)
    assert seen == [scope_type]

"""The public API handler's contract with Django.

``distdb.api_handler.PublicApiASGIHandler`` reuses the parts of Django's ``ASGIHandler``
that read the body, build the request, run the view chain and send the response, and
replaces the rest. These tests fail when a Django upgrade changes those parts, when the
handler's answers drift from Django's own handler's, or when it starts paying the per-request
costs it exists to avoid. The last test keeps test utilities (``django.test``) out of
production code.
"""

from __future__ import annotations

import ast
import inspect
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers import exception as django_exception
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.core.signals import request_finished, request_started

from distdb.api_handler import PublicApiASGIHandler

from . import api_handler_app

APP = "distdb.tests.api_handler_app"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def api_settings(settings):
    settings.ROOT_URLCONF = APP
    settings.HOT_PATH_MIDDLEWARE = []
    settings.MIDDLEWARE = []
    api_handler_app.calls.clear()
    yield settings
    api_handler_app.calls.clear()


def scope(path: str, *, root_path: str = "", body: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST" if body else "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": root_path,
        "headers": [(b"host", b"localhost"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("localhost", 80),
    }


async def send(app: Any, path: str, *, body: bytes = b"", root_path: str = "") -> dict[str, Any]:
    """One request through ``app``: its status, headers and body, as the client sees them."""
    communicator = ApplicationCommunicator(app, scope(path, root_path=root_path, body=body))
    # The body in two messages: the handler must join them.
    half = len(body) // 2
    await communicator.send_input({"type": "http.request", "body": body[:half], "more_body": True})
    await communicator.send_input({"type": "http.request", "body": body[half:]})
    start = await communicator.receive_output(timeout=30)
    chunks = []
    while True:
        message = await communicator.receive_output(timeout=30)
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    await communicator.wait(timeout=30)
    return {
        "status": start["status"],
        "headers": sorted((k.decode().lower(), v.decode()) for k, v in start["headers"]),
        "body": b"".join(chunks),
    }


@pytest.fixture
def signals_sent() -> Iterator[list[str]]:
    sent: list[str] = []

    def started(**kwargs: Any) -> None:
        sent.append("request_started")

    def finished(**kwargs: Any) -> None:
        sent.append("request_finished")

    request_started.connect(started)
    request_finished.connect(finished)
    yield sent
    request_started.disconnect(started)
    request_finished.disconnect(finished)


# --- the Django internals it builds on ------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "name", "parameters", "is_coroutine"),
    [
        (ASGIHandler, "read_body", ["self", "receive"], True),
        (ASGIHandler, "create_request", ["self", "scope", "body_file"], False),
        (ASGIHandler, "run_get_response", ["self", "request"], True),
        (ASGIHandler, "send_response", ["self", "response", "send"], True),
        (BaseHandler, "get_response_async", ["self", "request"], True),
        (BaseHandler, "_get_response_async", ["self", "request"], True),
        (
            BaseHandler,
            "adapt_method_mode",
            ["self", "is_async", "method", "method_is_async", "debug", "name"],
            False,
        ),
    ],
)
def test_the_django_handler_methods_it_calls_keep_their_signatures(
    owner, name, parameters, is_coroutine
):
    method = getattr(owner, name)
    assert list(inspect.signature(method).parameters) == parameters
    assert inspect.iscoroutinefunction(method) is is_coroutine


def test_the_django_helpers_it_calls_keep_their_signatures():
    convert = django_exception.convert_exception_to_response
    assert list(inspect.signature(convert).parameters) == ["get_response"]
    assert list(inspect.signature(get_script_prefix).parameters) == ["scope"]


def test_django_still_keeps_the_middleware_lists_where_the_handler_fills_them():
    for name in (
        "_view_middleware",
        "_template_response_middleware",
        "_exception_middleware",
        "_middleware_chain",
    ):
        assert hasattr(BaseHandler, name), name


def test_django_builds_the_chain_once_at_start_up_in_async_mode():
    modes: list[bool] = []

    class Recording(PublicApiASGIHandler):
        def load_middleware(self, is_async: bool = False) -> None:
            modes.append(is_async)
            super().load_middleware(is_async=is_async)

    Recording()
    assert modes == [True]


# --- requests through the handler -----------------------------------------------------------------


async def test_a_request_runs_the_hot_path_middleware_in_order_and_returns_the_views_answer(
    settings,
):
    settings.HOT_PATH_MIDDLEWARE = [f"{APP}.Outer", f"{APP}.Unused", f"{APP}.Inner"]
    settings.MIDDLEWARE = [f"{APP}.AdminOnly"]
    answer = await send(PublicApiASGIHandler(), "/api/hello/", body=b"world")
    assert answer["status"] == 201
    assert answer["body"] == b"hello world"
    assert ("x-outer", "seen") in answer["headers"]
    assert ("x-inner", "seen") in answer["headers"]
    assert api_handler_app.calls == [
        "outer request",
        "inner request",
        "view",
        "inner response",
        "outer response",
    ]


async def test_its_middleware_chain_answers_like_djangos_for_the_same_middleware(settings):
    settings.HOT_PATH_MIDDLEWARE = settings.MIDDLEWARE = [f"{APP}.Outer", f"{APP}.Inner"]
    ours = await send(PublicApiASGIHandler(), "/api/hello/", body=b"world")
    our_calls = list(api_handler_app.calls)
    api_handler_app.calls.clear()
    djangos = await send(ASGIHandler(), "/api/hello/", body=b"world")
    assert ours == djangos
    assert our_calls == api_handler_app.calls


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/hello/", b"x" * 200_000, 201),  # several 64 KiB response chunks
        ("/api/missing/", b"", 404),
        ("/api/fail/", b"", 500),
        ("/api/body/", b"x" * 100, 400),  # over DATA_UPLOAD_MAX_MEMORY_SIZE: RequestDataTooBig
    ],
)
async def test_it_answers_like_djangos_handler(settings, path, body, status):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 300_000 if path == "/api/hello/" else 10
    ours = await send(PublicApiASGIHandler(), path, body=body)
    djangos = await send(ASGIHandler(), path, body=body)
    assert ours["status"] == status
    assert ours == djangos


async def test_a_client_that_leaves_before_its_body_arrives_gets_no_answer():
    app = PublicApiASGIHandler()
    communicator = ApplicationCommunicator(app, scope("/api/hello/", body=b"never sent"))
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout=30)  # the handler returned, without raising
    assert communicator.output_queue.empty()
    assert api_handler_app.calls == []


async def test_it_sets_the_script_prefix_from_the_root_path():
    answer = await send(PublicApiASGIHandler(), "/prefix/api/where/", root_path="/prefix")
    assert answer["status"] == 200
    seen = orjson.loads(answer["body"])
    assert seen["script_prefix"] == "/prefix/"
    assert seen["reverse"] == "/prefix/api/where/"


async def test_the_view_runs_on_the_event_loop_without_a_per_request_thread(signals_sent):
    answer = await send(PublicApiASGIHandler(), "/api/where/")
    seen = orjson.loads(answer["body"])
    assert seen["thread"] == threading.get_ident()  # the async chain: no hop to a thread
    assert seen["thread_sensitive_context"] is False
    assert signals_sent == ["request_finished"]  # response.close(); no request_started


async def test_djangos_handler_does_pay_what_this_one_avoids(signals_sent):
    """The control for the test above: the same probes do see Django's per-request costs."""
    seen = orjson.loads((await send(ASGIHandler(), "/api/where/"))["body"])
    assert seen["thread_sensitive_context"] is True
    assert signals_sent == ["request_started", "request_finished"]


async def test_it_serves_only_http():
    communicator = ApplicationCommunicator(PublicApiASGIHandler(), {"type": "websocket"})
    with pytest.raises(ValueError, match="HTTP only"):
        await communicator.wait(timeout=30)


def test_sync_only_middleware_is_refused_at_start_up(settings):
    settings.HOT_PATH_MIDDLEWARE = [f"{APP}.sync_only"]
    with pytest.raises(ImproperlyConfigured, match="HOT_PATH_MIDDLEWARE"):
        PublicApiASGIHandler()


def test_the_client_role_serves_its_api_with_this_handler():
    """Behind the two reads ``client_app.hot_reads`` answers itself."""
    from client_app.hot_reads import HotReadsApp
    from distdb.settings import client

    assert client.HOT_PATH_APP == "client_app.hot_reads.HotReadsApp"
    assert isinstance(HotReadsApp().django, PublicApiASGIHandler)


# --- no test utilities in production --------------------------------------------------------------


def _is_test_code(path: Path) -> bool:
    relative = path.relative_to(ROOT)
    return (
        "tests" in relative.parts
        or path.name == "conftest.py"
        or relative.parts[0] == "bench"  # the benchmark is a harness, not the product
    )


def django_test_imports(source: str) -> list[str]:
    """Where ``source`` imports ``django.test`` (statements, or a dotted path in a string)."""

    def is_django_test(name: str | None) -> bool:
        return name is not None and (name == "django.test" or name.startswith("django.test."))

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}" for alias in node.names if is_django_test(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported = [f"{node.module}.{alias.name}" for alias in node.names]
            if is_django_test(node.module) or any(map(is_django_test, imported)):
                found.append(f"line {node.lineno}")
        elif isinstance(node, ast.Constant) and is_django_test(str(node.value)):
            found.append(f"line {node.lineno}")  # a dotted path: import_string("django.test…")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "from django.test.utils import override_settings",
        "from django.test import override_settings",
        "from django import test",
        "import django.test.utils",
        "x = import_string('django.test.utils.override_settings')",
    ],
)
def test_the_scan_finds_a_django_test_import(source):
    assert django_test_imports(source) == ["line 1"]


def test_the_scan_passes_other_django_imports():
    assert django_test_imports("from django.conf import settings\nimport django.testing") == []


def test_no_production_module_imports_django_test():
    modules = [
        path
        for path in ROOT.rglob("*.py")
        if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
        and not _is_test_code(path)
    ]
    assert ROOT / "distdb" / "api_handler.py" in modules  # the scan does see production code
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in modules
        if (found := django_test_imports(path.read_text()))
    }
    assert offenders == {}

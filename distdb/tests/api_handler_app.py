"""A URL conf, views and middleware for ``test_api_handler`` (not a test module itself).

The middleware append to ``calls`` so a test can read the order the chain ran in; the
views report what they see of the handler (thread, script prefix, body).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

from asgiref.sync import SyncToAsync
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.urls import get_script_prefix, path, reverse
from django.utils.decorators import sync_only_middleware

calls: list[str] = []

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class _Recording:
    """Async middleware that logs its request and response phases and tags the response."""

    name = ""
    async_capable = True
    sync_capable = False

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        calls.append(f"{self.name} request")
        response = await self.get_response(request)
        calls.append(f"{self.name} response")
        response.headers[f"x-{self.name}"] = "seen"
        return response


class Outer(_Recording):
    name = "outer"


class Inner(_Recording):
    name = "inner"


class AdminOnly(_Recording):
    """Stands for the admin's ``MIDDLEWARE``: must never run on the public API."""

    name = "admin-only"


class Unused:
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        raise MiddlewareNotUsed()


@sync_only_middleware
def sync_only(get_response: Callable[[HttpRequest], HttpResponseBase]):
    def middleware(request: HttpRequest) -> HttpResponseBase:
        return get_response(request)

    return middleware


async def hello(request: HttpRequest) -> HttpResponse:
    calls.append("view")
    return HttpResponse(b"hello " + request.body, content_type="text/plain", status=201)


async def where(request: HttpRequest) -> JsonResponse:
    """Where the view runs: its thread, asgiref's thread-sensitive context, the prefix."""
    return JsonResponse(
        {
            "thread": threading.get_ident(),
            "thread_sensitive_context": SyncToAsync.thread_sensitive_context.get(None) is not None,
            "script_prefix": get_script_prefix(),
            "reverse": reverse("where"),
        }
    )


async def read_body(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"{len(request.body)} bytes")


async def fail(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the view failed")


urlpatterns = [
    path("api/hello/", hello),
    path("api/where/", where, name="where"),
    path("api/body/", read_body),
    path("api/fail/", fail),
]

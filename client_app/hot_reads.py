"""The public API's two reads, served beside Django's handler (client server role, issue #12).

``GET /api/v1/tables/<table>/rows/<key>`` (one row) and ``GET /api/v1/tables/<table>/rows?keys=…``
(rows by key) are most of a database's traffic. Through Django's handler and DRF, a point
read spent about six times as long in request and response objects, URL resolution,
DRF's request wrapper, negotiation and response rendering as in the read itself (an
in-process profile with the tablet call stubbed: the service was ~13% of the handler's
time). This app answers those two requests itself, with the very functions the DRF views
call: ``authentication.api_user`` (token, audience, role, revocation), ``views.row_reply``
and ``views.keys_reply`` (the read and the answer's shape), ``errors.as_distdb_error`` and
``error_headers`` (every error's code, status and headers). It adds the one header DRF
adds (``Allow``). ``client_app/tests/test_hot_reads.py`` sends the same requests both ways
and requires the same status, body and headers.

Everything else goes to ``PublicApiASGIHandler`` (Django + DRF) untouched: other methods
(HEAD, OPTIONS), a request with a body, a row path with a query string, a rows query
without a key (a scan), a query string that is not UTF-8 or has more fields than Django
parses, a script prefix; and every request when ``HOT_PATH_MIDDLEWARE`` names middleware
(which must see them all). DRF remains the
API's definition: its views serve these reads too when this app is not installed (as under
``manage.py runserver`` with another ``HOT_PATH_APP``), and the OpenAPI schema comes from
them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import get_script_prefix
from django.http import QueryDict

from distdb.api_handler import PublicApiASGIHandler

from . import views
from .authentication import api_user, revoked_tokens
from .errors import as_distdb_error, error_headers

__all__ = ["HotReadsApp"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

# The URL conf's routes (client_app/urls.py: <str:...> is one segment, [^/]+), under /api/.
ROW_PATH = re.compile(r"/api/v1/tables/([^/]+)/rows/([^/]+)")
ROWS_PATH = re.compile(r"/api/v1/tables/([^/]+)/rows")
BODY_HEADERS = (b"content-length", b"transfer-encoding")


def _allow(view: type) -> bytes:
    """The ``Allow`` header DRF puts on every answer of ``view``: its methods, once
    ``View.setup`` has added HEAD (as for every request)."""
    instance = view()
    instance.setup(None)
    return ", ".join(instance.allowed_methods).encode("latin-1")


class HotReadsApp:
    """ASGI app of a client server's ``/api/``: the two reads here, the rest to Django."""

    def __init__(self) -> None:
        self.django = PublicApiASGIHandler()
        self.allow_row = _allow(views.RowView)
        self.allow_rows = _allow(views.RowsView)
        # Middleware configured for the public API must see every request: then Django
        # serves the reads too.
        self.serves_reads = not settings.HOT_PATH_MIDDLEWARE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.serves_reads and scope["type"] == "http" and _bodiless_get(scope):
            path = scope["path"]
            row = ROW_PATH.fullmatch(path)
            if row is not None and not scope.get("query_string"):
                scope["distdb.endpoint"] = "row"
                table, key = row.groups()
                return await self._serve(
                    scope, send, self.allow_row, lambda: views.row_reply(table, key)
                )
            rows = ROWS_PATH.fullmatch(path)
            query = _keys_query(scope) if rows is not None else None
            if rows is not None and query is not None:
                scope["distdb.endpoint"] = "rows"
                table = rows.group(1)
                return await self._serve(
                    scope, send, self.allow_rows, lambda: _keys_reply(table, query)
                )
        return await self.django(scope, receive, send)

    async def _serve(
        self,
        scope: Scope,
        send: Send,
        allow: bytes,
        read: Callable[[], Awaitable[views.Reply]],
    ) -> None:
        """Authenticate, read, answer: ``ApiView.async_dispatch``'s steps for a GET."""
        try:
            await revoked_tokens.get().ensure_fresh()
            api_user(_authorization(scope))
            reply = await read()
        except Exception as exc:  # every error in the API's one shape, as DRF's handler
            error = as_distdb_error(exc)
            reply = views.Reply(error.as_dict(), error.status, error_headers(error, exc))
        body = orjson.dumps(reply.body, default=str)  # as client_app.api_view.JsonRenderer
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"allow", allow),
        ]
        headers += [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _keys_reply(table: str, query: QueryDict) -> views.Reply:
    reply = await views.keys_reply(table, query)
    assert reply is not None  # _keys_query took only queries that name a key
    return reply


def _bodiless_get(scope: Scope) -> bool:
    if scope["method"] != "GET" or get_script_prefix(scope):
        return False
    return not any(
        name in BODY_HEADERS and value not in (b"", b"0") for name, value in scope["headers"]
    )


def _keys_query(scope: Scope) -> QueryDict | None:
    """The query of a read by keys, parsed as Django parses it; None for anything else."""
    try:
        query = QueryDict(scope.get("query_string", b"").decode())
    except (UnicodeDecodeError, SuspiciousOperation):
        return None  # not UTF-8, too many fields: Django's handler answers it
    return query if views.names_keys(query) else None  # parsed once, by keys_reply


def _authorization(scope: Scope) -> str | None:
    """The ``Authorization`` header as Django's ``META`` has it (repeats joined by ",")."""
    values = [v.decode("latin1") for k, v in scope["headers"] if k == b"authorization"]
    return ",".join(values) if values else None

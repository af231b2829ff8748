"""The base of every public API view: async, no thread hop, JSON in and out with orjson.

Loaded by the client server role. Under ASGI every sync step of a request costs a thread
hop (DESIGN §9). adrf runs async handlers on the event loop but still calls DRF's
``initial`` (negotiation, authentication, permissions) through ``sync_to_async``; our
``initial`` is CPU-only (JWT verification with a cached key, no database), so
``ApiView.async_dispatch`` calls it inline. Django would render a DRF ``Response`` in a
worker thread too, so the view renders it itself and hands Django a plain
``HttpResponse``.
"""

from __future__ import annotations

from typing import Any

import orjson
from adrf.views import APIView
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpResponse
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.utils.mediatypes import media_type_matches

from distdb.errors import InvalidJson, PayloadTooLarge

from .authentication import revoked_tokens


class JsonParser(BaseParser):
    """application/json bodies up to DISTDB_MAX_BODY_BYTES, parsed with orjson."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        limit = settings.DISTDB_MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes", limit=limit)
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes", limit=limit)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidJson(f"the body is not valid JSON: {exc}") from None


class JsonRenderer(BaseRenderer):
    media_type = "application/json"
    format = "json"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        return orjson.dumps(data, default=str)


class JsonOnly(BaseContentNegotiation):
    """Always answer JSON (no 406 for browsers); parse only JSON bodies."""

    def select_parser(self, request, parsers):
        for parser in parsers:
            if media_type_matches(parser.media_type, request.content_type):
                return parser
        return None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ApiView(APIView):
    """Base of the public API's views: JSON only, dispatched on the event loop."""

    parser_classes = [JsonParser]
    renderer_classes = [JsonRenderer]
    content_negotiation_class = JsonOnly

    async def async_dispatch(self, request, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            if self.authentication_classes:
                await revoked_tokens.get().ensure_fresh()  # cheap unless ~10 s went by
            self.initial(request, *args, **kwargs)  # inline: CPU-only, see the module docstring
            method = request.method.lower()
            handler = getattr(self, method, None) if method in self.http_method_names else None
            handler = handler or self.http_method_not_allowed
            if iscoroutinefunction(handler):
                response = await handler(request, *args, **kwargs)
            else:  # OPTIONS (DRF's metadata): rare, sync
                response = await sync_to_async(handler)(request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return _plain(self.response)

    @staticmethod
    def body(request) -> Any:
        """The parsed JSON body; an empty body is an error."""
        data = request.data
        if not request.META.get("CONTENT_LENGTH") or request.META["CONTENT_LENGTH"] == "0":
            raise InvalidJson("the body is empty; send JSON")
        return data


def _plain(response: Any) -> Any:
    if not isinstance(response, Response):
        return response
    response.render()
    plain = HttpResponse(response.content, status=response.status_code)
    for name, value in response.items():
        plain[name] = value
    return plain

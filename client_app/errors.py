"""Every error of the public API in the one JSON shape (client server role, CONVENTIONS §6).

``exception_handler`` is DRF's ``EXCEPTION_HANDLER``: it turns distdb errors, DRF's own
exceptions (validation, parse, authentication, permission, method, media type...) and
Django's ``Http404`` into ``{"error": {"code", "message", "detail", "retryable"}}`` with
a stable code and the right status (``Retry-After`` on 503, ``WWW-Authenticate`` on 401,
``Allow`` on 405). An unexpected exception is logged and answered with a 500 in the same
shape. ``not_found`` answers the paths under /api/ that match no route.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.response import Response

from distdb import errors

from .authentication import REALM, AuthFailed

log = logging.getLogger(__name__)


def _flatten(detail: Any, loc: str = "") -> list[dict[str, str]]:
    """DRF's nested validation errors as [{"loc": "rows.3.cells", "msg": "..."}]."""
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else str(key)
            out += _flatten(value, f"{loc}.{name}".strip(".") if name else loc)
        return out
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return [{"loc": loc, "msg": str(item)} for item in detail]
        out = []
        for i, item in enumerate(detail):
            if item:  # DRF puts {} for list items without errors
                out += _flatten(item, f"{loc}.{i}".strip("."))
        return out
    return [{"loc": loc, "msg": str(detail)}]


def as_distdb_error(exc: BaseException) -> errors.DistdbError:
    """The distdb error that stands for any exception raised while serving a request."""
    if isinstance(exc, errors.DistdbError):
        return exc
    if isinstance(exc, AuthFailed):
        return exc.error
    if isinstance(exc, exceptions.ValidationError):
        found = _flatten(exc.detail)[:50]
        first = found[0] if found else {"loc": "", "msg": "invalid"}
        message = f"{first['loc']}: {first['msg']}" if first["loc"] else first["msg"]
        return errors.ValidationFailed(message, errors=found)
    if isinstance(exc, exceptions.ParseError):
        return errors.InvalidJson(str(exc.detail))
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return errors.Unauthenticated(str(exc.detail))
    if isinstance(exc, exceptions.PermissionDenied):
        return errors.Forbidden(str(exc.detail))
    if isinstance(exc, exceptions.NotFound | Http404):
        return errors.NotFound()
    if isinstance(exc, exceptions.MethodNotAllowed):
        return errors.MethodNotAllowed(str(exc.detail))
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return errors.UnsupportedMediaType(f"{exc.detail} Send application/json.")
    if isinstance(exc, exceptions.NotAcceptable):
        return errors.NotAcceptable()
    if isinstance(exc, exceptions.Throttled):
        return errors.Throttled(str(exc.detail))
    if isinstance(exc, RequestDataTooBig):
        return errors.PayloadTooLarge()
    if isinstance(exc, TooManyFieldsSent):  # Django's bound on parsed query fields
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return errors.PayloadTooLarge(
            f"at most {limit} query parameters; send many keys as ?keys=k1,k2,...", limit=limit
        )
    if isinstance(exc, exceptions.APIException):
        error = errors.DistdbError(str(exc.detail))
        # code and status are ClassVars of the hierarchy; a DRF error has no subclass of its
        # own, so this one instance shadows them (as_dict and the response read the instance).
        error.code, error.status = str(exc.default_code), exc.status_code  # type: ignore[misc]
        return error
    log.error("unhandled error in the public API", exc_info=exc)
    return errors.DistdbError()


def error_headers(error: errors.DistdbError, exc: BaseException | None = None) -> dict[str, str]:
    headers = dict(error.headers())
    if error.status == 401:
        headers.setdefault("WWW-Authenticate", REALM)
    if isinstance(exc, exceptions.Throttled) and exc.wait:
        headers["Retry-After"] = str(int(exc.wait) + 1)
    return headers


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every error in the one shape (never None, never HTML)."""
    error = as_distdb_error(exc)
    headers = error_headers(error, exc)
    view = context.get("view")
    if isinstance(exc, exceptions.MethodNotAllowed) and view is not None:
        headers["Allow"] = ", ".join(view.allowed_methods)
    return Response(error.as_dict(), status=error.status, headers=headers)


def error_response(error: errors.DistdbError) -> HttpResponse:
    """A plain Django response in the error shape (outside DRF's views)."""
    return HttpResponse(
        orjson.dumps(error.as_dict()),
        status=error.status,
        content_type="application/json",
        headers=error_headers(error),
    )


async def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Any path under /api/ that matches no route."""
    return error_response(errors.NotFound(f"no API endpoint at {request.path}", path=request.path))

"""Request ids and log formatting, shared by every role.

A request id follows one public request across processes: the client server takes the
caller's ``X-Request-ID`` (if it is a sane token) or makes one, returns it in the
response, and sends it on every internal call it makes for that request; the tablet
server and the master adopt it in turn. It lives in a context variable, so every log
record made while serving the request carries it (``RequestIdFilter``), including the
records of worker threads started with ``copy_context`` (``distdb.internal_http``).

Log lines are plain text by default (``make run``'s console) and JSON lines with
``DISTDB_LOG_FORMAT=json`` (python-json-logger): one object per line with the time,
level, logger, message, node, role, request id and any ``extra`` fields.
"""

from __future__ import annotations

import logging
import os
import re
from contextvars import ContextVar
from typing import Any

HEADER = "X-Request-ID"
HEADER_BYTES = b"x-request-id"
_VALID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")

request_id: ContextVar[str] = ContextVar("distdb_request_id", default="")


def request_id_new() -> str:
    """A fresh id: 16 hex digits (64 random bits), enough to be unique over a log's life."""
    return os.urandom(8).hex()


def request_id_from(raw: bytes | None) -> str:
    """The caller's id if it is a short token of safe characters, else a fresh one (an id
    is echoed into logs and headers, so nothing else is taken from outside)."""
    if raw and _VALID.match(raw):
        return raw.decode("ascii")
    return request_id_new()


def request_id_headers() -> dict[str, str]:
    """The header to forward on an internal call made for the current request (if any)."""
    rid = request_id.get()
    return {HEADER: rid} if rid else {}


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` (empty outside a request), ``node`` and ``role`` on every record."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.node = os.environ.get("DISTDB_NODE_ID", "")
        self.role = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.role:
            self.role = _role()
        record.request_id = request_id.get()
        record.node = self.node
        record.role = self.role
        return True


def _role() -> str:
    try:
        from django.conf import settings

        return str(getattr(settings, "DISTDB_ROLE", ""))
    except Exception:  # noqa: BLE001 - logging before settings exist must still work
        return ""


def logging_config(fmt: str, level: str) -> dict[str, Any]:
    """Django's ``LOGGING`` for ``fmt`` ("plain" or "json") at ``level``."""
    formatters: dict[str, Any] = {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(node)s %(role)s "
            "%(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "timestamp": False,
        },
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "distdb.logs.RequestIdFilter"}},
        "formatters": formatters,
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": fmt,
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.channels.server": {"level": "WARNING"}},
    }

"""The master's HTTP client for the tablet servers' internal API (collection).

Loaded by the master role (Celery worker, ``manage.py rebalance``). Bulk data leaves a
tablet over HTTP, never over the Channels link: an entry carries a whole row (up to a
request's 8 MiB) and Daphne drops WebSocket messages over 1 MiB. Sync and stdlib
(``http.client``): it runs in worker threads and management commands, one call per
page, so a lean blocking client is all it needs.
"""

from __future__ import annotations

import http.client
import logging
from typing import TypeVar
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ValidationError

from distdb.auth import master_token
from distdb.errors import DistdbError, TabletUnavailable, error_from_dict
from distdb.protocol import Message, dumps

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def tablet_post(
    server: str, url: str, path: str, request: Message, answer: type[M], *, timeout_s: float
) -> M:
    """POST ``request`` to the tablet server ``server`` at ``url`` + ``path``; its answer
    parsed as ``answer``. An error answer is raised as its ``DistdbError``; no answer (or
    a garbled one) as ``TabletUnavailable``."""
    parts = urlsplit(url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = connection_class(parts.hostname or "", parts.port, timeout=timeout_s)
    try:
        conn.request(
            "POST",
            parts.path.rstrip("/") + path,
            body=dumps(request),
            headers={
                "Authorization": f"Bearer {master_token()}",
                "Content-Type": "application/json",
            },
        )
        response = conn.getresponse()
        status, raw = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise TabletUnavailable(f"{server} did not answer: {exc}", server=server) from None
    finally:
        conn.close()
    if status != 200:
        try:
            raise error_from_dict(orjson.loads(raw))
        except orjson.JSONDecodeError:
            raise TabletUnavailable(f"{server} answered HTTP {status}", server=server) from None
    try:
        return answer.model_validate_json(raw)
    except ValidationError as exc:
        log.error("malformed %s from %s: %s", answer.__name__, server, exc)
        raise DistdbError(f"{server} sent a malformed answer", server=server) from None


def tablet_get(server: str, url: str, path: str, answer: type[M], *, timeout_s: float) -> M:
    """GET ``url`` + ``path`` of the tablet server ``server``; its answer parsed as ``answer``
    (``TabletUnavailable`` when it does not answer in time or answers an error)."""
    parts = urlsplit(url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = connection_class(parts.hostname or "", parts.port, timeout=timeout_s)
    try:
        conn.request(
            "GET",
            parts.path.rstrip("/") + path,
            headers={"Authorization": f"Bearer {master_token()}"},
        )
        response = conn.getresponse()
        status, raw = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise TabletUnavailable(f"{server} did not answer: {exc}", server=server) from None
    finally:
        conn.close()
    if status != 200:
        raise TabletUnavailable(f"{server} answered HTTP {status}", server=server)
    try:
        return answer.model_validate_json(raw)
    except ValidationError as exc:
        raise TabletUnavailable(f"{server} sent a malformed answer: {exc}", server=server) from None

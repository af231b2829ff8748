"""The client server's HTTP client for the tablet servers' and the master's internal APIs.

Loaded by the client server role. One ``distdb.http_client.HttpClient`` per event loop
(a server runs exactly one), with keep-alive and a bound per peer, so every call reuses a
pooled connection instead of paying a TCP handshake (DESIGN §5, §9); it replaced aiohttp's
session, which cost a client server ~8x the CPU per call (its docstring has the numbers).
Bodies are encoded once (``distdb.protocol.dumps``). Answers are parsed straight from
bytes by the pydantic models, except reads (the hot path: a 100-row answer is 1,000
cells): ``tablet_read`` asks for the cells as the JSON text the tablet stored
(``ReadRequest.cells="text"``) and decodes the answer with orjson into one reply model,
without a model object or a parsed dict per row; the client server embeds that text in
its own answer (``orjson.Fragment``). The tablet servers are trusted peers
(JWT-authenticated, same protocol version); a malformed answer still fails that call only.

Failures are mapped to the error hierarchy: a connection that cannot be made, a timeout
or a malformed answer raises ``TabletUnavailable`` (``MasterUnavailable`` for the master)
for that one call, so the caller fails only the keys it sent there; an error answer is
rebuilt with ``distdb.errors.error_from_dict``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, TypeVar

import orjson
from django.conf import settings
from pydantic import BaseModel, ValidationError

from distdb import protocol
from distdb.auth import own_token
from distdb.errors import (
    DistdbError,
    MasterUnavailable,
    TabletUnavailable,
    Unavailable,
    error_from_dict,
)
from distdb.http_client import ConnectFailed, HttpClient
from distdb.logs import request_id_headers

from .breaker import breakers

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
# The requests a tablet server's internal API serves; each one's ``type`` names its endpoint.
TabletRequest = protocol.ReadRequest | protocol.ScanRequest | protocol.MutateRequest

_client: HttpClient | None = None
_client_loop: asyncio.AbstractEventLoop | None = None


def http() -> HttpClient:
    """The pooled HTTP client of the running event loop (created on first use)."""
    global _client, _client_loop
    loop = asyncio.get_running_loop()
    if _client is None or _client.closed or _client_loop is not loop:
        _client, _client_loop = HttpClient(), loop
        _close_at_shutdown()
    return _client


def _close_at_shutdown() -> None:
    """Close the pool when Daphne stops (it has no ASGI lifespan, but a Twisted reactor)."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not getattr(reactor, "running", False):
        return
    from twisted.internet.defer import Deferred

    def close() -> Deferred[None]:
        return Deferred.fromFuture(asyncio.ensure_future(sessions_close()))

    reactor.addSystemEventTrigger("before", "shutdown", close)


async def sessions_close() -> None:
    """Close the pooled connections (tests, shutdown)."""
    global _client, _client_loop
    if _client is not None and not _client.closed and _client_loop is asyncio.get_running_loop():
        await _client.close()
    _client, _client_loop = None, None


async def _call(
    method: str,
    url: str,
    body: bytes | None,
    *,
    timeout_s: float,
    unavailable: type[Unavailable],
    peer: str,
) -> tuple[int, bytes]:
    # The request id goes along so the tablet's log lines match the client's (distdb.logs).
    headers = [("Authorization", f"Bearer {own_token()}"), *request_id_headers().items()]
    if body is not None:
        headers.append(("Content-Type", "application/json"))
    try:
        return await http().request(method, url, body, headers, timeout_s=max(timeout_s, 0.01))
    except ConnectFailed as exc:
        # The connection was never made, so the request was never applied: safe to
        # send again elsewhere once the metadata says the keys moved.
        err = unavailable(f"{peer} is unreachable", server=peer, reason="connect")
        # DistdbError (distdb/errors.py) declares no such field; is_not_sent reads the mark
        # back with getattr, so only this module knows about it.
        err.not_sent = True  # type: ignore[attr-defined]
        log.warning("%s unreachable: %s", peer, exc)
        raise err from None
    except TimeoutError:
        raise unavailable(
            f"{peer} did not answer within {timeout_s:.2f} s", server=peer, reason="timeout"
        ) from None
    except (OSError, ValueError) as exc:
        log.warning("%s failed: %r", peer, exc)
        raise unavailable(f"{peer} failed: {exc.__class__.__name__}", server=peer) from None


def _decode(
    status: int, raw: bytes, model: type[M], *, unavailable: type[Unavailable], peer: str
) -> M:
    if status in (401, 403):
        # Our own server token was refused: a deployment problem, not the user's token, and
        # a passing one (a token being rotated is picked up from its file): the caller
        # sees the peer as unavailable, with Retry-After, never a 500.
        log.error("%s refused this server's token (HTTP %d): %r", peer, status, raw[:200])
        raise unavailable(
            f"{peer} refused this server's credentials", server=peer, reason="credentials"
        )
    if status >= 400:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise unavailable(f"{peer} answered HTTP {status}", server=peer) from None
        raise error_from_dict(body)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        log.error("malformed %s from %s: %s", model.__name__, peer, exc)
        raise unavailable(f"{peer} sent a malformed answer", server=peer) from None


# --- tablet servers ---------------------------------------------------------------------------


async def tablet_call(
    url: str, server: str, request: TabletRequest, model: type[M], *, timeout_s: float
) -> M:
    """POST one internal request to a tablet server and parse its answer.

    Raises ``TabletUnavailable`` (with ``not_sent`` when no connection was made) or the
    error the tablet server answered with.
    """
    status, raw = await _tablet_post(url, server, request, timeout_s)
    return _decode(status, raw, model, unavailable=TabletUnavailable, peer=server)


async def _tablet_post(
    url: str, server: str, request: TabletRequest, timeout_s: float
) -> tuple[int, bytes]:
    """POST ``request`` to its endpoint on a tablet server, through that server's circuit
    breaker (every call to a tablet server goes through here)."""
    all_breakers = breakers.get()
    all_breakers.consult_master(master_server_states)  # in the background, every few seconds
    breaker = all_breakers.get_for(server, url, tablet_probe)
    breaker.check()  # fails fast while the server is known not to answer (client_app.breaker)
    try:
        answer = await _call(
            "POST",
            f"{url.rstrip('/')}/internal/v1/{request.type}",
            protocol.dumps(request),
            timeout_s=timeout_s,
            unavailable=TabletUnavailable,
            peer=server,
        )
    except TabletUnavailable as exc:
        breaker.failed(exc)
        raise
    breaker.succeeded()
    return answer


async def tablet_probe(url: str) -> bool:
    """The breaker's probe: whether the tablet server answers ``/healthz`` quickly."""
    try:
        status, _ = await http().request(
            "GET", f"{url.rstrip('/')}/healthz", timeout_s=settings.DISTDB_BREAKER_PROBE_TIMEOUT_S
        )
    except (OSError, TimeoutError, ValueError):
        return False
    return status == 200


async def tablet_read(
    url: str, server: str, request: protocol.ReadRequest, timeout_s: float
) -> protocol.ReadTextResponse:
    """Read rows with their cells as JSON text (``cells="text"``), decoded without
    validating each row: the client server passes the cells on as they are."""
    return await _text_call(url, server, request, protocol.ReadTextResponse, timeout_s)


async def tablet_scan(
    url: str, server: str, request: protocol.ScanRequest, timeout_s: float
) -> protocol.ScanTextResponse:
    """Scan with the cells as JSON text (``cells="text"``), decoded as ``tablet_read``'s."""
    return await _text_call(url, server, request, protocol.ScanTextResponse, timeout_s)


TextT = TypeVar("TextT", protocol.ReadTextResponse, protocol.ScanTextResponse)


async def _text_call(
    url: str,
    server: str,
    request: protocol.ReadRequest | protocol.ScanRequest,
    model: type[TextT],
    timeout_s: float,
) -> TextT:
    if request.cells != "text":
        request = request.model_copy(update={"cells": "text"})
    status, raw = await _tablet_post(url, server, request, timeout_s)
    if status != 200:
        return _decode(status, raw, model, unavailable=TabletUnavailable, peer=server)
    try:
        return text_response(raw, model)
    except (orjson.JSONDecodeError, ValidationError, KeyError, TypeError, ValueError) as exc:
        log.error("malformed %s answer from %s: %r", request.type, server, exc)
        raise TabletUnavailable(f"{server} sent a malformed answer", server=server) from None


def read_text_response(raw: bytes) -> protocol.ReadTextResponse:
    return text_response(raw, protocol.ReadTextResponse)


def text_response(raw: bytes, model: type[TextT]) -> TextT:
    """A tablet's text answer: the envelope and each row's shape checked, the cells left
    as the JSON text they are (``model_construct``: no per-row model objects)."""
    body = orjson.loads(raw)
    kind = model.model_fields["type"].default
    if body.get("type") != kind or body.get("v") != protocol.PROTOCOL_VERSION:
        raise ValueError(f"not a {kind} of version {protocol.PROTOCOL_VERSION}")
    meta = body.get("metadata")
    outdated: Any = body.get("outdated")
    # a read names its outdated keys; a scan says whether its range was
    outdated = list(outdated or ()) if model is protocol.ReadTextResponse else bool(outdated)
    return model.model_construct(
        rows=_text_rows(body["rows"]),
        outdated=outdated,
        metadata=protocol.Metadata.model_validate(meta) if meta is not None else None,
    )


def _text_rows(raw_rows: list[list[str]]) -> list[tuple[str, str]]:
    """(key, cells text) pairs of a text answer; ValueError if a row is not one."""
    rows = [(key, text) for key, text in raw_rows]
    if rows and not all(type(k) is str and type(t) is str for k, t in rows):
        raise ValueError("a row is not a (key, cells text) pair")
    return rows


# --- master -------------------------------------------------------------------------------------


async def _master(
    method: str, path: str, body: protocol.Message | None = None
) -> tuple[int, bytes]:
    return await _call(
        method,
        f"{settings.DISTDB_MASTER_URL}/internal/v1/{path}",
        protocol.dumps(body) if body is not None else None,
        timeout_s=settings.DISTDB_TABLET_TIMEOUT_S,
        unavailable=MasterUnavailable,
        peer="master",
    )


async def master_metadata() -> protocol.Metadata:
    status, raw = await _master("GET", "metadata")
    return _decode(status, raw, protocol.Metadata, unavailable=MasterUnavailable, peer="master")


async def master_table_create(
    name: str, key_type: protocol.KeyType, columns: list[str] | None, rf: int | None = None
) -> protocol.Metadata:
    request = protocol.TableCreateRequest(name=name, key_type=key_type, columns=columns, rf=rf)
    status, raw = await _master("POST", "tables", request)
    return _decode(status, raw, protocol.Metadata, unavailable=MasterUnavailable, peer="master")


async def master_table_rf_set(name: str, rf: int) -> protocol.Metadata:
    """Change a table's replication factor at the master; answers the metadata after it."""
    status, raw = await _master("POST", f"tables/{name}/rf", protocol.TableRfRequest(rf=rf))
    return _decode(status, raw, protocol.Metadata, unavailable=MasterUnavailable, peer="master")


async def master_key_block(table: str, count: int, above: int | None = None) -> protocol.KeyBlock:
    request = protocol.KeyBlockRequest(count=count, above=above)
    status, raw = await _master("POST", f"tables/{table}/keys", request)
    return _decode(status, raw, protocol.KeyBlock, unavailable=MasterUnavailable, peer="master")


async def master_revoked_tokens() -> frozenset[str]:
    status, raw = await _master("GET", "api-tokens/revoked")
    answer = _decode(
        status, raw, protocol.RevokedTokens, unavailable=MasterUnavailable, peer="master"
    )
    return frozenset(answer.revoked)


async def master_server_states() -> frozenset[str]:
    """The tablet servers the master considers down (for the circuit breakers)."""
    status, raw = await _master("GET", "servers")
    answer = _decode(
        status, raw, protocol.ServerStates, unavailable=MasterUnavailable, peer="master"
    )
    return frozenset(answer.down)


def is_not_sent(exc: DistdbError) -> bool:
    """Whether a failed call surely never reached its peer (safe to resend elsewhere)."""
    return bool(getattr(exc, "not_sent", False))

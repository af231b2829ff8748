"""A lean ASGI toolkit for the internal server-to-server HTTP APIs (tablet and master).

Why not Django views: on this machine a request through Django's ASGI handler costs
~9 ms of CPU, mostly sync<->async thread hops (DESIGN §9). Internal calls are the hot
path of every client request, so they are served by a small ASGI app: read the body
(bounded), verify the bearer token against the cached public key, check it is not
revoked, parse the message schema, call one service function in a worker thread (one
hop, for the database), and send JSON encoded once with orjson. Errors use the shared
shape of ``distdb.errors``.

Revoked server tokens (``RevokedTokenIds``): each role's app says where its list comes
from (the master: its ``ServerToken`` records; a tablet: the copy the master pushed over
the link into its database). The list is read at most every ``REVOKED_CACHE_S`` (one
thread hop then, none otherwise), and revocation fails closed: until a list has been
read, every token is refused with a retryable 503 ``revocations_unavailable``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from django.conf import settings
from django.db import close_old_connections
from pydantic import BaseModel, ValidationError

from distdb.auth import Claims, bearer_token, token_verify
from distdb.errors import (
    DistdbError,
    InvalidJson,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RevocationsUnavailable,
    TokenInvalid,
    TokenRevoked,
    ValidationFailed,
)

log = logging.getLogger(__name__)


@dataclass
class InternalRequest:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    headers: dict[bytes, bytes]
    body: bytes
    claims: Claims | None = None

    def json(self) -> Any:
        if not self.body:
            raise InvalidJson("the body is empty")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise InvalidJson(f"the body is not valid JSON: {exc}") from None

    def parse(self, model: Any) -> Any:
        """Validate the body against a pydantic model or TypeAdapter.

        Straight from the bytes (``model_validate_json``: one pass in pydantic-core, no
        intermediate Python objects) rather than ``orjson.loads`` then ``model_validate``.
        """
        if not self.body:
            raise InvalidJson("the body is empty")
        try:
            if isinstance(model, type) and issubclass(model, BaseModel):
                return model.model_validate_json(self.body)
            return model.validate_json(self.body)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            if errors and errors[0]["type"] == "json_invalid":
                raise InvalidJson(f"the body is not valid JSON: {errors[0]['msg']}") from None
            raise ValidationFailed(errors=_errors(exc)) from None


Handler = Callable[[InternalRequest], Awaitable[Any]]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    roles: tuple[str, ...]
    name: str = ""  # the metrics' endpoint label: the path without its prefix and groups


def _route_name(path: str) -> str:
    """``/internal/v1/tables/(?P<table>...)/keys`` -> ``tables/{table}/keys``."""
    name = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", path)
    return name.removeprefix("/internal/v1/").removeprefix("/internal/")


REVOKED_CACHE_S = 1.0


class RevokedTokenIds:
    """The ids (``jti``) of revoked server tokens, as ``load`` reads them (in a worker
    thread; ``None``: no list known yet), cached for ``cache_s`` on ``monotonic``."""

    def __init__(
        self,
        load: Callable[[], frozenset[str] | None],
        *,
        cache_s: float = REVOKED_CACHE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._cache_s = cache_s
        self._monotonic = monotonic
        self._jtis: frozenset[str] | None = None
        self._read_at = float("-inf")
        self._reading: asyncio.Future[None] | None = None

    def reset(self) -> None:
        """Forget the list: the next check reads it again (tests, after a change)."""
        self._jtis, self._read_at = None, float("-inf")

    async def check(self, claims: Claims) -> None:
        """Raise ``TokenRevoked`` for a revoked token; ``RevocationsUnavailable`` while no
        list is known (fail closed); ``TokenInvalid`` for a token with no id to check."""
        if self._monotonic() - self._read_at >= self._cache_s:
            await self._read()
        if self._jtis is None:
            raise RevocationsUnavailable()
        if claims.jti is None:
            raise TokenInvalid("a server token without an id (jti) cannot be checked")
        if claims.jti in self._jtis:
            raise TokenRevoked()

    async def _read(self) -> None:
        """One read at a time; requests arriving meanwhile wait for the same one."""
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read_now())
        await asyncio.shield(self._reading)

    async def _read_now(self) -> None:
        started = self._monotonic()
        try:
            jtis = await run_sync(self._load)
        except Exception:  # noqa: BLE001 - keep the last list (or none: fail closed)
            log.warning("could not read the revoked server tokens", exc_info=True)
            return
        self._jtis, self._read_at = jtis, started


@dataclass
class InternalApp:
    """A tiny router: ``app.route("POST", r"/internal/v1/rpc", roles=("client",))(handler)``.

    ``revoked``: where revoked server tokens are looked up (None: nothing is revoked)."""

    routes: list[Route] = field(default_factory=list)
    revoked: RevokedTokenIds | None = None

    def route(
        self, method: str, path: str, *, roles: tuple[str, ...]
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            pattern = re.compile(f"^{path}$")
            self.routes.append(Route(method, pattern, handler, roles, _route_name(path)))
            return handler

        return register

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            request, route = await self._prepare(scope, receive)
            result = await route.handler(request)
            status, body = 200, _encode(result)
            headers: dict[str, str] = {}
        except DistdbError as exc:
            status, body, headers = exc.status, orjson.dumps(exc.as_dict()), exc.headers()
        except Exception:  # a bug: log it, answer with the error shape, keep serving
            log.exception("internal API failure on %s", scope.get("path"))
            status, body, headers = 500, orjson.dumps(DistdbError().as_dict()), {}
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *((k.lower().encode(), v.encode()) for k, v in headers.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _prepare(self, scope: Scope, receive: Receive) -> tuple[InternalRequest, Route]:
        path, method = scope["path"], scope["method"]
        route, params, allowed = None, {}, False
        for candidate in self.routes:
            match = candidate.pattern.match(path)
            if match:
                allowed = True
                if candidate.method == method:
                    route, params = candidate, match.groupdict()
                    break
        if route is None:
            raise MethodNotAllowed() if allowed else NotFound(f"no internal endpoint {path}")
        scope["distdb.endpoint"] = route.name  # read by distdb.ops_http for the metrics
        headers = dict(scope.get("headers") or [])
        claims = token_verify(bearer_token(headers.get(b"authorization")), roles=route.roles)
        if self.revoked is not None:
            await self.revoked.check(claims)
        body = await _read_body(receive, settings.DISTDB_MAX_BODY_BYTES)
        query = _query(scope.get("query_string", b""))
        return InternalRequest(method, path, params, query, headers, body, claims), route


_pools: dict[tuple[str, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
GENERAL_THREADS = 8


def _pool(prefix: str, threads: int) -> ThreadPoolExecutor:
    """The worker pool named ``prefix`` with ``threads`` workers, made on first use (one
    per size: tests change the setting between calls)."""
    pool = _pools.get((prefix, threads))
    if pool is None:
        with _pools_lock:
            pool = _pools.setdefault(
                (prefix, threads), ThreadPoolExecutor(threads, thread_name_prefix=prefix)
            )
    return pool


async def run_sync(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a service function (database work) in the internal API's worker threads.

    A dedicated pool (not asgiref's thread-sensitive one) so requests do not queue
    behind each other; each worker keeps its own database connection. The caller's
    context goes along (``run_in_executor`` does not copy it), so the request id is on
    the worker's log records too.
    """
    return await _run_in(_pool("distdb-db", GENERAL_THREADS), fn, args)


async def run_read(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a read-only service function (reads, scans) in the reads' own pool of
    ``DISTDB_READ_THREADS`` workers (callers use ``run_sync`` where that is 0).

    Why a pool of its own, and one thread on SQLite: sqlite3 releases the GIL around
    every step of a statement, so threads reading one file at once hand the GIL back and
    forth once per row. In-process, 100-key reads ran at 1,320/s on one thread and at
    585/s on eight, at three times the CPU per read (docs/performance.md). One thread
    does them back to back at the single-thread cost; writes keep the general pool, where
    they wait for fsync and replication without holding reads up. ``fn`` must not wait
    for other requests (``rows.MustWait``): one waiting read would hold up all of them.
    """
    return await _run_in(_pool("distdb-read", settings.DISTDB_READ_THREADS), fn, args)


async def _run_in(pool: ThreadPoolExecutor, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """``fn(*args)`` in a worker of ``pool``, its outcome handed to the event loop once.

    Not ``loop.run_in_executor``: that chains the pool's future to an asyncio one through
    ``wrap_future`` (done callbacks, a lock and a copy of the state on each side), about a
    fifth of a tablet server's CPU per call outside the service itself in profiles. Here
    the worker puts the outcome straight on the loop (``call_soon_threadsafe``). As with
    ``run_in_executor``, a call whose caller was cancelled before a worker took it up is
    not run, and one already running runs to its end (its outcome is then dropped).
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def work() -> None:
        if answer.cancelled():  # a flag read: the loop may cancel it a moment later
            return
        try:
            result = context.run(_call, fn, args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
            loop.call_soon_threadsafe(_settle, answer, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, answer, result, None)

    pool.submit(work)
    return await answer


def _settle(answer: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if answer.cancelled():
        return
    if exc is not None:
        answer.set_exception(exc)
    else:
        answer.set_result(result)


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    close_old_connections()  # drops a connection the database closed; cheap otherwise
    return fn(*args)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise DistdbError("the caller disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes", limit=limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _query(raw: bytes) -> dict[str, str]:
    if not raw:
        return {}  # the data plane's calls carry none
    return dict(parse_qsl(raw.decode("latin-1")))


def _encode(result: Any) -> bytes:
    if isinstance(result, BaseModel):
        return orjson.dumps(result.model_dump(mode="json"))
    return orjson.dumps(result)


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ][:20]

"""A small keep-alive HTTP/1.1 client for calls between distdb's own servers.

Loaded by the client server role (``client_app.internal_client``: every call to a tablet
server or the master). Why not aiohttp's ``ClientSession``, which this replaced (issue
#12): a client server makes one internal call for every few point reads, and a session
request costs far more than the call itself. Measured on the bench machine, one POST of a
~500-byte request answered by a trivial server, CPU of the calling process per call:

============================  =================  ==============
client                        4 calls in flight  1 call at once
============================  =================  ==============
aiohttp 3.14 ``ClientSession``   204 µs             321 µs
pyreqwest 0.15 (Rust, tokio)      74 µs             171 µs
aiosonic 1.3                     344 µs             430 µs
this module (httptools)           25 µs              55 µs
============================  =================  ==============

The calls are narrow, which is what makes a small client enough: our own servers, plain
``http://`` URLs, a request of known length, an answer read whole into memory (pages are
size-capped by the protocol). The answer is parsed by ``httptools`` (the parser uvicorn
serves with, from the same maintainers as uvloop), so no HTTP parsing is written here.

What a caller can rely on:

* ``ConnectFailed`` (an ``OSError``): no connection could be made, so the request was
  surely never sent; safe to send elsewhere.
* ``TimeoutError``: no complete answer within ``timeout_s`` (connecting included). The
  connection is dropped, so a late answer can never be taken for another call's.
* ``Disconnected`` (an ``OSError``): the connection broke, or the peer answered something
  that is not HTTP, before the whole answer arrived: the request may have been applied.
* Connections are reused (keep-alive) up to ``limit_per_host`` per peer; a caller beyond
  that waits for one to be free. A connection idle for ``idle_s`` is closed rather than
  reused: below the servers' keep-alive timeout (uvicorn's default is 5 s), so a request
  is not written into a connection the peer is closing at that moment.
* A caller that is cancelled mid-call drops its connection, as a timeout does.
"""

from __future__ import annotations

import asyncio
import socket
import weakref
from collections import deque
from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

__all__ = ["ConnectFailed", "Disconnected", "HttpClient"]

LIMIT_PER_HOST = 64
IDLE_S = 4.0


class ConnectFailed(OSError):
    """No connection to the peer could be made: the request was not sent."""


class Disconnected(OSError):
    """The connection ended (or the answer was not HTTP) before the whole answer arrived."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request in flight, its answer parsed by
    httptools' callbacks."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.reusable = True
        self.closed = False
        self.idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # a request leaves in one write: never hold it back (Nagle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.answer is None:  # nothing asked: a peer that speaks out of turn
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Disconnected(f"the answer is not HTTP/1.1: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(Disconnected("the connection closed before the whole answer arrived"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.reusable = self.parser.should_keep_alive()
        answer, self.answer = self.answer, None
        if answer is None:  # a second answer to one request: the peer is confused
            self.close()
        elif not answer.done():
            answer.set_result((self.parser.get_status_code(), b"".join(self.body)))
        self.body = []

    # used by HttpClient

    def send(self, request: bytes, answer: asyncio.Future[tuple[int, bytes]]) -> None:
        assert self.transport is not None
        self.answer = answer
        self.transport.write(request)

    def _fail(self, exc: Exception) -> None:
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()  # nothing of ours is worth flushing: drop it now


class _Host:
    """One peer's connections: the idle ones, how many are open, who waits for one."""

    def __init__(self) -> None:
        self.idle: deque[_Connection] = deque()
        self.open = 0
        self.waiting: deque[asyncio.Future[None]] = deque()


class HttpClient:
    """Pooled keep-alive connections to a few peers, on the event loop it is used from."""

    def __init__(self, *, limit_per_host: int = LIMIT_PER_HOST, idle_s: float = IDLE_S) -> None:
        self.limit_per_host = limit_per_host
        self.idle_s = idle_s
        self._hosts: dict[tuple[str, int], _Host] = {}
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self.closed = False

    async def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Iterable[tuple[str, str]] = (),
        *,
        timeout_s: float,
    ) -> tuple[int, bytes]:
        """Send one request and return (status, body); see the module's docstring for
        the errors."""
        if self.closed:
            raise ConnectFailed("the HTTP client is closed")
        host, port, target = _split(url)
        head = _head(method, target, host, port, headers, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.001)
        conn = await self._acquire(host, port, deadline)
        answer: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        timer = loop.call_at(deadline, _expire, answer)
        done = False
        try:
            conn.send(head + body if body else head, answer)
            result = await answer
            done = True
            return result
        finally:
            timer.cancel()
            self._release(host, port, conn, reuse=done)

    async def close(self) -> None:
        """Close every connection; requests after this fail with ``ConnectFailed``."""
        self.closed = True
        for conn in list(self._connections):
            conn.close()
        for pool in self._hosts.values():
            for waiter in pool.waiting:
                if not waiter.done():
                    waiter.set_exception(ConnectFailed("the HTTP client is closed"))
        self._hosts.clear()

    async def _acquire(self, host: str, port: int, deadline: float) -> _Connection:
        pool = self._hosts.get((host, port))
        if pool is None:
            pool = self._hosts[(host, port)] = _Host()
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while pool.idle:
                conn = pool.idle.pop()  # the most recently used: the least likely to be stale
                if not conn.closed and now - conn.idle_since < self.idle_s:
                    return conn
                pool.open -= 1
                conn.close()
            if pool.open < self.limit_per_host:
                break
            waiter: asyncio.Future[None] = loop.create_future()
            pool.waiting.append(waiter)
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._wake(pool)  # woken, then cancelled: pass the turn on
                raise
            finally:
                timer.cancel()
                if waiter in pool.waiting:
                    pool.waiting.remove(waiter)
        pool.open += 1
        try:
            timeout = deadline - loop.time()
            if timeout <= 0:
                raise TimeoutError
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, host, port), timeout
            )
        except TimeoutError as exc:
            pool.open -= 1
            self._wake(pool)
            if exc.errno is not None:  # the kernel gave up connecting (ETIMEDOUT), not us
                raise ConnectFailed(f"cannot connect to {host}:{port}: {exc}") from exc
            raise
        except BaseException as exc:
            pool.open -= 1
            self._wake(pool)
            if isinstance(exc, OSError):
                raise ConnectFailed(f"cannot connect to {host}:{port}: {exc}") from exc
            raise
        self._connections.add(conn)
        return conn

    def _release(self, host: str, port: int, conn: _Connection, *, reuse: bool) -> None:
        pool = self._hosts.get((host, port))
        if pool is None:  # closed meanwhile
            conn.close()
            return
        if reuse and conn.reusable and not conn.closed and not self.closed:
            conn.idle_since = asyncio.get_running_loop().time()
            pool.idle.append(conn)
        else:
            conn.close()
            pool.open -= 1
        self._wake(pool)

    @staticmethod
    def _wake(pool: _Host) -> None:
        while pool.waiting:
            waiter = pool.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


_splits: dict[str, tuple[str, int, str]] = {}


def _split(url: str) -> tuple[str, int, str]:
    """(host, port, request target) of an ``http://`` URL (cached: a few peers' URLs)."""
    found = _splits.get(url)
    if found is None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http:// URL: {url!r}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        found = (parts.hostname, parts.port or 80, target)
        if len(_splits) < 1024:
            _splits[url] = found
    return found


def _head(
    method: str,
    target: str,
    host: str,
    port: int,
    headers: Iterable[tuple[str, str]],
    body: bytes | None,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    for line in lines:  # a line break inside one would start a header of its own
        if "\r" in line or "\n" in line:
            raise ValueError(f"a line break in the request head: {line[:40]!r}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

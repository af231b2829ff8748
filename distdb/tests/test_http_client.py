"""The internal HTTP client (``distdb.http_client``) against small servers that misbehave on
purpose: keep-alive, answers in pieces or chunked, closes, silence, garbage, the per-peer
bound, cancellation. Every test runs on asyncio's loop and on uvloop (which the servers run:
its transports are not ``asyncio.Transport`` subclasses)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from distdb.http_client import ConnectFailed, Disconnected, HttpClient


def both_loops(scenario: Callable[[], Awaitable[None]]) -> Callable[[str], None]:
    """A test running ``scenario`` once on asyncio's event loop and once on uvloop's."""

    @pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
    def test(loop: str) -> None:
        factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(scenario())

    test.__name__ = scenario.__name__
    test.__doc__ = scenario.__doc__
    return test


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Peer"], Awaitable[None]]


class Peer:
    """A TCP server running ``handler`` per connection; counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.closed_by_client = asyncio.Event()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def request(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next request (head and body), or None once the client closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed_by_client.set()
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return head + body

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


def answer(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    head = b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n"
    return head % (status.encode(), len(body), extra) + body


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
    """Answers every request with its own body (or b"none"), keep-alive."""
    while (request := await peer.request(reader)) is not None:
        body = request.partition(b"\r\n\r\n")[2] or b"none"
        writer.write(answer(body))


class Served:
    """``async with Served(handler, **client_kwargs) as (url, peer, client)``: a peer
    running ``handler`` and a client; both closed on the way out."""

    def __init__(self, handler: Handler, **kwargs: float) -> None:
        self.peer = Peer(handler)
        self.client = HttpClient(**kwargs)  # type: ignore[arg-type]

    async def __aenter__(self) -> tuple[str, Peer, HttpClient]:
        return await self.peer.start(), self.peer, self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        await self.peer.stop()


@both_loops
async def test_calls_share_one_kept_alive_connection() -> None:
    async with Served(echo) as (url, peer, client):
        status, body = await client.request(
            "POST", f"{url}/internal/v1/read?x=1", b'{"a":1}', [("Authorization", "Bearer t")],
            timeout_s=5,
        )  # fmt: skip
        assert (status, body) == (200, b'{"a":1}')
        assert await client.request("GET", f"{url}/healthz", timeout_s=5) == (200, b"none")
        assert peer.connections == 1
        first = peer.requests[0].decode()
        assert first.startswith("POST /internal/v1/read?x=1 HTTP/1.1\r\n")
        assert f"Host: {url.removeprefix('http://')}\r\n" in first
        assert "Authorization: Bearer t\r\n" in first and "Content-Length: 7\r\n" in first
        assert "Content-Length" not in peer.requests[1].decode()  # a GET without a body


@both_loops
async def test_an_answer_in_pieces_and_a_chunked_one() -> None:
    async def dribble(reader, writer, peer):
        await peer.request(reader)
        for byte in answer(b"0123456789" * 50):
            writer.write(bytes([byte]))
            await writer.drain()
        await peer.request(reader)
        writer.write(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await peer.request(reader)

    async with Served(dribble) as (url, _, client):
        assert await client.request("GET", url, timeout_s=5) == (200, b"0123456789" * 50)
        assert await client.request("GET", url, timeout_s=5) == (201, b"hello world")


@both_loops
async def test_a_big_answer_arrives_whole() -> None:
    big = bytes(range(256)) * 40_000  # ~10 MB

    async def large(reader, writer, peer):
        while await peer.request(reader) is not None:
            writer.write(answer(big))

    async with Served(large) as (url, _, client):
        assert await client.request("GET", url, timeout_s=10) == (200, big)


@both_loops
async def test_connection_close_is_not_reused() -> None:
    async def once(reader, writer, peer):
        await peer.request(reader)
        writer.write(answer(b"bye", extra=b"Connection: close\r\n"))

    async with Served(once) as (url, peer, client):
        assert await client.request("GET", url, timeout_s=5) == (200, b"bye")
        assert await client.request("GET", url, timeout_s=5) == (200, b"bye")
        assert peer.connections == 2


@both_loops
async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def one_per_connection(reader, writer, peer):
        await peer.request(reader)
        writer.write(answer(b"ok"))
        await writer.drain()  # then closes without saying so (a keep-alive timeout)

    async with Served(one_per_connection) as (url, peer, client):
        assert await client.request("GET", url, timeout_s=5) == (200, b"ok")
        await asyncio.sleep(0.1)  # the close reaches the client
        assert await client.request("GET", url, timeout_s=5) == (200, b"ok")
        assert peer.connections == 2


@both_loops
async def test_an_idle_connection_past_idle_s_is_not_reused() -> None:
    async with Served(echo, idle_s=0.05) as (url, peer, client):
        await client.request("GET", url, timeout_s=5)
        await asyncio.sleep(0.1)
        await client.request("GET", url, timeout_s=5)
        assert peer.connections == 2
        await asyncio.wait_for(peer.closed_by_client.wait(), 5)  # the stale one was closed


@both_loops
async def test_no_listener_is_connect_failed() -> None:
    peer = Peer(echo)
    url = await peer.start()
    await peer.stop()
    await asyncio.sleep(0.05)
    client = HttpClient()
    with pytest.raises(ConnectFailed):
        await client.request("GET", url, timeout_s=5)
    await client.close()


@both_loops
async def test_silence_times_out_and_a_late_answer_is_never_taken_for_the_next() -> None:
    release = asyncio.Event()

    async def late(reader, writer, peer):
        request = await peer.request(reader)
        if request is not None and b"/slow" in request:
            await release.wait()
            writer.write(answer(b"late"))  # to a client that gave up
            await writer.drain()
            return
        while request is not None:
            writer.write(answer(b"fresh"))
            request = await peer.request(reader)

    async with Served(late) as (url, peer, client):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await client.request("GET", f"{url}/slow", timeout_s=0.2)
        assert 0.15 < loop.time() - started < 2
        release.set()
        assert await client.request("GET", f"{url}/next", timeout_s=5) == (200, b"fresh")
        assert peer.connections == 2  # the timed-out connection was dropped


@both_loops
async def test_a_close_mid_answer_is_disconnected() -> None:
    async def half(reader, writer, peer):
        await peer.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()

    async with Served(half) as (url, _, client):
        with pytest.raises(Disconnected):
            await client.request("POST", url, b"{}", timeout_s=5)


@both_loops
async def test_an_answer_that_is_not_http_is_disconnected() -> None:
    async def garbage(reader, writer, peer):
        await peer.request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await asyncio.sleep(1)

    async with Served(garbage) as (url, _, client):
        with pytest.raises(Disconnected):
            await client.request("GET", url, timeout_s=5)


@both_loops
async def test_calls_beyond_the_bound_wait_for_a_free_connection() -> None:
    async def slow(reader, writer, peer):
        while await peer.request(reader) is not None:
            await asyncio.sleep(0.05)
            writer.write(answer(b"ok"))

    async with Served(slow, limit_per_host=2) as (url, peer, client):
        results = await asyncio.gather(*(client.request("GET", url, timeout_s=5) for _ in range(8)))
        assert results == [(200, b"ok")] * 8
        assert peer.most_open == 2 and peer.connections == 2


@both_loops
async def test_waiting_for_a_free_connection_counts_toward_the_timeout() -> None:
    async def stuck(reader, writer, peer):
        await peer.request(reader)
        await asyncio.sleep(5)

    async with Served(stuck, limit_per_host=1) as (url, _, client):
        first = asyncio.ensure_future(client.request("GET", url, timeout_s=3))
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await client.request("GET", url, timeout_s=0.2)
        assert loop.time() - started < 1
        first.cancel()


@both_loops
async def test_a_cancelled_call_drops_its_connection_and_frees_its_place() -> None:
    async def first_stuck(reader, writer, peer):
        request = await peer.request(reader)
        if request is not None and b"/stuck" in request:
            await asyncio.sleep(5)
            return
        while request is not None:
            writer.write(answer(b"ok"))
            request = await peer.request(reader)

    async with Served(first_stuck, limit_per_host=1) as (url, peer, client):
        call = asyncio.ensure_future(client.request("GET", f"{url}/stuck", timeout_s=10))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await client.request("GET", f"{url}/next", timeout_s=2) == (200, b"ok")
        assert peer.connections == 2


@both_loops
async def test_a_line_break_in_a_header_is_refused_before_sending() -> None:
    async with Served(echo) as (url, peer, client):
        with pytest.raises(ValueError):
            evil = [("X-Request-ID", "a\r\nEvil: 1")]
            await client.request("GET", url, headers=evil, timeout_s=5)
        with pytest.raises(ValueError):
            await client.request("GET", "https://example.invalid/", timeout_s=5)
        assert peer.requests == []


@both_loops
async def test_a_closed_client_fails_calls_in_flight_and_new_ones() -> None:
    async def never(reader, writer, peer):
        await peer.request(reader)
        await asyncio.sleep(5)

    async with Served(never) as (url, _, client):
        call = asyncio.ensure_future(client.request("GET", url, timeout_s=5))
        await asyncio.sleep(0.05)
        await client.close()
        with pytest.raises(Disconnected):
            await call
        with pytest.raises(ConnectFailed):
            await client.request("GET", url, timeout_s=5)


@both_loops
async def test_an_answer_nobody_asked_for_is_never_taken_for_the_next_call() -> None:
    async def twice(reader, writer, peer):
        first_connection = peer.connections == 1
        while await peer.request(reader) is not None:
            if first_connection:
                writer.write(answer(b"one") + answer(b"extra"))  # two answers to one request
            else:
                writer.write(answer(b"fresh"))

    async with Served(twice) as (url, peer, client):
        assert await client.request("GET", url, timeout_s=5) == (200, b"one")
        await asyncio.sleep(0.05)
        assert await client.request("GET", url, timeout_s=5) == (200, b"fresh")
        assert peer.connections == 2


@both_loops
async def test_a_connect_the_kernel_timed_out_is_connect_failed_not_our_timeout() -> None:
    loop = asyncio.get_running_loop()

    async def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ETIMEDOUT, "Connection timed out")  # a TimeoutError, with errno

    loop.create_connection = refuse  # type: ignore[method-assign]
    client = HttpClient()
    with pytest.raises(ConnectFailed):
        await client.request("GET", "http://127.0.0.1:9/", timeout_s=5)
    await client.close()

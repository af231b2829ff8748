"""The HTTP ceiling baseline: a trivial asyncio server answering every request with one fixed
row of the benchmark's size, keep-alive. Nothing a real server could do is faster on this
machine with this load generator, so "distdb point reads / ceiling" says how much of the
machine distdb's two hops use (issue #12). Run as ``python -m bench.ceiling --port P``.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson


def response(body: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


class Answer(asyncio.Protocol):
    """Answers each complete request head (GETs: no body) with the fixed response."""

    def __init__(self, payload: bytes) -> None:
        self.payload, self.buffer = payload, b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count and self.transport is not None:
            self.buffer = self.buffer[self.buffer.rindex(b"\r\n\r\n") + 4 :]
            self.transport.write(self.payload * count)


async def serve(port: int, body: bytes) -> None:
    payload = response(body)
    server = await asyncio.get_running_loop().create_server(
        lambda: Answer(payload), "127.0.0.1", port
    )
    print(f"ceiling serving on {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    from bench.generators import Values

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    body = orjson.dumps({"key": 12345, "cells": Values().row()})
    asyncio.run(serve(args.port, body))


if __name__ == "__main__":
    main()

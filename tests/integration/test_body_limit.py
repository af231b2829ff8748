"""A huge body is refused by the HTTP server before authentication, without the server
growing (issue #9, defect 5: a 2 GB POST without a token grew a client server by 2 GB)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from distdb.cluster import group_members

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def rss_mib(pid: int) -> float:
    """RSS of the server's whole process group: with uvicorn, granian or hypercorn the
    requests are served by worker processes of the one the launcher started."""
    total = 0.0
    for member in group_members(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    assert total, "no VmRSS"
    return total


def post_huge(port: int, headers: bytes, send_mib: int) -> bytes:
    """Send the request line and headers, then up to ``send_mib`` MiB of body; return
    what the server answered (it may close the connection while we are sending)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /api/v1/tables/products/rows HTTP/1.1\r\nHost: x\r\n" + headers)
        chunk = b"x" * MiB
        try:
            for _ in range(send_mib):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused: the server stopped reading and closed
        sock.settimeout(10)
        answer = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
        return answer


@pytest.mark.parametrize("port_of", ["client-1", "tablet-1"])
def test_a_2_gb_body_without_a_token_is_refused_without_growing_the_server(cluster, port_of):
    proc = cluster.processes[port_of]
    port = cluster.cfg.node(port_of).port
    before = rss_mib(proc.pid)
    began = time.monotonic()
    answer = post_huge(
        port, b"Content-Type: application/json\r\nContent-Length: 2147483648\r\n\r\n", 64
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"payload_too_large"' in answer
    assert time.monotonic() - began < 30
    assert rss_mib(proc.pid) - before < 8, "the server buffered the body"


def test_a_chunked_body_over_the_limit_is_cut_off_as_it_arrives(cluster):
    proc = cluster.processes["client-1"]
    before = rss_mib(proc.pid)
    with socket.create_connection(("127.0.0.1", cluster.cfg.node("client-1").port)) as sock:
        sock.sendall(
            b"POST /api/v1/tables/products/rows HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"%x\r\n" % MiB + b"y" * MiB + b"\r\n"
        try:
            for _ in range(64):
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(10)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert rss_mib(proc.pid) - before < 8

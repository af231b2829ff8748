"""Refuse an oversized request body in the HTTP server, before anything reads it.

Loaded by ``manage.py runserver`` (Daphne) of every role. Daphne's request (Twisted's
``http.Request``) stores the whole body and then queues all of it to the application at
once, before the application can look at a header: a 2 GB POST without a token grew a
client server by about 2 GB (issue #9, defect 5). Here the declared ``Content-Length`` is
checked as soon as the headers are in, and a body without one is counted as it arrives;
past ``DISTDB_MAX_BODY_BYTES`` the server answers 413 with the API's error shape and
closes the connection, reading nothing more. No authentication runs first: the size of
an unauthenticated request must not cost memory either.

``distdb/tests/test_body_limit.py`` pins the Twisted/Daphne methods this relies on, so
an upgrade that changes them fails a test rather than production.
"""

from __future__ import annotations

from typing import Any

import orjson
from daphne import http_protocol

from distdb.errors import PayloadTooLarge

_DAPHNE_REQUEST = http_protocol.WebRequest
# Above the applications' own exact limits (they answer with the precise error): this
# one only stops bodies that could never be accepted, before they cost memory.
SLACK_BYTES = 1024 * 1024

# Headers of the error answer; the body is the API's error shape.
_HEAD = (
    b"HTTP/1.1 413 Payload Too Large\r\n"
    b"Content-Type: application/json\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n"
)


def bounded_request_class(limit: int) -> type[http_protocol.WebRequest]:
    """Daphne's ``WebRequest``, refusing a body over ``limit`` bytes (see the docstring)."""

    class BoundedWebRequest(_DAPHNE_REQUEST):  # type: ignore[misc,valid-type] # untyped base
        max_body = limit
        refused = False
        received = 0

        def gotLength(self, length: int | None) -> None:  # noqa: N802 - Twisted's name
            if length is not None and length > self.max_body:
                self._refuse()
                return
            super().gotLength(length)

        def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
            if self.refused:
                return
            self.received += len(data)
            if self.received > self.max_body:  # no Content-Length (chunked): count it
                self._refuse()
                return
            super().handleContentChunk(data)

        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
            if not self.refused:
                super().requestReceived(command, path, version)

        def _refuse(self) -> None:
            self.refused = True
            error = PayloadTooLarge(f"the body is over {self.max_body} bytes", limit=self.max_body)
            body = orjson.dumps(error.as_dict())
            transport: Any = self.channel.transport
            transport.write(_HEAD % len(body) + body)
            transport.loseConnection()  # after the answer is written; nothing more is read

    return BoundedWebRequest


def install(max_body_bytes: int) -> None:
    """Make Daphne's HTTP factory build bounded requests (it looks the class up by name
    each time it builds a protocol)."""
    http_protocol.WebRequest = bounded_request_class(max_body_bytes + SLACK_BYTES)

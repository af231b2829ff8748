"""Fixtures of the client server's tests: keys and tokens, a fake cluster, an ASGI driver.

Requests go through the real hot-path stack, ``client_app.hot_reads.HotReadsApp`` in front
of ``distdb.api_handler.PublicApiASGIHandler`` with the client URL conf, driven by
asgiref's ``ApplicationCommunicator`` on the test's event loop, the same loop the fake
master and tablet servers run on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import orjson
import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings as django_settings

from distdb import auth

from ..authentication import revoked_tokens
from ..breaker import breakers
from ..hot_reads import HotReadsApp
from ..internal_client import sessions_close
from ..keygen import key_allocator
from ..metadata_cache import metadata_cache
from .fakes import FakeCluster

_UNSET = object()


@pytest.fixture(scope="session")
def key_pair() -> None:
    auth.generate_key_pair(
        django_settings.DISTDB_PRIVATE_KEY_FILE, django_settings.DISTDB_PUBLIC_KEY_FILE
    )


@pytest.fixture(autouse=True)
def client_role(settings, key_pair, tmp_path):
    """Configure this process as a client server with a fresh state."""
    settings.ROOT_URLCONF = "distdb.urls.client"
    settings.DISTDB_TOKEN_FILE = tmp_path / "client.jwt"
    settings.DISTDB_TOKEN_FILE.write_text(auth.token_sign("client-1", "client"))
    settings.DISTDB_ROUTING_DEADLINE_S = 5.0
    settings.DISTDB_TABLET_TIMEOUT_S = 2.0
    auth._own_token.cache_clear()
    metadata_cache.reset()
    key_allocator.reset()
    revoked_tokens.reset()
    breakers.reset()
    yield settings
    auth._own_token.cache_clear()


@pytest.fixture
async def cluster(settings):
    """A fake master and two fake tablet servers; table "products" (int keys) is split at 100."""
    fake = FakeCluster()
    await fake.start()
    settings.DISTDB_MASTER_URL = fake.master.url
    fake.layout("products", "int", [(None, "tablet-1"), (100, "tablet-2")])
    yield fake
    await sessions_close()
    await fake.stop()


@pytest.fixture
def token() -> str:
    return auth.token_sign("alice", "api")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error_code(self) -> str:
        return self.json["error"]["code"]


class Api:
    """Send HTTP requests through the client server's ASGI stack: its ``/api/`` app
    (``HotReadsApp``, which hands what it does not serve to ``PublicApiASGIHandler``), or
    ``app`` when given."""

    def __init__(self, token: str, app: Any = None) -> None:
        self.app = app or HotReadsApp()
        self.token = token

    async def __call__(
        self,
        method: str,
        path: str,
        json: Any = _UNSET,
        *,
        body: bytes | None = None,
        token: str | None | object = _UNSET,
        content_type: str | None = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        path, _, query = path.partition("?")
        if json is not _UNSET:
            body = orjson.dumps(json)
        raw_headers = [(b"host", b"localhost")]
        if body is not None:
            raw_headers.append((b"content-length", str(len(body)).encode()))
            if content_type:
                raw_headers.append((b"content-type", content_type.encode()))
        bearer = self.token if token is _UNSET else token
        if bearer is not None:
            raw_headers.append((b"authorization", f"Bearer {bearer}".encode()))
        for name, value in (headers or {}).items():
            raw_headers.append((name.lower().encode(), value.encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(path),
            "raw_path": quote(unquote(path)).encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": raw_headers,
            "client": ("127.0.0.1", 40000),
            "server": ("localhost", 80),
        }
        communicator = ApplicationCommunicator(self.app, scope)
        await communicator.send_input({"type": "http.request", "body": body or b""})
        start = await communicator.receive_output(timeout=30)
        chunks = []
        while True:
            message = await communicator.receive_output(timeout=30)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await communicator.wait(timeout=5)
        response_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return Answer(start["status"], response_headers, b"".join(chunks))


@pytest.fixture
def api(token) -> Api:
    return Api(token)

"""The lean read path answers exactly as Django + DRF do (``client_app.hot_reads``).

Every request here is sent twice, to ``HotReadsApp`` and to ``PublicApiASGIHandler``
(Django's handler and DRF's views), over the same fake cluster and state; status, body and
headers must be equal (``content-length``/``transfer-encoding`` aside: the lean path sends
a length, Django's a chunked body). The cases are the reads' answers and their errors:
found, missing, bad keys and queries, unknown tables, every token failure, an unreachable
tablet server, a revocation list that never loaded.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from distdb.api_handler import PublicApiASGIHandler
from distdb.auth import api_audience, token_sign

from ..hot_reads import HotReadsApp
from .conftest import Answer, Api

ROWS = "/api/v1/tables/products/rows"
FRAMING = {"content-length", "transfer-encoding"}

NO_TOKEN: Any = None  # a request without Authorization


def _tokens() -> dict[str, Any]:
    return {
        "good": token_sign("alice", "api"),
        "none": NO_TOKEN,
        "garbage": "not.a.jwt",
        "expired": token_sign("alice", "api", ttl_s=-60),
        "server": token_sign("tablet-1", "tablet"),
        "wrong-role": token_sign("c", "client", audience=api_audience()),
    }


PATHS = [
    f"{ROWS}/1",  # found
    f"{ROWS}/150",  # found, on the other tablet server
    f"{ROWS}/55",  # missing: 404 row_not_found
    f"{ROWS}/abc",  # not an integer: 400 invalid_key
    f"{ROWS}/-0",
    f"{ROWS}/99999999999999999999999",  # beyond 64 bits
    "/api/v1/tables/nope/rows/1",  # 404 table_not_found
    "/api/v1/tables/%E4%B8%AD/rows/%E4%B8%AD",
    "/api/v1/tables/words/rows/%E4%B8%AD%20x",  # a string table, a non-ASCII key
    "/api/v1/tables/words/rows/a%0A",  # a key that ends in a newline: 400 invalid_key
    f"{ROWS}?keys=1,150,55",
    f"{ROWS}?key=1&key=150&keys=1",
    f"{ROWS}?keys=1,abc",  # one bad key
    f"{ROWS}?keys=",  # an empty key
    f"{ROWS}?keys=1&limit=3",  # read by keys takes no other parameter
    f"{ROWS}?keys=1&keys=150",
    "/api/v1/tables/nope/rows?keys=1",
    "/api/v1/tables/words/rows?key=a,b&key=%E4%B8%AD",
    f"{ROWS}?keys=" + ",".join(str(k) for k in range(10_001)),  # 413: over the row limit
    f"{ROWS}?" + "&".join(f"key={k}" for k in range(1_001)),  # more fields than Django parses
]


async def _both(token: str, path: str, **kwargs: Any) -> tuple[Answer, Answer]:
    lean = await Api(token, HotReadsApp())("GET", path, **kwargs)
    django = await Api(token, PublicApiASGIHandler())("GET", path, **kwargs)
    return lean, django


def _same(lean: Answer, django: Answer) -> None:
    assert lean.status == django.status
    assert lean.body == django.body
    assert {k: v for k, v in lean.headers.items() if k not in FRAMING} == {
        k: v for k, v in django.headers.items() if k not in FRAMING
    }
    if "content-length" in lean.headers:  # else handed to Django (e.g. too many fields)
        assert int(lean.headers["content-length"]) == len(lean.body)


@pytest.fixture
def data(cluster):
    cluster.layout("words", "str", [(None, "tablet-1"), ("m", "tablet-2")])
    for key in (1, 7, 150):
        cluster.put("products", "int", key, {"name": f"p{key}", "price": key * 1.5})
    cluster.put("words", "str", "中 x", {"v": "中"})
    return cluster


@pytest.mark.parametrize("path", PATHS)
async def test_every_read_answers_as_drf_does(data, path):
    lean, django = await _both(_tokens()["good"], path)
    _same(lean, django)
    assert lean.status < 500, lean.body


@pytest.mark.parametrize("who", ["none", "garbage", "expired", "server", "wrong-role"])
@pytest.mark.parametrize("path", [f"{ROWS}/1", f"{ROWS}?keys=1"])
async def test_every_token_failure_answers_as_drf_does(data, who, path):
    lean, django = await _both(_tokens()[who], path)
    _same(lean, django)
    assert lean.status in (401, 403)


async def test_a_revoked_token_answers_as_drf_does(data):
    jti = uuid.uuid4().hex
    data.revoked.add(jti)
    lean, django = await _both(token_sign("mallory", "api", jti=jti), f"{ROWS}/1")
    _same(lean, django)
    assert (lean.status, lean.error_code) == (401, "token_revoked")


async def test_a_never_loaded_revocation_list_answers_as_drf_does(data):
    data.revoked_failures = 2  # one failed fetch per request
    lean, django = await _both(_tokens()["good"], f"{ROWS}/1")
    _same(lean, django)
    assert (lean.status, lean.error_code) == (503, "revocations_unavailable")


async def test_repeated_authorization_headers_answer_as_drf_does(data):
    good = _tokens()["good"]
    lean, django = await _both(good, f"{ROWS}/1", headers={"Authorization": f"Bearer {good}"})
    _same(lean, django)
    assert lean.status == 401  # Django joins repeats with ",": not one token


@pytest.mark.parametrize("path", [f"{ROWS}/150", f"{ROWS}?keys=150,151"])
async def test_an_unreachable_tablet_server_answers_as_drf_does(data, settings, path):
    settings.DISTDB_ROUTING_DEADLINE_S = 0.5
    await data.tablets["tablet-2"].stop()
    lean, django = await _both(_tokens()["good"], path)
    _same(lean, django)
    assert lean.status == 503 and "retry-after" in lean.headers


class Counting(PublicApiASGIHandler):
    """Django's side, counting what reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        self.paths.append(scope["path"])
        await super().__call__(scope, receive, send)


@pytest.mark.parametrize("path", [f"{ROWS}/1", f"{ROWS}?keys=1,2", f"{ROWS}?key=1"])
async def test_the_two_reads_never_reach_django(data, path):
    app = HotReadsApp()
    app.django = counting = Counting()
    answer = await Api(_tokens()["good"], app)("GET", path)
    assert answer.status in (200, 404)
    assert counting.paths == []


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("HEAD", f"{ROWS}/1", None),
        ("OPTIONS", f"{ROWS}/1", None),
        ("GET", f"{ROWS}/1?x=1", None),  # a query string on a row: Django's
        ("GET", ROWS, None),  # a scan
        ("GET", f"{ROWS}?start=1", None),
        ("GET", f"{ROWS}/1", b"{}"),  # a body
        ("GET", f"{ROWS}/1/cells", None),
        ("GET", "/api/v1/tables", None),
        ("PATCH", f"{ROWS}/1", b'{"cells": {"a": 1}}'),
        ("DELETE", f"{ROWS}/1", None),
    ],
)
async def test_everything_else_goes_to_django(data, method, path, body):
    app = HotReadsApp()
    app.django = counting = Counting()
    answer = await Api(_tokens()["good"], app)(method, path, body=body)
    assert counting.paths == [path.partition("?")[0]]
    assert answer.status < 500


async def test_the_reads_are_labelled_for_the_metrics(data):
    """``distdb.ops_http`` labels requests by ``scope["distdb.endpoint"]``: the URL names."""
    seen: list[str] = []
    app = HotReadsApp()

    async def labelled(scope, receive, send):  # type: ignore[no-untyped-def]
        await app(scope, receive, send)
        seen.append(scope["distdb.endpoint"])

    api = Api(_tokens()["good"], labelled)
    await api("GET", f"{ROWS}/1")
    await api("GET", f"{ROWS}?keys=1")
    app.django = PublicApiASGIHandler()
    await api("GET", f"{ROWS}/1?x=1")  # served by Django's side, which labels it alike
    assert seen == ["row", "rows", "row"]


async def test_with_hot_path_middleware_django_serves_the_reads_too(data, settings):
    settings.HOT_PATH_MIDDLEWARE = ["distdb.tests.api_handler_app.Outer"]
    app = HotReadsApp()
    app.django = counting = Counting()
    await Api(_tokens()["good"], app)("GET", f"{ROWS}/1")
    assert counting.paths == [f"{ROWS}/1"]

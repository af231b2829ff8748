"""The operator's edge of every role (distdb.ops_http): health, readiness, metrics, request ids."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from distdb import logs
from distdb.ops_http import OpsApp


class Answer:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    def json(self) -> Any:
        return orjson.loads(self.body)


async def call(
    app: OpsApp, method: str, path: str, headers: dict[str, str] | None = None
) -> Answer:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    answer = Answer()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        else:
            answer.body += message.get("body", b"")

    await app(scope, receive, send)
    return answer


seen: dict[str, str] = {}


async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A stand-in for a role's app: labels its endpoint, notes the request id, answers 201."""
    scope["distdb.endpoint"] = "things/{id}"
    seen["request_id"] = logs.request_id.get()
    logging.getLogger("distdb.test").info("handled")
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture
def app(settings) -> OpsApp:
    settings.DISTDB_ACCESS_LOG = True
    return OpsApp(inner)


def passing() -> None:
    return None


def failing() -> None:
    raise RuntimeError("the link to the master is down")


async def test_healthz_answers_without_a_token_and_names_the_node(app):
    answer = await call(app, "GET", "/healthz")
    assert answer.status == 200
    assert answer.json() == {"status": "ok", "node_id": "test", "role": "test"}


async def test_healthz_refuses_other_methods_in_the_error_shape(app):
    answer = await call(app, "POST", "/healthz")
    assert answer.status == 405
    assert answer.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.django_db(transaction=True)
async def test_readyz_is_ready_when_every_check_passes(app, settings):
    settings.DISTDB_READINESS_CHECKS = [
        "distdb.health.database_ready",
        "distdb.tests.test_ops_http.passing",
    ]
    answer = await call(app, "GET", "/readyz")
    assert answer.status == 200, answer.body
    assert answer.json()["checks"] == {"database_ready": "ok", "passing": "ok"}


@pytest.mark.django_db(transaction=True)
async def test_readyz_answers_503_not_ready_naming_the_failed_check(app, settings):
    settings.DISTDB_READINESS_CHECKS = [
        "distdb.tests.test_ops_http.passing",
        "distdb.tests.test_ops_http.failing",
    ]
    answer = await call(app, "GET", "/readyz")
    assert answer.status == 503
    assert answer.headers["retry-after"] == "1"
    error = answer.json()["error"]
    assert error["code"] == "not_ready"
    assert error["detail"]["checks"] == {
        "passing": "ok",
        "failing": "RuntimeError: the link to the master is down",
    }


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


@pytest.mark.django_db(transaction=True)
async def test_metrics_count_requests_by_api_endpoint_and_status(app):
    labels = {"api": "internal", "endpoint": "things/{id}", "method": "GET", "status": "201"}
    before = (
        sample(
            (await call(app, "GET", "/metrics")).body.decode(),
            "distdb_http_requests_total",
            **labels,
        )
        or 0
    )
    await call(app, "GET", "/internal/v1/things/42")
    await call(app, "GET", "/internal/v1/things/43")
    answer = await call(app, "GET", "/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.body.decode()
    assert sample(text, "distdb_http_requests_total", **labels) == before + 2
    assert (
        sample(
            text,
            "distdb_http_request_duration_seconds_count",
            api="internal",
            endpoint="things/{id}",
        )
        >= 2
    )


@pytest.mark.django_db(transaction=True)
async def test_request_metrics_switched_off_count_nothing_but_metrics_still_answer(settings):
    """``DISTDB_REQUEST_METRICS=0``: the bench's A/B of what counting requests costs."""
    settings.DISTDB_REQUEST_METRICS = False
    app = OpsApp(inner)
    labels = {"api": "internal", "endpoint": "things/{id}", "method": "GET", "status": "201"}

    async def counted() -> float:
        text = (await call(app, "GET", "/metrics")).body.decode()
        return sample(text, "distdb_http_requests_total", **labels) or 0

    before = await counted()
    assert (await call(app, "GET", "/internal/v1/things/42")).status == 201
    assert await counted() == before


async def test_a_request_gets_a_request_id_returned_in_the_response(app):
    answer = await call(app, "GET", "/internal/v1/things/1")
    rid = answer.headers["x-request-id"]
    assert len(rid) == 16 and rid == seen["request_id"]
    assert logs.request_id.get() == ""  # reset after the request


async def test_the_callers_request_id_is_kept(app):
    answer = await call(app, "GET", "/api/v1/x", {"X-Request-ID": "abc-123.def"})
    assert answer.headers["x-request-id"] == "abc-123.def" == seen["request_id"]


@pytest.mark.parametrize("bad", ["a" * 65, "has space", "semi;colon", ""])
async def test_an_unsafe_request_id_is_replaced_by_a_fresh_one(app, bad):
    answer = await call(app, "GET", "/api/v1/x", {"X-Request-ID": bad})
    assert answer.headers["x-request-id"] != bad
    assert len(answer.headers["x-request-id"]) == 16


async def test_log_records_made_during_a_request_carry_its_id_as_json(app, caplog):
    from pythonjsonlogger.json import JsonFormatter

    formatter = JsonFormatter(
        "%(levelname)s %(name)s %(message)s %(request_id)s",
    )
    caplog.handler.addFilter(logs.RequestIdFilter())
    with caplog.at_level(logging.INFO):
        answer = await call(app, "GET", "/internal/v1/things/1", {"X-Request-ID": "rid-1"})
    records = [r for r in caplog.records if r.name in ("distdb.test", "distdb.access")]
    assert {r.name for r in records} == {"distdb.test", "distdb.access"}
    lines = [orjson.loads(formatter.format(r)) for r in records]
    assert all(line["request_id"] == "rid-1" for line in lines)
    access = next(r for r in records if r.name == "distdb.access")
    assert access.status == 201 and access.path == "/internal/v1/things/1"
    assert answer.status == 201


def test_json_logging_config_is_valid_for_django():
    import logging.config

    logging.config.dictConfig(logs.logging_config("json", "INFO"))
    logging.config.dictConfig(logs.logging_config("plain", "INFO"))

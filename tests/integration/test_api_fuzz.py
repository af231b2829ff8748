"""Property-based fuzzing of the public REST API against a real cluster (issue #5).

schemathesis reads the OpenAPI schema a client server serves (``/api/v1/schema/``) and
generates requests for every operation, valid and invalid (Hypothesis drives it, so a
failure is shrunk to a small example). Each one goes through the real cluster, and:

* the answer is a status the schema documents for the operation, never a 5xx, and matches
  the documented content type, headers and body schema (schemathesis' checks);
* every error has the one error shape of docs/api.md ("Errors") (``error_shape``);
* a refused (4xx) write leaves the data exactly as it was;
* an accepted write does what its results say, and a read answers what is stored: the
  fuzzer keeps a model of its tables (``Model``) and compares after every request.

The fuzzer starts a cluster of its own (``runcluster``, as the session's ``cluster``
fixture does): it creates tables and floods the logs, which the tests of a pristine
shared cluster (test_cluster_startup.py) must not see. It keeps to its own data all the
same: the path parameter ``table`` is mapped onto the two tables this module creates and
seeds (``FUZZ_TABLES``) or onto one that never exists (``MISSING_TABLE``); tables it
creates through ``POST /api/v1/tables/`` are renamed ``fuzz-...``; the compatibility
endpoint works on ``products`` only, so it gets reads, and writes only when the request
breaks the schema: those must be refused and leave the rows they name untouched. Some
generated keys and column names are swapped for ones the table has, so that writes get
accepted too.

``DISTDB_FUZZ_EXAMPLES`` (default 50) sets the generated examples per operation;
``DISTDB_FUZZ_SEED`` replays a run (a failure prints its seed). Under ``CI`` Hypothesis'
ci profile derandomizes the run.

schemathesis' own pytest integration is not used: with a schema from a fixture
(``schemathesis.pytest.from_fixture``) it sets ``Function._nodeid``, which pytest 9.2 no
longer has. Each operation is an ordinary Hypothesis test over ``operation.as_strategy()``.
"""

from __future__ import annotations

import json
import os
import re
import uuid
import zlib
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.api import call
from tests.integration.conftest import Cluster, start_cluster

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("DISTDB_FUZZ_EXAMPLES", "50"))
SEED = os.environ.get("DISTDB_FUZZ_SEED")
# Far above a healthy answer (milliseconds), under the client server's routing deadline
# (10 s): only a hung request trips it.
DEADLINE = timedelta(seconds=8)

OPERATIONS = [
    "GET /api/v1/tables/",
    "POST /api/v1/tables/",
    "GET /api/v1/tables/{table}",
    "PATCH /api/v1/tables/{table}",
    "GET /api/v1/tables/{table}/rows",
    "POST /api/v1/tables/{table}/rows",
    "POST /api/v1/tables/{table}/rows:batch",
    "GET /api/v1/tables/{table}/rows/{key}",
    "PATCH /api/v1/tables/{table}/rows/{key}",
    "DELETE /api/v1/tables/{table}/rows/{key}",
    "DELETE /api/v1/tables/{table}/rows/{key}/cells",
    "POST /api/v1/client/send-db-query",
]
TABLE_OPERATIONS = ("GET /api/v1/tables/{table}", "PATCH /api/v1/tables/{table}")
INT_TABLE, STR_TABLE, MISSING_TABLE = "apifuzz-int", "apifuzz-str", "apifuzz-missing"
FUZZ_TABLES: dict[str, dict[str, Any]] = {
    INT_TABLE: {
        "key_type": "int",
        "columns": None,
        "rows": {-(2**63): {}, -7: {"n": -7}, 0: {"a": None}, 1: {"a": 1, "b": [1]}, 42: {}},
    },
    STR_TABLE: {
        "key_type": "str",
        "columns": ["a", "b", "name"],
        "rows": {" a": {"a": 1}, "alice": {}, "b ": {"name": "B"}, "é": {"b": {}}, "x,y": {}},
    },
}
SOME_COLUMNS = ("a", "b", "name")
COMPAT_PATH, COMPAT_TABLE = "/api/v1/client/send-db-query", "products"
COMPAT_WRITES = {"add-rows", "set", "delete-cells", "delete-rows"}
ERROR_FIELDS = {"code", "message", "detail", "retryable"}


# --- the error shape, as a schemathesis check ------------------------------------------------


def error_shape(ctx: CheckContext, response: Response, case: Case) -> None:
    """Every error answer carries {"error": {"code", "message", "detail", "retryable"}}."""
    status = response.status_code
    if status < 400:
        return
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{status} without a JSON body: {response.content[:200]!r}") from None
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"{status} without an error object: {body!r}"
    assert set(error) == ERROR_FIELDS, f"error fields {sorted(error)}: {error!r}"
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str), error
    assert isinstance(error["detail"], dict), error
    assert isinstance(error["retryable"], bool), error
    headers = {name.lower() for name in response.headers}
    if status == 401:
        assert "www-authenticate" in headers, response.headers
    if status == 405:
        assert error["code"] == "method_not_allowed" and "allow" in headers, error
    if status == 503:
        assert error["retryable"] and "retry-after" in headers, error


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,  # re-sends accepted requests without a token / with a bad one: 401
    error_shape,  # also runs on ignored_auth's re-sent requests
]


# --- keys as the API reads them ------------------------------------------------------------


def key_from_text(table: str, text: str) -> int | str:
    """A key given in a path or query string, read the way docs/api.md says."""
    if FUZZ_TABLES[table]["key_type"] == "str":
        return text
    assert re.fullmatch(r"[+-]?[0-9]{1,20}", text), f"{text!r} was taken as an integer key"
    key = int(text)
    assert -(2**63) <= key < 2**63, f"{text!r} was taken as a 64-bit key"
    return key


def as_stored(value: Any) -> Any:
    """A JSON value as the API parses it (orjson: integers past 64 bits become doubles)."""
    return orjson.loads(json.dumps(value))


# --- the model: what the fuzzer's tables hold -------------------------------------------------


class Model:
    """The fuzzer's tables, read through the second client server and kept up to date.

    ``rows(table)`` is the model, read back from the cluster when unknown. After a refused
    write the cluster must still hold it; after an accepted one it must hold the model
    with the write applied as its results say (``applied``).
    """

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token
        self.known: dict[str, dict[Any, Any]] = {}
        self.table_list: list[dict[str, Any]] | None = None

    def get(self, path: str) -> Any:
        status, body, _ = call("GET", self.base + path, self.token)
        assert status == 200, (path, status, body)
        return body

    def read(self, table: str) -> dict[Any, Any]:
        rows, path = {}, f"/tables/{table}/rows?limit=10000"
        while path:
            page = self.get(path)
            rows.update((row["key"], row["cells"]) for row in page["rows"])
            cursor = page["cursor"]
            path = f"/tables/{table}/rows?cursor={quote(cursor)}&limit=10000" if cursor else None
        return rows

    def reseed(self, base: str) -> None:
        """Put the seed rows back as they were (through ``base``): earlier fuzzing deletes."""
        for table, spec in FUZZ_TABLES.items():
            ops = [{"op": "upsert", "key": k, "cells": c} for k, c in spec["rows"].items()]
            url = f"{base}/tables/{table}/rows:batch"
            status, body, _ = call("POST", url, self.token, {"mutations": ops})
            assert status == 200 and not body["failed"], body
        self.known.clear()

    def rows(self, table: str) -> dict[Any, Any]:
        if table not in self.known:
            self.known[table] = self.read(table)
        return self.known[table]

    def tables(self) -> list[dict[str, Any]]:
        if self.table_list is None:
            self.table_list = self.get("/tables/")["tables"]
        return self.table_list

    def expect(self, table: str, rows: dict[Any, Any], what: str) -> None:
        """The cluster holds ``rows`` in ``table``: they are the model from now on."""
        actual = self.read(table)
        if actual != rows:
            changed = sorted(
                (repr(k) for k in set(actual) | set(rows) if actual.get(k) != rows.get(k)),
            )
            raise AssertionError(f"{what}: rows {', '.join(changed[:10])} of {table} differ")
        self.known[table] = actual

    def compat_rows(self, ids: list[Any]) -> Any:
        keys = [str(k) for k in ids if type(k) in (int, str)]
        keys = [k for k in keys if re.fullmatch(r"-?[0-9]{1,18}", k)][:100]
        return self.get(f"/tables/{COMPAT_TABLE}/rows?keys={','.join(keys)}") if keys else None


def applied(model: dict[Any, Any], case: Case, body: Any) -> dict[Any, Any]:
    """The table after an accepted write, from the request and its per-row results."""
    rows = {key: dict(cells) for key, cells in model.items()}
    table, operation = case.path_parameters["table"], case.operation.label
    if "{key}" in operation:
        key = key_from_text(table, case.path_parameters["key"])
        assert key in rows, f"{operation} on {key!r}, a row that does not exist: {body!r}"
    if operation == "PATCH /api/v1/tables/{table}/rows/{key}":
        assert body == {"key": key, "status": "updated"}, body
        rows[key].update(as_stored(case.body["cells"]))
    elif operation == "DELETE /api/v1/tables/{table}/rows/{key}":
        assert body == {"key": key, "status": "deleted"}, body
        del rows[key]
    elif operation == "DELETE /api/v1/tables/{table}/rows/{key}/cells":
        columns = case.query["columns"].split(",")
        present = any(c in rows[key] for c in columns)
        assert body == {"key": key, "status": "updated" if present else "unchanged"}, body
        for column in columns:
            rows[key].pop(column, None)
    else:  # adding rows (inserts) or a batch: per-row results in request order
        ops = case.body["mutations"] if isinstance(case.body, dict) else case.body
        assert len(body["results"]) == len(ops), body
        for op, result in zip(ops, body["results"], strict=True):
            if result["status"] != "error":
                mutate(rows, op.get("op", "insert"), result, op)
    return rows


def mutate(rows: dict[Any, Any], op: str, result: dict[str, Any], mutation: dict[str, Any]) -> None:
    """Apply one mutation the API says succeeded (``result``) to the model."""
    key, status, cells = result["key"], result["status"], as_stored(mutation.get("cells"))
    expected = {
        "insert": {"created"},
        "upsert": {"created", "updated"},
        "set": {"updated"},
        "delete_cells": {"updated", "unchanged"},
        "delete_row": {"deleted"},
    }[op]
    assert status in expected, f"{op} of {key!r} answered {status}"
    assert (key in rows) == (status not in ("created",)), f"{op} of {key!r}: {status}"
    if op in ("insert", "upsert"):
        rows[key] = cells
    elif op == "set":
        rows[key].update(cells)
    elif op == "delete_cells":
        for column in mutation["columns"]:
            rows[key].pop(column, None)
    else:
        del rows[key]


def check_read(model: dict[Any, Any], case: Case, response: Response) -> None:
    """A read of a fuzzer's table answers what the model holds."""
    table, status = case.path_parameters["table"], response.status_code
    body = response.json()
    if case.operation.label == "GET /api/v1/tables/{table}/rows/{key}":
        if status == 200:
            key = key_from_text(table, case.path_parameters["key"])
            assert key in model and body == {"key": key, "cells": model[key]}, body
        elif body["error"]["code"] == "row_not_found":
            assert key_from_text(table, case.path_parameters["key"]) not in model
        return
    query = case.query or {}
    if status != 200 or "cursor" in query:
        return
    many = query.get("key", [])
    many = many if isinstance(many, list) else [many]  # an empty list sends no ?key= at all
    # Negative generation may give a ?key= value of another type (an integer): it goes
    # out as its text, and that text is what the API reads.
    many = [v if isinstance(v, str) else str(v) for v in many if v is not None]
    if "keys" in query or many:
        texts = query["keys"].split(",") if "keys" in query else []
        keys = [key_from_text(table, text) for text in texts + many]
        expected = {
            "rows": [{"key": k, "cells": model[k]} for k in keys if k in model],
            "missing": [k for k in keys if k not in model],
            "failed": [],
        }
    else:
        start = key_from_text(table, query["start"]) if "start" in query else None
        end = key_from_text(table, query["end"]) if "end" in query else None
        limit = int(query.get("limit", 100))
        found = sorted(
            k for k in model if (start is None or k >= start) and (end is None or k < end)
        )
        page = [{"key": k, "cells": model[k]} for k in found[:limit]]
        expected = {"rows": page, "cursor": body["cursor"] if len(found) > limit else None}
    assert body == expected, f"read answered {body!r}, the table holds {expected!r}"


# --- steering generated requests onto the fuzzer's data ---------------------------------------


def pick(value: Any, choices: tuple[Any, ...], salt: str) -> Any:
    """A choice that is a pure function of a generated value, so Hypothesis still drives it."""
    return choices[zlib.crc32(f"{salt}{value!r}".encode()) % len(choices)]


def confine(case: Case) -> None:
    """Point a case at the fuzzer's own data (see the module docstring), in place."""
    params = case.path_parameters
    if params and "table" in params:
        params["table"] = table = pick(params["table"], (*FUZZ_TABLES, MISSING_TABLE), "t")
        if table in FUZZ_TABLES:
            steer(case, table)
    if case.operation.label == "POST /api/v1/tables/":
        name = case.body.get("name") if isinstance(case.body, dict) else None
        if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            case.body["name"] = f"fuzz-{name}"[:64]  # a valid name stays valid


def steer(case: Case, table: str) -> None:
    """Swap some generated keys and column names for ones the table has."""
    known = tuple(FUZZ_TABLES[table]["rows"])
    params, query, body = case.path_parameters, case.query, case.body
    if "key" in params:
        params["key"] = pick(params["key"], (*map(str, known), params["key"]), "k")
    if query and isinstance(query.get("columns"), str):
        names = query["columns"].split(",")
        query["columns"] = ",".join(steer_columns(names, table, f"{params!r}"))
    items = body.get("mutations", [body]) if isinstance(body, dict) else body
    for i, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict):
            continue
        if "key" in item:
            item["key"] = pick((item["key"], i), (*known, item["key"], item["key"]), "k")
        salt = f"{i}{item!r}"  # the whole item: the same name may go either way
        if isinstance(item.get("cells"), dict):
            names = steer_columns(item["cells"], table, salt)
            item["cells"] = dict(zip(names, item["cells"].values(), strict=True))
        if isinstance(item.get("columns"), list):
            item["columns"] = steer_columns(item["columns"], table, salt)


def steer_columns(names: Iterable[Any], table: str, salt: Any = None) -> list[Any]:
    """Most names swapped for allowed ones: one bad name refuses a whole request."""
    columns = tuple(FUZZ_TABLES[table]["columns"] or SOME_COLUMNS)
    choices = (*columns, *columns, *columns, None)  # None: keep the generated name
    return [
        name if not isinstance(name, str) else pick((name, i, salt), choices, "c") or name
        for i, name in enumerate(names)
    ]


def compat_title(case: Case) -> str | None:
    body = case.body
    if case.operation.path != COMPAT_PATH or not isinstance(body, dict):
        return None
    title = body.get("queryTitle")
    return title if isinstance(title, str) else None


def compat_ids(body: dict[str, Any]) -> list[Any]:
    query = body.get("queryBody")
    if not isinstance(query, dict):
        return []
    ids = list(query["ids"]) if isinstance(query.get("ids"), list) else []
    if isinstance(query.get("data"), list):
        ids += [row["id"] for row in query["data"] if isinstance(row, dict) and "id" in row]
    return ids


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    """A real local cluster for this module only (shadows the session's shared one)."""
    with start_cluster(tmp_path_factory.mktemp("fuzz-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def model(cluster) -> Model:
    """The fuzzer's tables, created and seeded through the first client server."""
    base = f"{cluster.url(cluster.client_ports[0])}/api/v1"
    for name, spec in FUZZ_TABLES.items():
        body = {"name": name, "key_type": spec["key_type"], "columns": spec["columns"]}
        status, answer, _ = call("POST", f"{base}/tables/", cluster.api_token, body)
        assert status == 201, answer
        rows = [{"key": k, "cells": cells} for k, cells in spec["rows"].items()]
        status, answer, _ = call("POST", f"{base}/tables/{name}/rows", cluster.api_token, rows)
        assert status == 201, answer
    model = Model(f"{cluster.url(cluster.client_ports[1])}/api/v1", cluster.api_token)
    for name, spec in FUZZ_TABLES.items():
        assert model.rows(name) == spec["rows"]
    return model


@pytest.fixture(scope="module")
def api_schema(cluster) -> schemathesis.BaseSchema:
    """The schema as the first client server serves it; requests go to that server."""
    base = cluster.url(cluster.client_ports[0])
    config = schemathesis.Config.from_dict({"base-url": base, "request-timeout": 30})
    return schemathesis.openapi.from_url(f"{base}/api/v1/schema/?format=json", config=config)


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """One keep-alive session for every fuzzed request."""
    with requests.Session() as session:
        yield session


# --- the tests --------------------------------------------------------------------------------


def test_the_fuzzer_covers_every_operation_of_the_schema(api_schema):
    labels = {result.ok().label for result in api_schema.get_all_operations()}
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_the_api_keeps_its_contract_under_fuzzing(label, api_schema, cluster, model, http):
    operation = api_schema.find_operation_by_label(label)
    auth = {"Authorization": f"Bearer {cluster.api_token}"}
    model.reseed(f"{cluster.url(cluster.client_ports[0])}/api/v1")
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=DEADLINE,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=cases)
    def fuzz(case):
        exercise(case, model, http, auth)

    (seed(int(SEED))(fuzz) if SEED else fuzz)()


def fresh_idempotency_key(case: Case) -> None:
    """A well-formed generated ``Idempotency-Key`` names a new request every time: the model
    knows no replays (test_idempotency.py and client_app's tests cover those). Malformed
    keys are sent as generated: they must get their 400."""
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() != "idempotency-key" or not isinstance(value, str):
            continue
        if 1 <= len(value) <= 255 and value.isascii() and value.isprintable():
            headers[name] = uuid.uuid4().hex


def exercise(case: Case, model: Model, http: requests.Session, auth: dict[str, str]) -> None:
    """Send one generated request; check the answer and what the data became."""
    confine(case)
    fresh_idempotency_key(case)
    title = compat_title(case)
    if title in COMPAT_WRITES and case.meta is not None and case.meta.generation.mode.is_positive:
        return  # a valid write would change products, which other tests rely on
    table = (case.path_parameters or {}).get("table")
    writes = case.operation.method.upper() != "GET"
    rows = model.rows(table) if table in FUZZ_TABLES else None
    creates = case.operation.label == "POST /api/v1/tables/"
    tables = list(model.tables()) if creates or (writes and table == MISSING_TABLE) else None
    products = model.compat_rows(compat_ids(case.body)) if title in COMPAT_WRITES else None

    response = case.call(session=http, headers=auth)
    case.validate_response(response, checks=CHECKS, headers=auth)
    status = response.status_code

    if case.operation.label in TABLE_OPERATIONS:
        # The table itself (its replication factor): never its rows.
        if rows is not None:
            model.expect(table, rows, f"{case.operation.label} ({status}) changed the rows")
        if status == 200:
            answer = response.json()
            assert answer["name"] == table, answer
            if writes and isinstance(case.body, dict) and "rf" in case.body:
                assert answer["rf"] == case.body["rf"], answer
                model.table_list = None  # the listing shows the new rf
    elif rows is not None and not writes:
        check_read(rows, case, response)
    elif rows is not None and 400 <= status < 500:
        model.expect(table, rows, f"a refused request ({status}) changed the data")
    elif rows is not None and status < 300:
        model.expect(table, applied(rows, case, response.json()), "an accepted write")
    if table == MISSING_TABLE:
        assert status >= 400, f"{status} for a table that does not exist"
    if case.operation.label == "GET /api/v1/tables/" and status == 200:
        assert set(FUZZ_TABLES) <= {t["name"] for t in response.json()["tables"]}
    if tables is not None:
        model.table_list = None
        if creates and status == 201:
            assert response.json() in model.tables(), response.json()
        else:
            assert model.tables() == tables, f"a refused request ({status}) changed the tables"
    if title in COMPAT_WRITES:
        assert status >= 400, f"{title} outside the schema was accepted"
        assert model.compat_rows(compat_ids(case.body)) == products, "refused, yet changed"


def test_every_operation_refuses_a_missing_or_bad_token_in_the_error_shape(cluster, model):
    """401 (or 403 for a server's token) with the error shape, and nothing changed."""
    base = cluster.url(cluster.client_ports[0])
    token = cluster.api_token
    server_token = (cluster.data_dir / "tokens" / "client-1.jwt").read_text().strip()
    bad = {
        None: (401, "unauthenticated"),
        "Basic YWRtaW46YWRtaW4=": (401, "unauthenticated"),
        "Bearer not-a-jwt": (401, "token_invalid"),
        f"Bearer {token[:-4]}{'AAAA' if token[-4:] != 'AAAA' else 'BBBB'}": (401, "token_invalid"),
        f"Bearer {server_token}": (403, "token_wrong_audience"),
    }
    valid = {  # requests that a valid token would get accepted
        "GET /api/v1/tables/": None,
        "POST /api/v1/tables/": {"name": "fuzz-no-token", "key_type": "int"},
        "GET /api/v1/tables/{table}": None,
        "PATCH /api/v1/tables/{table}": {"rf": 2},
        "GET /api/v1/tables/{table}/rows": None,
        "POST /api/v1/tables/{table}/rows": [{"key": 5, "cells": {"a": 5}}],
        "POST /api/v1/tables/{table}/rows:batch": {"mutations": [{"op": "delete_row", "key": 1}]},
        "GET /api/v1/tables/{table}/rows/{key}": None,
        "PATCH /api/v1/tables/{table}/rows/{key}": {"cells": {"a": 2}},
        "DELETE /api/v1/tables/{table}/rows/{key}": None,
        "DELETE /api/v1/tables/{table}/rows/{key}/cells": None,
        "POST /api/v1/client/send-db-query": {
            "queryTitle": "delete-rows",
            "queryBody": {"ids": [1]},
        },
    }
    assert set(valid) == set(OPERATIONS)
    before = model.read(INT_TABLE), model.get("/tables/"), model.compat_rows([1])
    for label, body in valid.items():
        method, path = label.split(" ")
        path = path.replace("{table}", INT_TABLE).replace("{key}", "1")
        path += "?columns=a" if path.endswith("/cells") else ""
        for header, (status, code) in bad.items():
            headers = {"Authorization": header} if header else {}
            response = requests.request(method, base + path, json=body, headers=headers, timeout=30)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), (
                label,
                header and header[:20],
                response.text,
            )
            assert set(response.json()["error"]) == ERROR_FIELDS
            if status == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (model.read(INT_TABLE), model.get("/tables/"), model.compat_rows([1])) == before

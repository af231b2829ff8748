"""Changing a table's replication factor: raising queues re-replication, lowering trims
the in-sync sets in one metadata commit; the internal endpoint client servers relay to."""

from __future__ import annotations

import orjson
import pytest

from distdb import auth
from distdb.errors import TableNotFound, ValidationFailed
from master_app.models import Table, Tablet, TabletServer
from master_app.services import tables
from master_app.services.metadata import (
    RangeAssignment,
    metadata_commit,
    metadata_current,
    metadata_version_current,
)


@pytest.fixture
def three(db):
    return [
        TabletServer.objects.create(node_id=f"tablet-{i}", url=f"http://t{i}", state="up")
        for i in (1, 2, 3)
    ]


@pytest.fixture
def repairs(monkeypatch) -> list[str]:
    """Re-replication runs queued by ``table_rf_set``."""
    queued: list[str] = []
    monkeypatch.setattr(tables, "repair_soon", lambda: queued.append("repair"))
    return queued


def _replicated(rf: int, *ranges: RangeAssignment) -> Table:
    table = Table.objects.create(name="t", key_type="str", rf=rf)
    metadata_commit(table, list(ranges), "test layout")
    return table


def _in_sync() -> list[list[str]]:
    return [t.in_sync for t in Tablet.objects.filter(table__name="t").order_by("start_key")]


def test_raising_rf_commits_a_version_with_it_and_queues_a_repair(three, repairs):
    _replicated(1, RangeAssignment("t", "", None, "tablet-1"))
    before = metadata_version_current()
    tables.table_rf_set("t", 3)
    assert metadata_version_current() == before + 1
    assert metadata_current().tables["t"].rf == 3
    assert Table.objects.get(name="t").rf == 3
    assert _in_sync() == [[]]  # the followers come by copying, from the repair
    assert repairs == ["repair"]


def test_lowering_rf_trims_every_range_in_one_commit(three, repairs):
    _replicated(
        3,
        RangeAssignment("t", "", "m", "tablet-1", ("tablet-2", "tablet-3")),
        RangeAssignment("t", "m", None, "tablet-2", ("tablet-3", "tablet-1")),
    )
    before = metadata_version_current()
    tables.table_rf_set("t", 2)
    assert metadata_version_current() == before + 1
    assert _in_sync() == [["tablet-2"], ["tablet-3"]]
    assert {t.version for t in Tablet.objects.all()} == {before + 1}
    assert metadata_current().tables["t"].rf == 2
    assert [len(t.in_sync) for t in metadata_current().tablets] == [1, 1]
    assert repairs == []  # nothing to add


def test_lowering_rf_drops_followers_on_servers_that_are_down_first(three, repairs):
    _replicated(3, RangeAssignment("t", "", None, "tablet-1", ("tablet-2", "tablet-3")))
    TabletServer.objects.filter(node_id="tablet-2").update(state="down")
    tables.table_rf_set("t", 2)
    assert _in_sync() == [["tablet-3"]]


def test_lowering_rf_to_one_leaves_no_followers(three, repairs):
    _replicated(
        3,
        RangeAssignment("t", "", "m", "tablet-1", ("tablet-2", "tablet-3")),
        RangeAssignment("t", "m", None, "tablet-2", ("tablet-1",)),
    )
    tables.table_rf_set("t", 1)
    assert _in_sync() == [[], []]
    assert [t.in_sync for t in metadata_current().tablets] == [[], []]
    assert metadata_current().tables["t"].rf == 1


def test_setting_the_same_rf_changes_nothing(three, repairs):
    _replicated(2, RangeAssignment("t", "", None, "tablet-1", ("tablet-2",)))
    before = metadata_version_current()
    assert tables.table_rf_set("t", 2).rf == 2
    assert metadata_version_current() == before
    assert repairs == []


@pytest.mark.parametrize("rf", [0, 6, -1, "2", 2.0, True, None])
def test_an_rf_outside_one_to_five_or_not_an_integer_is_refused(three, repairs, rf):
    _replicated(2, RangeAssignment("t", "", None, "tablet-1", ("tablet-2",)))
    before = metadata_version_current()
    with pytest.raises(ValidationFailed):
        tables.table_rf_set("t", rf)
    assert metadata_version_current() == before
    assert Table.objects.get(name="t").rf == 2


def test_changing_the_rf_of_an_unknown_table_is_a_404(three, repairs):
    with pytest.raises(TableNotFound):
        tables.table_rf_set("nope", 2)


def test_a_new_table_takes_its_rf_and_that_many_servers(three):
    table = tables.table_create("r", "int", rf=3)
    tablet = Tablet.objects.get(table=table)
    assert table.rf == 3 and len(tablet.in_sync) == 2
    assert tablet.server.node_id not in tablet.in_sync


# --- the internal endpoint ------------------------------------------------------------------------


async def _post(path: str, body: object, role: str = "client") -> tuple[int, dict]:
    from master_app.internal_api import app

    token = auth.token_sign(f"{role}-1", role)
    raw = orjson.dumps(body)
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": [
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ],
    }
    out: dict = {"body": b""}

    async def receive():
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return out["status"], orjson.loads(out["body"])


@pytest.mark.django_db(transaction=True)
async def test_a_client_server_changes_rf_and_gets_the_new_metadata(repairs):
    from asgiref.sync import sync_to_async

    def layout() -> None:
        for i in (1, 2):
            TabletServer.objects.create(node_id=f"tablet-{i}", url=f"http://t{i}", state="up")
        _replicated(2, RangeAssignment("t", "", None, "tablet-1", ("tablet-2",)))

    await sync_to_async(layout)()
    status, body = await _post("/internal/v1/tables/t/rf", {"type": "table_rf", "rf": 1})
    assert status == 200, body
    assert body["type"] == "metadata" and body["tables"]["t"]["rf"] == 1
    assert body["tablets"][0]["in_sync"] == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("table", "rf", "role", "status", "code"),
    [
        ("t", 0, "client", 400, "validation_failed"),
        ("t", 6, "client", 400, "validation_failed"),
        ("t", "x", "client", 400, "validation_failed"),
        ("nope", 2, "client", 404, "table_not_found"),
        ("t", 2, "tablet", 403, "token_wrong_role"),
    ],
)
async def test_the_rf_endpoint_refuses_bad_input_unknown_tables_and_tablets(
    repairs, table, rf, role, status, code
):
    from asgiref.sync import sync_to_async

    await sync_to_async(Table.objects.create)(name="t", key_type="str", rf=2)
    path, body = f"/internal/v1/tables/{table}/rf", {"type": "table_rf", "rf": rf}
    got, answer = await _post(path, body, role)
    assert got == status, answer
    assert answer["error"]["code"] == code

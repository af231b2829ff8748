"""The cluster dashboard: its figures (rates, quantiles, people's units) and the page itself."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from master_app.models import ConsolidatedRow, RebalanceRun, Table
from master_app.services import dashboard
from master_app.services.metadata import RangeAssignment, metadata_commit


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0.0004, "400 µs"),
        (0.0042, "4.2 ms"),
        (0.042, "42 ms"),
        (0.9379593300000124, "0.94 s"),
        (12.5, "12.50 s"),
        (185, "3 min 5 s"),
        (7440, "2 h 4 min"),
    ],
)
def test_durations_are_written_for_people(seconds, text):
    assert dashboard.human_duration(seconds) == text


def test_the_p99_comes_from_the_histogram_between_two_readings():
    before = {0.01: 100.0, 0.1: 100.0, 1.0: 100.0, float("inf"): 100.0}
    # 100 new requests: 90 under 10 ms, 9 under 100 ms, 1 under 1 s
    after = {0.01: 190.0, 0.1: 199.0, 1.0: 200.0, float("inf"): 200.0}
    assert dashboard.quantile(0.99, before, after) == pytest.approx(0.1)
    assert dashboard.quantile(0.5, before, after) == pytest.approx(0.01 * 50 / 90)
    assert dashboard.quantile(0.99, after, after) is None  # nothing happened


def test_a_reading_sums_the_public_and_internal_apis_but_not_the_admin():
    text = """
# TYPE distdb_http_requests counter
distdb_http_requests_total{api="internal",endpoint="read",method="POST",status="200"} 7
distdb_http_requests_total{api="public",endpoint="row",method="GET",status="200"} 3
distdb_http_requests_total{api="web",endpoint="admin",method="GET",status="200"} 50
# TYPE distdb_tablet_rows gauge
distdb_tablet_rows{table="a"} 10
distdb_tablet_rows{table="b"} 5
"""
    sample = dashboard.sample_parse(text, at=1.0)
    assert sample.requests == 10 and sample.rows == 15


@pytest.fixture
def staff(client, db):
    User.objects.create_superuser("admin", "a@example.com", "pw-123456")
    client.login(username="admin", password="pw-123456")
    return client


def test_the_dashboard_shows_servers_charts_plan_and_runs(staff, servers, monkeypatch):
    monkeypatch.setattr(dashboard, "RATE_WINDOW_S", (0.0, 300.0))  # no second's wait
    table = Table.objects.create(name="products", key_type="int")
    metadata_commit(
        table,
        [
            RangeAssignment("products", "", "5", "tablet-1"),
            RangeAssignment("products", "5", None, "tablet-2"),
        ],
        "test",
    )
    ConsolidatedRow.objects.bulk_create(
        ConsolidatedRow(table=table, key=str(k), cells={}) for k in range(1, 9)
    )
    RebalanceRun.objects.create(trigger="admin", outcome="succeeded", duration_s=0.9379593300000124)
    page = staff.get("/admin/dashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    for node in ("master", "tablet-1", "tablet-2"):
        assert f'data-node="{node}"' in html
    assert 'id="key-distribution-products"' in html
    assert 'id="key-access-products"' in html
    assert 'id="plan-preview"' in html
    assert "0.94 s" in html and "0.9379593300000124" not in html
    assert "/admin/dashboard/" in staff.get("/admin/").content.decode()  # linked from the index


def test_the_dashboard_shows_replication_lag_and_failovers(staff, servers, monkeypatch):
    from distdb import protocol
    from master_app.models import Failover
    from master_app.services import replication_view

    monkeypatch.setattr(dashboard, "RATE_WINDOW_S", (0.0, 300.0))  # no second's wait
    table = Table.objects.create(name="orders", key_type="int", rf=2)
    metadata_commit(table, [RangeAssignment("orders", "", None, "tablet-1", ("tablet-2",))], "t")
    Failover.objects.create(table="orders", from_server="tablet-2", to_server="tablet-1",
                            version=1, unavailable_s=4.5)  # fmt: skip
    states = {
        "tablet-1": protocol.ReplicationState(
            node_id="tablet-1", last_seq=9,
            led=[protocol.LedRangeState(table="orders", last_seq=9)],
        ),
        "tablet-2": protocol.ReplicationState(
            node_id="tablet-2", last_seq=0,
            followed=[protocol.FollowedRangeState(table="orders", leader="tablet-1", version=1,
                                                  applied_seq=6, applied_age_s=0.94)],
        ),
    }  # fmt: skip
    monkeypatch.setattr(replication_view, "tablet_get", lambda server, *a, **k: states[server])
    monkeypatch.setattr(dashboard, "tablet_get", lambda *a, **k: protocol.KeyAccess(buckets=[]))
    html = staff.get("/admin/dashboard/").content.decode()
    section = html[html.index('id="replication"') :]
    assert "orders [-inf, +inf)" in section and "2 / 2" in section
    assert "tablet-2: 3 entries, 0.94 s" in section
    assert "tablet-2 &rarr; tablet-1" in section and "4.50 s" in section


def test_the_dashboard_is_for_staff_only(client, db):
    page = client.get("/admin/dashboard/")
    assert page.status_code == 302 and "/admin/login/" in page["Location"]


# --- the tablet servers' states, for the client servers' circuit breakers ------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_master_tells_client_servers_which_tablet_servers_are_down(settings):
    import datetime

    import orjson
    from asgiref.sync import sync_to_async
    from django.utils import timezone

    from distdb import auth
    from master_app.internal_api import app
    from master_app.models import TabletServer

    now = timezone.now()
    silent = now - datetime.timedelta(seconds=settings.DISTDB_HEARTBEAT_TIMEOUT_S + 1)
    await sync_to_async(TabletServer.objects.bulk_create)(
        [
            TabletServer(node_id="tablet-1", url="http://t1", state="up", last_heartbeat=now),
            TabletServer(node_id="tablet-2", url="http://t2", state="down", last_heartbeat=now),
            TabletServer(node_id="tablet-3", url="http://t3", state="up", last_heartbeat=silent),
        ]
    )

    async def get(role: str) -> tuple[int, object]:
        token = auth.token_sign(f"{role}-1", role)
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/internal/v1/servers",
            "query_string": b"",
            "headers": [(b"authorization", f"Bearer {token}".encode())],
        }
        out: dict = {"body": b""}

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
            else:
                out["body"] += message.get("body", b"")

        await app(scope, receive, send)
        return out["status"], orjson.loads(out["body"])

    status, body = await get("client")
    assert status == 200
    assert body == {"v": 1, "type": "server_states", "down": ["tablet-2", "tablet-3"]}
    status, body = await get("tablet")
    assert status == 403

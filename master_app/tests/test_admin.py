"""The master's admin answers for every model, and issuing a token shows it once."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from master_app.models import ApiToken, ServerToken, Table
from master_app.services.metadata import RangeAssignment, metadata_commit
from master_app.services.tokens import server_token_issue, server_tokens_revoked

MODELS = [
    "table",
    "tabletserver",
    "tablet",
    "metadataversion",
    "consolidatedrow",
    "rebalancerun",
    "apitoken",
    "servertoken",
    "failover",
]


@pytest.fixture
def admin_client(client, db):
    User.objects.create_superuser("admin", "a@example.com", "pw-123456")
    client.login(username="admin", password="pw-123456")
    return client


@pytest.mark.parametrize("model", MODELS)
def test_every_master_model_has_a_working_changelist(admin_client, servers, model):
    table = Table.objects.create(name="t", key_type="int")
    metadata_commit(table, [RangeAssignment("t", "", None, "tablet-1")], "x")
    response = admin_client.get(f"/admin/master_app/{model}/")
    assert response.status_code == 200


def test_adding_a_token_in_the_admin_shows_it_once(admin_client):
    response = admin_client.post("/admin/master_app/apitoken/add/", {"name": "bob"}, follow=True)
    assert response.status_code == 200
    assert ApiToken.objects.filter(name="bob").count() == 1
    assert b"copy it now" in response.content


def test_a_run_report_shows_its_plan_and_moves(admin_client):
    from master_app.models import RebalanceRun

    run = RebalanceRun.objects.create(
        trigger="admin",
        outcome="succeeded",
        plan=[
            {
                "table": "t",
                "before": {"tablet-1": 10, "tablet-2": 0},
                "after": {"tablet-1": 5, "tablet-2": 5},
                "note": "",
                "moves": [
                    {
                        "start_display": "6",
                        "end_display": "+inf",
                        "source": "tablet-1",
                        "target": "tablet-2",
                        "rows": 5,
                    }
                ],
            }
        ],
        moves=[
            {
                "table": "t",
                "source": "tablet-1",
                "target": "tablet-2",
                "rows_copied": 5,
                "catch_up_entries": 1,
                "freeze_ms": 42.0,
                "duration_s": 0.5,
                "outcome": "succeeded",
                "error": "",
                "warnings": [],
            }
        ],
    )
    page = admin_client.get(f"/admin/master_app/rebalancerun/{run.pk}/change/").content.decode()
    assert "[6, +inf) tablet-1 → tablet-2: 5 rows" in page
    assert "<td>42</td>" in page


def test_rebalance_now_queues_a_run_or_says_one_is_going(admin_client, monkeypatch):
    from master_app import tasks
    from master_app.services.leases import MAINTENANCE, lease_acquire

    queued = []
    monkeypatch.setattr(tasks.rebalance, "delay", lambda **kw: queued.append(kw))
    url = "/admin/master_app/rebalancerun/rebalance-now/"
    page = admin_client.post(url, {"dry_run": "1"}, follow=True).content.decode()
    assert queued == [{"trigger": "admin", "dry_run": True}]
    assert "A dry run (plan only) was queued" in page
    assert "Rebalance now" in page and "Rows per tablet server" not in page  # no servers yet

    lease_acquire(MAINTENANCE, "rebalance (beat) on host", 60)
    page = admin_client.post(url, follow=True).content.decode()
    assert len(queued) == 1
    assert "A run is already going: rebalance (beat) on host" in page
    assert admin_client.get(url).status_code == 302  # GET does nothing


def test_deleting_a_table_in_the_admin_goes_through_the_service(admin_client, monkeypatch):
    from master_app.admin import _cluster as master_admin
    from master_app.models import Table

    table = Table.objects.create(name="doomed", key_type="int")
    deleted: list[str] = []
    monkeypatch.setattr(master_admin, "table_delete", deleted.append)
    response = admin_client.post(
        f"/admin/master_app/table/{table.pk}/delete/", {"post": "yes"}, follow=True
    )
    assert response.status_code == 200 and deleted == ["doomed"]


def test_server_tokens_are_listed_and_revoked_in_the_admin(admin_client):
    old, _ = server_token_issue("tablet-1", "tablet", url="http://t1")
    new, _ = server_token_issue("tablet-1", "tablet", url="http://t1")
    listing = admin_client.get("/admin/master_app/servertoken/")
    assert old.jti.encode() in listing.content and new.jti.encode() in listing.content
    response = admin_client.post(
        "/admin/master_app/servertoken/",
        {"action": "revoke", "_selected_action": [old.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert server_tokens_revoked() == [old.jti]
    assert ServerToken.objects.get(pk=new.pk).revoked_at is None


# --- replication ----------------------------------------------------------------------------------


def _table_form(table: Table, **changes) -> dict:
    return {"columns": "null", "rf": table.rf, **changes, "tablets-TOTAL_FORMS": "1",
            "tablets-INITIAL_FORMS": "1", "tablets-MIN_NUM_FORMS": "0",
            "tablets-MAX_NUM_FORMS": "1000", "tablets-0-id": table.tablets.get().pk,
            "tablets-0-table": table.pk}  # fmt: skip


def test_rf_is_listed_and_changing_it_in_the_admin_goes_through_the_service(
    admin_client, servers, monkeypatch
):
    from master_app.admin import _cluster

    table = Table.objects.create(name="t", key_type="int", rf=1)
    metadata_commit(table, [RangeAssignment("t", "", None, "tablet-1")], "x")
    Table.objects.filter(pk=table.pk).update(next_key=500)  # keys handed out meanwhile
    assert (
        '<td class="field-rf">1</td>'
        in admin_client.get("/admin/master_app/table/").content.decode()
    )
    changed: list[tuple[str, int]] = []
    monkeypatch.setattr(_cluster, "table_rf_set", lambda name, rf: changed.append((name, rf)))
    url = f"/admin/master_app/table/{table.pk}/change/"
    response = admin_client.post(url, _table_form(table, rf=2))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert changed == [("t", 2)]
    table.refresh_from_db()
    assert table.rf == 1  # not saved raw: the service commits it with the metadata
    assert table.next_key == 500  # the form's stale copy was not written back
    refused = admin_client.post(url, _table_form(table, rf=6))
    assert refused.status_code == 200 and changed == [("t", 2)]  # a form error, not a save


def test_the_tablet_list_shows_followers_lag_and_missing_copies(admin_client, db, monkeypatch):
    from distdb.errors import TabletUnavailable
    from master_app.models import TabletServer
    from master_app.services import replication_view

    for i in (1, 2, 3):
        TabletServer.objects.create(node_id=f"tablet-{i}", url=f"http://t{i}", state="up")
    table = Table.objects.create(name="t", key_type="int", rf=3)
    metadata_commit(table, [RangeAssignment("t", "", None, "tablet-1", ("tablet-2",))], "x")

    def tablet_get(server, *args, **kwargs):
        raise TabletUnavailable(f"{server} is down", server=server)

    monkeypatch.setattr(replication_view, "tablet_get", tablet_get)
    page = admin_client.get("/admin/master_app/tablet/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "tablet-2: unknown" in html
    assert "2 / 3" in html


def test_failovers_are_listed_read_only_with_durations_for_people(admin_client, db):
    from master_app.models import Failover

    failover = Failover.objects.create(
        table="t", start_key="", end_key=None, from_server="tablet-1", to_server="tablet-2",
        version=7, unavailable_s=0.94,
    )  # fmt: skip
    html = admin_client.get("/admin/master_app/failover/").content.decode()
    assert "0.94 s" in html and "tablet-1" in html and "tablet-2" in html
    assert admin_client.get("/admin/master_app/failover/add/").status_code == 403
    change = admin_client.post(f"/admin/master_app/failover/{failover.pk}/change/", {})
    assert change.status_code in (200, 403)
    failover.refresh_from_db()
    assert failover.to_server == "tablet-2"

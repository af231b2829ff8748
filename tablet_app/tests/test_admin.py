"""The tablet server's admin shows every model read-only; freezes are settled with the master."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from distdb.keys import encode_key
from distdb.protocol import Mutation
from tablet_app import admin as tablet_admin
from tablet_app.models import ChangeLogEntry, MetadataSnapshot, OwnedRange, Row
from tablet_app.services import rows_mutate
from tablet_app.tests.conftest import freeze

MODELS = ["row", "changelogentry", "ownedrange", "metadatasnapshot"]


@pytest.fixture
def admin_client(client, owned):
    User.objects.create_superuser("admin", "a@example.com", "pw-123456")
    client.login(username="admin", password="pw-123456")
    rows_mutate("t", [Mutation(op="upsert", key=encode_key("int", 42), cells={"x": "<b>"})])
    return client


@pytest.mark.parametrize("model", MODELS)
def test_every_tablet_model_has_a_working_changelist_and_detail_page(admin_client, model):
    response = admin_client.get(f"/admin/tablet_app/{model}/")
    assert response.status_code == 200
    obj = {
        "row": Row,
        "changelogentry": ChangeLogEntry,
        "ownedrange": OwnedRange,
        "metadatasnapshot": MetadataSnapshot,
    }[model].objects.first()
    detail = admin_client.get(f"/admin/tablet_app/{model}/{obj.pk}/change/")
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content  # read-only: no save button


@pytest.mark.parametrize("model", MODELS)
def test_no_tablet_model_can_be_added_or_deleted_in_the_admin(admin_client, model):
    assert admin_client.get(f"/admin/tablet_app/{model}/add/").status_code == 403


def test_rows_can_be_found_by_their_integer_key(admin_client):
    response = admin_client.get("/admin/tablet_app/row/", {"q": "42"})
    assert encode_key("int", 42).encode() in response.content
    assert b"&lt;b&gt;" in response.content  # cells are escaped
    assert admin_client.get("/admin/tablet_app/row/", {"q": "43"}).context["cl"].result_count == 0


def test_a_frozen_range_shows_its_lease_and_cannot_be_unfrozen_by_hand(admin_client, clock):
    freeze("t", "", None, ends_in_s=12.5)
    pk = OwnedRange.objects.get(table="t").pk
    page = admin_client.get("/admin/tablet_app/ownedrange/")
    assert b"12.5 s" in page.content
    response = admin_client.post(
        "/admin/tablet_app/ownedrange/",
        {"action": "unfreeze", "_selected_action": [pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert OwnedRange.objects.get(pk=pk).frozen_deadline is not None  # no such action


def test_the_settle_action_asks_the_master_like_the_link_agent(admin_client, monkeypatch):
    asked = []

    async def settle() -> int:
        asked.append(True)
        return 1

    monkeypatch.setattr(tablet_admin, "freezes_settle_now", settle)
    freeze("t", "", None, ends_in_s=-1)
    pk = OwnedRange.objects.get(table="t").pk
    response = admin_client.post(
        "/admin/tablet_app/ownedrange/",
        {"action": "settle_freezes", "_selected_action": [pk]},
        follow=True,
    )
    assert asked == [True]
    assert b"1 freeze(s) lifted" in response.content

"""The master's admin answers for every model, and issuing a token shows it once."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from master_app.models import ApiToken, Table
from master_app.services.metadata import RangeAssignment, metadata_commit

MODELS = [
    "table",
    "tabletserver",
    "tablet",
    "metadataversion",
    "consolidatedrow",
    "rebalancerun",
    "apitoken",
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

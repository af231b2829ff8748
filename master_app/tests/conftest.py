from __future__ import annotations

import pytest

from master_app.models import TabletServer


@pytest.fixture(autouse=True)
def master_urls(settings):
    settings.ROOT_URLCONF = "distdb.urls.master"


@pytest.fixture
def servers(db):
    return [
        TabletServer.objects.create(node_id=f"tablet-{i}", url=f"http://t{i}", state="up")
        for i in (1, 2)
    ]

"""``manage.py drain``: mark a tablet server to be emptied by the next rebalance."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from master_app.models import TabletServer


def _drain(*args: str) -> str:
    out = StringIO()
    call_command("drain", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


@pytest.fixture
def server(db):
    return TabletServer.objects.create(node_id="tablet-9", url="http://127.0.0.1:9")


def test_it_marks_the_server_draining_and_undo_clears_it(server):
    assert _drain("tablet-9") == "tablet-9 is draining"
    assert TabletServer.objects.get(node_id="tablet-9").draining
    assert _drain("tablet-9", "--undo") == "tablet-9 is not draining"
    assert not TabletServer.objects.get(node_id="tablet-9").draining


def test_it_refuses_an_unknown_server_by_name(db):
    with pytest.raises(CommandError, match="no tablet server 'tablet-404'"):
        _drain("tablet-404")

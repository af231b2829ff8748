"""Deleting a table removes it everywhere before its name can be used again."""

from __future__ import annotations

import pytest

from distdb.errors import TableBeingDropped, TabletUnavailable
from distdb.protocol import DropTableReply
from master_app.models import DroppedTable, Table, Tablet
from master_app.services import tables
from master_app.services.metadata import metadata_current, metadata_version_current

pytestmark = pytest.mark.django_db


@pytest.fixture
def told(monkeypatch):
    """Every DropTableCommand sent, by server; servers in ``told.down`` do not answer."""

    class Told(list):
        down: set[str] = set()

    sent = Told()

    def link_call(node_id, command, timeout_s=30):
        sent.append((node_id, command.type, command.table))
        if node_id in sent.down:
            raise TabletUnavailable(f"{node_id} is down")
        return DropTableReply(rows=3)

    monkeypatch.setattr(tables, "link_call", link_call)
    monkeypatch.setattr(tables, "metadata_bump", _bump_without_push)
    return sent


def _bump_without_push(reason: str) -> int:
    from master_app.models import MetadataVersion

    version = metadata_version_current() + 1
    MetadataVersion.objects.create(version=version, reason=reason)
    return version


def test_deleting_a_table_removes_it_from_the_metadata_and_tells_every_server(servers, told):
    tables.table_create("gone", "int")
    version = metadata_version_current()
    tables.table_delete("gone")
    assert metadata_version_current() == version + 1
    assert "gone" not in metadata_current().tables
    assert not Tablet.objects.filter(table__name="gone").exists()
    assert sorted(n for n, *_ in told) == sorted(s.node_id for s in servers)
    assert {t for _, t, _ in told} == {"drop_table"}
    assert not DroppedTable.objects.exists()  # every server dropped it


def test_the_name_waits_until_every_server_has_dropped_the_old_rows(servers, told):
    tables.table_create("gone", "str")
    told.down = {servers[0].node_id}
    tables.table_delete("gone")
    assert DroppedTable.objects.get(name="gone").servers == [servers[0].node_id]
    with pytest.raises(TableBeingDropped):
        tables.table_create("gone", "str")
    told.down = set()
    assert tables.tables_dropped_settle() == 0
    assert tables.table_create("gone", "str").name == "gone"


def test_deleting_an_unknown_table_is_a_404(servers, told):
    from distdb.errors import TableNotFound

    with pytest.raises(TableNotFound):
        tables.table_delete("nope")
    assert Table.objects.count() == 0


def test_generated_keys_stop_at_the_top_of_the_key_space(servers):
    from distdb.errors import KeysExhausted

    table = tables.table_create("top", "int")
    tables.keys_reserve_above(table, 2**63 - 1)  # an explicit key at the very top
    table.refresh_from_db()
    assert table.next_key == 2**63 - 1  # no overflow of the 64-bit column
    with pytest.raises(KeysExhausted):
        tables.keys_allocate("top", 10)
    with pytest.raises(KeysExhausted):
        tables.keys_allocate("top", 1, above=2**63 - 1)

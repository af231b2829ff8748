"""Expired Idempotency-Key records are deleted by the tablet server leading their range,
through the write path (logged, so replicated and collected), never one rewritten since."""

from __future__ import annotations

import pytest

from distdb import protocol
from distdb.protocol import IDEMPOTENCY_TABLE
from tablet_app.models import ChangeLogEntry, Row
from tablet_app.services import metadata_apply, rows_mutate
from tablet_app.services.expiry import idempotency_records_expire
from tablet_app.tests.conftest import NODE, OTHER

pytestmark = pytest.mark.django_db
NOW = 1_000_000.0
DAY = 24 * 3600


def metadata(leader: str) -> protocol.Metadata:
    return protocol.Metadata(
        version=1,
        tables={IDEMPOTENCY_TABLE: protocol.TableInfo(key_type="str", rf=1)},
        tablets=[protocol.TabletAssignment(table=IDEMPOTENCY_TABLE, server=leader, url="http://x")],
    )


def put(key: str, at: object) -> None:
    [result] = rows_mutate(
        IDEMPOTENCY_TABLE, [protocol.Mutation(op="upsert", key=key, cells={"at": at})]
    ).results
    assert result["status"] in ("created", "updated")


def keys() -> list[str]:
    return sorted(Row.objects.filter(table=IDEMPOTENCY_TABLE).values_list("key", flat=True))


def test_records_older_than_the_ttl_are_deleted_and_younger_ones_kept(settings):
    settings.DISTDB_IDEMPOTENCY_TTL_S = DAY
    metadata_apply(metadata(NODE), NODE)
    put("old-1", NOW - DAY - 5)
    put("old-2", NOW - 2 * DAY)
    put("young", NOW - DAY + 5)
    put("odd", "not a time")  # not written by the client servers: left alone
    logged = ChangeLogEntry.objects.count()
    assert idempotency_records_expire(now=NOW) == 2
    assert keys() == ["odd", "young"]
    # Through the write path: the deletes are in the log (the followers and the master
    # learn of them from it).
    deletes = ChangeLogEntry.objects.filter(op="delete").values_list("key", flat=True)
    assert ChangeLogEntry.objects.count() == logged + 2 and sorted(deletes) == ["old-1", "old-2"]
    assert idempotency_records_expire(now=NOW) == 0


def test_a_record_rewritten_after_it_was_found_expired_is_kept(settings, monkeypatch):
    settings.DISTDB_IDEMPOTENCY_TTL_S = DAY
    metadata_apply(metadata(NODE), NODE)
    put("k", NOW - 2 * DAY)
    from tablet_app.services import expiry

    real = expiry.rows_mutate

    def rewritten_first(table, mutations, **kw):  # a client's retry lands in between
        put("k", NOW)
        return real(table, mutations, **kw)

    monkeypatch.setattr(expiry, "rows_mutate", rewritten_first)
    assert idempotency_records_expire(now=NOW) == 0
    assert keys() == ["k"]


def test_a_follower_deletes_nothing(settings):
    """Its copy changes only by its leader's log; the leader expires the records."""
    settings.DISTDB_IDEMPOTENCY_TTL_S = DAY
    metadata_apply(metadata(NODE), NODE)
    put("old", NOW - 2 * DAY)
    replicated = metadata(OTHER).model_copy(update={"version": 2})
    metadata_apply(replicated, NODE)  # led elsewhere now
    assert idempotency_records_expire(now=NOW) == 0
    assert keys() == ["old"]

"""The tablet server's operator state: the link status file (readiness) and its metrics."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from distdb import protocol
from tablet_app.metrics import TabletCollector
from tablet_app.services import rows_ingest
from tablet_app.services.status import (
    link_ready,
    link_status_path,
    link_status_read,
    link_status_write,
)
from tablet_app.tests.conftest import tablet


@pytest.fixture(autouse=True)
def no_status_file():
    link_status_path().unlink(missing_ok=True)
    yield
    link_status_path().unlink(missing_ok=True)


def test_a_link_that_never_reported_is_not_ready():
    status = link_status_read()
    assert not status.up and "tablet_link" in status.reason
    with pytest.raises(RuntimeError, match="has not reported"):
        link_ready()


def test_a_link_that_reported_up_recently_is_ready():
    link_status_write(True, heartbeat_s=1.0)
    assert link_status_read().up
    link_ready()


def test_a_link_that_reported_down_is_not_ready():
    link_status_write(False, heartbeat_s=1.0)
    status = link_status_read()
    assert not status.up and status.reason == "the link to the master is down"


def test_a_link_silent_for_three_heartbeats_is_not_ready():
    link_status_write(True, heartbeat_s=1.0)
    at = json.loads(link_status_path().read_text())["at"]
    assert link_status_read(now=at + 4.9).up
    status = link_status_read(now=at + 5.1)
    assert not status.up and "silent for 5 s" in status.reason
    assert not link_status_read(now=at - 1).up  # a clock from another boot


def values(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.django_db
def test_the_collector_reports_rows_bytes_ranges_and_the_change_log(assign):
    assign(tablet("t"), tablet("u", "m"))
    rows_ingest("t", [protocol.Row(key="a", cells={"x": "é"})], log_changes=True)
    rows_ingest("t", [protocol.Row(key="b", cells={"y": 1})], log_changes=True)
    link_status_write(True, heartbeat_s=1.0)
    registry = CollectorRegistry()
    registry.register(TabletCollector())
    got = values(generate_latest(registry).decode())
    assert got[("distdb_tablet_rows", (("table", "t"),))] == 2
    # {"x":"é"} is 10 bytes in UTF-8 (9 characters), {"y":1} is 7
    assert got[("distdb_tablet_bytes", (("table", "t"),))] == 17
    assert got[("distdb_tablet_ranges", (("table", "t"),))] == 1
    assert got[("distdb_tablet_ranges", (("table", "u"),))] == 1
    assert got[("distdb_tablet_rows", (("table", "u"),))] == 0
    assert got[("distdb_changelog_entries", ())] == 2
    assert got[("distdb_changelog_last_seq", ())] >= 2
    assert got[("distdb_link_up", ())] == 1
    assert got[("distdb_metadata_version", ())] == 1


# --- key access (the master's heatmap) -----------------------------------------------------------


async def test_reads_and_writes_are_counted_per_owned_range_and_minute(api, owned):
    from tablet_app.services.access import key_access

    key_access._counts.clear()
    key_access._ranges_at = float("-inf")
    read = {"type": "read", "table": "u", "meta_version": 3, "keys": ["n", "x", "b"]}
    assert (await api("POST", "/internal/v1/read", read)).status == 200
    write = {
        "type": "mutate",
        "table": "t",
        "meta_version": 3,
        "mutations": [{"op": "upsert", "key": k, "cells": {"v": 1}} for k in ("a", "b")],
    }
    assert (await api("POST", "/internal/v1/mutate", write)).status == 200
    answer = await api("GET", "/internal/v1/key-access", role="master")
    assert answer.status == 200
    body = protocol.KeyAccess.model_validate(answer.json())
    got = {(b.table, b.start, b.end): (b.reads, b.writes) for b in body.buckets}
    # "b" of u is tablet-2's (answered outdated): two keys read in [m, +inf)
    assert got == {("u", "m", None): (2, 0), ("t", "", None): (0, 2)}
    assert (await api("GET", "/internal/v1/key-access", role="client")).status == 403


def test_the_key_access_log_forgets_minutes_older_than_an_hour(db):
    from tablet_app.services.access import KeyAccessLog

    now = [6000.0 * 60]
    log = KeyAccessLog(clock=lambda: now[0])
    log._ranges = {"t": ([""], [("", None)])}
    log._ranges_at = float("inf")
    log.record("t", "a", 3, write=False)
    now[0] += 30 * 60
    log.record("t", "a", 1, write=True)
    assert [(b.minute, b.reads, b.writes) for b in log.buckets()] == [(6000, 3, 0), (6030, 0, 1)]
    now[0] += 31 * 60
    assert [(b.minute, b.reads, b.writes) for b in log.buckets()] == [(6030, 0, 1)]

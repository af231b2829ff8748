"""Reads and scans run in a pool of their own (one thread on SQLite, ``DISTDB_READ_THREADS``).

On one SQLite file, threads that read at once only fight over the GIL: sqlite3 lets it go
around every step of a statement, so each row handed back is a thread switch
(docs/performance.md measured 100-key reads at 1,320/s on one thread and 585/s on eight).
A read that has to wait for a write still being replicated must not wait in that thread:
it would hold up every other read of the server, so it waits in the general pool.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from distdb import protocol
from tablet_app.services import metadata_apply, replication, rows, rows_ingest
from tablet_app.tests.conftest import NODE, OTHER, in_thread
from tablet_app.tests.test_internal_api import MUTATE, READ, SCAN, mutate_body, read_body

T_REPLICATED, U_PLAIN = "t", "u"


def led_metadata() -> protocol.Metadata:
    """This server leads ``t`` with a follower (rf 2) and holds ``u`` alone (rf 1)."""
    follower = protocol.Follower(server=OTHER, url=f"http://{OTHER}")
    return protocol.Metadata(
        version=1,
        tables={
            T_REPLICATED: protocol.TableInfo(key_type="str", rf=2),
            U_PLAIN: protocol.TableInfo(key_type="str", rf=1),
        },
        tablets=[
            protocol.TabletAssignment(
                table=T_REPLICATED, server=NODE, url=f"http://{NODE}", in_sync=[follower]
            ),
            protocol.TabletAssignment(table=U_PLAIN, server=NODE, url=f"http://{NODE}"),
        ],
    )


@pytest.fixture
def leading(transactional_db, monkeypatch):
    """Lead ``t`` with a lease (no shipper thread: nothing is sent anywhere) and own ``u``;
    one row in each."""
    monkeypatch.setattr(replication.shipper, "ensure_started", lambda: None)
    monkeypatch.setattr(replication.shipper, "serving", lambda span: True)
    metadata_apply(led_metadata(), NODE)
    rows_ingest(T_REPLICATED, [protocol.Row(key="a", cells={"v": 1})], log_changes=False)
    rows_ingest(U_PLAIN, [protocol.Row(key="x", cells={"v": 2})], log_changes=False)


@pytest.fixture
def pending_a():
    """A write of ``t``/``a`` being replicated (marked pending, as ``rows_mutate`` does)."""
    ticket = replication.shipper.begin(T_REPLICATED, ["a"])
    yield ticket
    replication.shipper.release(ticket)


def scan_body(table: str) -> dict:
    return {"type": "scan", "table": table, "meta_version": 1, "start": "", "limit": 10}


# --- the service: it says when it would have to wait -------------------------------------------


def test_a_read_that_must_not_wait_says_so_when_a_key_is_pending(leading, pending_a):
    with pytest.raises(rows.MustWait):
        rows.rows_read(T_REPLICATED, ["a"], wait=False)
    with pytest.raises(rows.MustWait):
        rows.rows_scan(T_REPLICATED, "", None, 10, wait=False)
    # Keys and tables with nothing pending are read as always.
    assert [k for k, _ in rows.rows_read(T_REPLICATED, ["b"], wait=False).rows] == []
    assert [k for k, _ in rows.rows_read(U_PLAIN, ["x"], wait=False).rows] == ["x"]


def test_a_read_that_may_wait_reads_the_write_once_it_is_replicated(leading, pending_a):
    def release_soon() -> None:
        time.sleep(0.2)
        replication.shipper.release(pending_a)

    threading.Thread(target=release_soon).start()
    assert [k for k, _ in rows.rows_read(T_REPLICATED, ["a"]).rows] == ["a"]


# --- the API: which thread serves what ----------------------------------------------------------


async def test_reads_and_scans_run_in_the_reads_thread_and_writes_do_not(
    api, leading, settings, monkeypatch
):
    settings.DISTDB_READ_THREADS = 1
    seen: dict[str, set[str]] = {"read": set(), "scan": set(), "mutate": set()}

    def spy(name, real):
        def call(*args, **kwargs):
            seen[name].add(threading.current_thread().name)
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(rows, "rows_read", spy("read", rows.rows_read))
    monkeypatch.setattr(rows, "rows_scan", spy("scan", rows.rows_scan))
    monkeypatch.setattr(rows, "rows_mutate", spy("mutate", rows.rows_mutate))
    for _ in range(3):
        assert (await api("POST", READ, read_body(U_PLAIN, ["x"]))).status == 200
        assert (await api("POST", SCAN, scan_body(U_PLAIN))).status == 200
    put = {"op": "set", "key": "y", "cells": {"v": 3}}
    assert (await api("POST", MUTATE, mutate_body(U_PLAIN, put))).status == 200
    assert len(seen["read"] | seen["scan"]) == 1
    assert next(iter(seen["read"])).startswith("distdb-read")
    assert seen["mutate"], "the write never reached the service"
    assert all(not name.startswith("distdb-read") for name in seen["mutate"])


async def test_with_no_reads_pool_reads_share_the_general_one(api, leading, settings, monkeypatch):
    settings.DISTDB_READ_THREADS = 0
    names: set[str] = set()
    real = rows.rows_read

    def spy(*args, **kwargs):
        names.add(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(rows, "rows_read", spy)
    assert (await api("POST", READ, read_body(U_PLAIN, ["x"]))).status == 200
    assert names and all(name.startswith("distdb-db") for name in names)


async def test_without_a_reads_pool_a_read_of_a_pending_key_waits_in_one_go(
    api, leading, pending_a, settings, monkeypatch
):
    """No reads' pool (PostgreSQL): nothing to keep free, so the read may wait at once,
    instead of being refused (``MustWait``) and read a second time."""
    settings.DISTDB_READ_THREADS = 0
    calls: list[bool] = []
    real = rows.rows_read

    def spy(*args, wait=True, **kwargs):
        calls.append(wait)
        return real(*args, wait=wait, **kwargs)

    monkeypatch.setattr(rows, "rows_read", spy)
    waiting = asyncio.create_task(api("POST", READ, read_body(T_REPLICATED, ["a"])))
    await asyncio.sleep(0.1)
    await in_thread(replication.shipper.release, pending_a)
    assert (await waiting).status == 200
    assert calls == [True]


async def test_a_read_waiting_for_replication_does_not_hold_up_other_reads(
    api, leading, pending_a, settings, monkeypatch
):
    settings.DISTDB_READ_THREADS = 1
    # A long wait, so that a read held up behind it (>= 4.9 s) is far from the bound
    # below even on a loaded machine; the write is released well before it ends.
    monkeypatch.setattr(rows, "PENDING_WAIT_S", 5.0)
    waiting = asyncio.create_task(api("POST", READ, read_body(T_REPLICATED, ["a"])))
    await asyncio.sleep(0.1)  # it is waiting for the pending write now
    started = time.monotonic()
    other = await api("POST", READ, read_body(U_PLAIN, ["x"]))
    scan = await api("POST", SCAN, scan_body(U_PLAIN))
    elapsed = time.monotonic() - started
    assert other.status == 200 and scan.status == 200
    assert elapsed < 2.0, f"a read of another table waited {elapsed:.2f} s behind it"
    assert not waiting.done()
    await in_thread(replication.shipper.release, pending_a)
    answer = await waiting
    assert answer.status == 200
    assert [row["key"] for row in answer.json()["rows"]] == ["a"]


@pytest.mark.parametrize(
    ("url", "env", "threads"),
    [
        ("sqlite:///tmp/x.sqlite3", None, 1),
        ("postgres://u@localhost/db", None, 0),
        ("sqlite:///tmp/x.sqlite3", "4", 4),
        ("postgres://u@localhost/db", "2", 2),
    ],
)
def test_the_reads_pool_is_one_thread_on_sqlite_and_none_on_postgresql(
    url, env, threads, monkeypatch
):
    from distdb.settings.base import database_config, read_threads

    if env is None:
        monkeypatch.delenv("DISTDB_READ_THREADS", raising=False)
    else:
        monkeypatch.setenv("DISTDB_READ_THREADS", env)
    monkeypatch.setenv("DISTDB_DATABASE_URL", url)  # as a role's settings module sees it
    assert read_threads(database_config("tablet-1")) == threads

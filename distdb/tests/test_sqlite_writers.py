"""Write transactions of one process take turns on SQLite's write lock in order, instead of
polling for it (``distdb.sqlite_backend``).

The defect: under a write-heavy load, a tablet server's updates sometimes took more than
``DISTDB_TABLET_TIMEOUT_S`` (5 s) and failed with 503 ``tablet_unavailable`` (two in the
bench run ``20261208-014633-full``, workload ``a``; updates reached 2-4.6 s in both
clusters of an A/B). Every write transaction is ``BEGIN IMMEDIATE``; a thread that finds
the lock taken waits in SQLite's busy handler, which sleeps 1, 2, 5 ... then 100 ms at a
time and does not queue: a thread can keep losing to threads that came later. Here that
shows with a short ``busy_timeout``: threads that wait their turn never run out of it.
"""

from __future__ import annotations

import threading

import pytest
from django.db import OperationalError, connection, connections, transaction

from tablet_app.models import Row

THREADS, WRITES = 8, 40


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write lock only")
def test_concurrent_writers_of_one_process_never_time_out_waiting_for_each_other(
    transactional_db,
):
    failures: list[str] = []
    start = threading.Barrier(THREADS)

    def writer(n: int) -> None:
        try:
            with connection.cursor() as cursor:  # SQLite's own wait, kept short
                cursor.execute("PRAGMA busy_timeout=20")
            start.wait(10)
            for i in range(WRITES):
                try:
                    with transaction.atomic():
                        Row.objects.create(table="w", key=f"{n:02d}-{i:04d}", cells="{}")
                        Row.objects.filter(table="w", key=f"{n:02d}-{i:04d}").update(
                            cells='{"again":' + "1" * 2000 + "}"
                        )
                except OperationalError as exc:
                    failures.append(str(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert Row.objects.filter(table="w").count() == THREADS * WRITES


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write lock only")
def test_the_turn_is_given_back_after_a_commit_a_rollback_and_a_close(transactional_db):
    from distdb.sqlite_backend.base import writers_lock

    lock = writers_lock(str(connection.settings_dict["NAME"]))
    with transaction.atomic():
        Row.objects.create(table="w", key="committed", cells="{}")
        assert lock.locked()  # held from BEGIN ...
    assert not lock.locked()  # ... to COMMIT
    with pytest.raises(RuntimeError), transaction.atomic():
        Row.objects.create(table="w", key="rolled-back", cells="{}")
        raise RuntimeError("rolled back")
    assert not lock.locked()
    with transaction.atomic():
        Row.objects.create(table="w", key="closed", cells="{}")
        connection.close()  # a connection dropped mid-transaction (close_old_connections)
    assert not lock.locked()
    assert list(Row.objects.filter(table="w").values_list("key", flat=True)) == ["committed"]

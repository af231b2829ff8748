"""Django's SQLite backend, with one process's write transactions taking turns in order.

Loaded as the database ``ENGINE`` of every role on SQLite (``distdb.settings.base.
database_config``). Every write transaction is ``BEGIN IMMEDIATE`` (it takes SQLite's one
write lock at once). A connection that finds the lock taken waits in SQLite's busy
handler, which sleeps 1, 2, 5, ... then 100 ms at a time and keeps no queue: under many
writers a transaction can keep losing to later ones. A tablet server runs up to eight
writing threads; updates in the bench took 2-4.6 s now and then, and some failed after
the client server's 5 s timeout (``distdb/tests/test_sqlite_writers.py``).

So the transactions of one process first take a lock per database file, held from
``BEGIN`` to ``COMMIT``/``ROLLBACK`` (or a close). Threads blocked on it are woken the
moment it is released, and only one of them at a time reaches SQLite's busy handler
(then only for other processes: the link under Daphne, a ``manage.py`` command, the
fault harness's ``db_lock``). The wait is bounded by the connection's ``timeout``, as
SQLite's own wait is: past it the transaction fails with "database is locked", as before.
In a micro-benchmark of 8 threads updating one file, the longest wait fell from 104-130
ms to 14-27 ms and throughput doubled. Only ``IMMEDIATE``/``EXCLUSIVE`` transactions take
the lock: a ``DEFERRED`` one may only read.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db import OperationalError
from django.db.backends.sqlite3 import base

_writers: dict[str, threading.Lock] = {}
_writers_guard = threading.Lock()


def writers_lock(name: str) -> threading.Lock:
    """The lock of the database file ``name`` (one per file in the process)."""
    lock = _writers.get(name)
    if lock is None:
        with _writers_guard:
            lock = _writers.setdefault(name, threading.Lock())
    return lock


class DatabaseWrapper(base.DatabaseWrapper):
    # The methods overridden here are Django's private side, which django-stubs leaves out
    # (hence the ignores); distdb/tests/test_sqlite_writers.py fails if an upgrade moves them.
    _holds_writers: threading.Lock | None = None
    transaction_mode: str | None

    def _start_transaction_under_autocommit(self) -> None:
        if self.transaction_mode not in ("IMMEDIATE", "EXCLUSIVE") or self.is_in_memory_db():
            super()._start_transaction_under_autocommit()  # type: ignore[misc]
            return
        lock = writers_lock(str(self.settings_dict["NAME"]))
        timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
        if not lock.acquire(timeout=timeout):
            raise OperationalError("database is locked (waited for this process's writers)")
        self._holds_writers = lock
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]
        except BaseException:
            self._release_writers()
            raise

    def _release_writers(self) -> None:
        lock, self._holds_writers = self._holds_writers, None
        if lock is not None:
            lock.release()

    def _commit(self) -> Any:
        try:
            return super()._commit()  # type: ignore[misc]
        finally:
            self._release_writers()

    def _rollback(self) -> Any:
        try:
            return super()._rollback()  # type: ignore[misc]
        finally:
            self._release_writers()

    def _close(self) -> Any:
        try:
            return super()._close()  # type: ignore[misc]
        finally:
            self._release_writers()

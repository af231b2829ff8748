"""Locks that serialize ownership changes against writes on a tablet server.

* SQLite: every transaction is ``BEGIN IMMEDIATE`` (settings), so the database's single
  write lock orders them; these functions do nothing.
* PostgreSQL: writers take a *shared* transaction-level advisory lock per table,
  ownership changes (metadata, freezes) take it *exclusively* (see ``ownership``'s
  docstring for why an advisory lock rather than row locks).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from django.db import connection

CONTROL_LOCK = "distdb.tablet.control"


def _lock_id(name: str) -> int:
    """A stable signed 64-bit advisory lock id (a hash collision only serializes more)."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


def advisory_lock(names: Iterable[str], *, shared: bool) -> None:
    """Take PostgreSQL transaction-level advisory locks by name (no-op on SQLite)."""
    if connection.vendor != "postgresql":
        return
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        for name in names:  # callers pass names sorted, so lockers never wait in a cycle
            cursor.execute(f"SELECT {fn}(%s)", [_lock_id(name)])


def ownership_lock_shared(table: str) -> None:
    """Block ownership changes of ``table`` until the current transaction ends (writers)."""
    advisory_lock([f"distdb.tablet.ownership:{table}"], shared=True)


def ownership_lock_exclusive(tables: Iterable[str]) -> None:
    """Block writers of ``tables`` (and other ownership changes) until the transaction ends."""
    advisory_lock([CONTROL_LOCK], shared=False)
    advisory_lock(sorted(f"distdb.tablet.ownership:{t}" for t in set(tables)), shared=False)

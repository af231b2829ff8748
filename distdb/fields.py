"""Model fields shared by the role apps."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper


# Left unparameterized on purpose: the django-stubs plugin then types each KeyField like
# a CharField, optional where null=True. Fixing the parameters here would make every
# nullable KeyField an error, and type variables would need subscriptable fields at run
# time (django_stubs_ext.monkeypatch).
class KeyField(models.CharField):  # type: ignore[type-arg]
    """A stored row key (see ``distdb.keys``) compared in byte order on every database.

    SQLite compares TEXT with its BINARY collation (byte order of UTF-8) already;
    PostgreSQL would use the database's locale, so the column gets ``COLLATE "C"``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 300)
        super().__init__(*args, **kwargs)

    def db_type(self, connection: BaseDatabaseWrapper) -> str | None:
        base = super().db_type(connection)
        if connection.vendor == "postgresql" and base:
            return f'{base} COLLATE "C"'
        return base

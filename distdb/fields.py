"""Model fields shared by the role apps."""

from __future__ import annotations

from django.db import models


class KeyField(models.CharField):
    """A stored row key (see ``distdb.keys``) compared in byte order on every database.

    SQLite compares TEXT with its BINARY collation (byte order of UTF-8) already;
    PostgreSQL would use the database's locale, so the column gets ``COLLATE "C"``.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_length", 300)
        super().__init__(*args, **kwargs)

    def db_type(self, connection):
        base = super().db_type(connection)
        if connection.vendor == "postgresql" and base:
            return f'{base} COLLATE "C"'
        return base

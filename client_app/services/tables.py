"""Table services of the client server: list, create, resolve a table by name, change its rf."""

from __future__ import annotations

from typing import Any

from distdb.errors import MasterUnavailable, TableNotFound
from distdb.protocol import KeyType, Metadata, TableInfo

from .. import internal_client
from ..metadata_cache import metadata_cache


def table_dict(name: str, info: TableInfo) -> dict[str, Any]:
    return {"name": name, "key_type": info.key_type, "columns": info.columns, "rf": info.rf}


async def table_resolve(name: str) -> TableInfo:
    """The table's info; an unknown name refreshes the metadata once before a 404."""
    cache = metadata_cache.get()
    info = (await cache.get()).table(name)
    if info is None:
        info = (await cache.refresh()).table(name)
    if info is None:
        raise TableNotFound(f"no table {name!r}", table=name)
    return info


async def tables_list() -> list[dict[str, Any]]:
    """Every table, sorted by name, from fresh metadata (the cached copy if the master is down)."""
    cache = metadata_cache.get()
    try:
        routing = await cache.refresh()
    except MasterUnavailable:
        if cache.current is None:
            raise
        routing = cache.current
    return [
        table_dict(name, routing.metadata.tables[name]) for name in sorted(routing.metadata.tables)
    ]


async def table_get(name: str) -> dict[str, Any]:
    """One table as the API shows it (404 ``table_not_found``)."""
    return table_dict(name, await table_resolve(name))


async def table_create(
    name: str, key_type: KeyType, columns: list[str] | None, rf: int | None = None
) -> dict[str, Any]:
    """Ask the master to create a table (409 ``table_exists`` if it does) and adopt the
    result. ``rf`` None: the master's default (``DISTDB_DEFAULT_RF``)."""
    metadata = await internal_client.master_table_create(name, key_type, columns, rf)
    # The answer older than our cache and the table gone from it: trust the request.
    return _adopted(name, metadata, TableInfo(key_type=key_type, columns=columns, rf=rf or 1))


async def table_rf_set(name: str, rf: int) -> dict[str, Any]:
    """Ask the master to change a table's replication factor (404 if there is no such
    table) and adopt the metadata it answers, so this client server shows it at once."""
    metadata = await internal_client.master_table_rf_set(name, rf)
    return _adopted(name, metadata)


def _adopted(name: str, metadata: Metadata, fallback: TableInfo | None = None) -> dict[str, Any]:
    """Adopt the master's answer and show the table as the newest metadata has it (the
    master's answer if our cache is newer and no longer has it: a delete raced)."""
    routing = metadata_cache.get().adopt(metadata)
    info = routing.table(name) if routing is not None else None
    info = info or metadata.tables.get(name) or fallback
    if info is None:
        raise TableNotFound(f"no table {name!r}", table=name)
    return table_dict(name, info)

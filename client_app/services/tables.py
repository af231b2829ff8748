"""Table services of the client server: list, create, and resolve a table by name."""

from __future__ import annotations

from typing import Any

from distdb.errors import MasterUnavailable, TableNotFound
from distdb.protocol import KeyType, TableInfo

from .. import internal_client
from ..metadata_cache import metadata_cache


def table_dict(name: str, info: TableInfo) -> dict[str, Any]:
    return {"name": name, "key_type": info.key_type, "columns": info.columns}


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


async def table_create(name: str, key_type: KeyType, columns: list[str] | None) -> dict[str, Any]:
    """Ask the master to create a table (409 ``table_exists`` if it does) and adopt the result."""
    metadata = await internal_client.master_table_create(name, key_type, columns)
    routing = metadata_cache.get().adopt(metadata)
    info = routing.table(name) if routing is not None else None
    if info is None:  # the answer was older than our cache: trust the request
        info = metadata.tables.get(name) or TableInfo(key_type=key_type, columns=columns)
    return table_dict(name, info)

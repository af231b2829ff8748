"""The client server's cache of the routing metadata: which tablet server serves which key.

Loaded by the client server role (DESIGN §3). The metadata is fetched from the master
lazily on first use and again whenever a tablet server's answer shows that ours is
stale; only strictly newer versions are adopted, so a late answer carrying an old
version can never roll the cache back. Fetches are single-flight: concurrent requests
that all discover staleness wait on one ``asyncio.Lock`` and share one fetch.

``RoutingTable`` is an immutable snapshot of one metadata version with, per table, the
sorted start keys of its tablets, so a key is located with one ``bisect``.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

from distdb.protocol import Metadata, TableInfo, TabletAssignment

from . import internal_client
from .process_local import ProcessLocal


@dataclass(frozen=True)
class RoutingTable:
    """One metadata version, indexed for lookups."""

    metadata: Metadata
    _starts: dict[str, list[str]] = field(repr=False)
    _tablets: dict[str, list[TabletAssignment]] = field(repr=False)

    @classmethod
    def build(cls, metadata: Metadata) -> RoutingTable:
        by_table: dict[str, list[TabletAssignment]] = {}
        for tablet in metadata.tablets:
            by_table.setdefault(tablet.table, []).append(tablet)
        starts: dict[str, list[str]] = {}
        for table, assigned in by_table.items():
            assigned.sort(key=lambda t: t.start)
            starts[table] = [t.start for t in assigned]
        return cls(metadata, starts, by_table)

    @property
    def version(self) -> int:
        return self.metadata.version

    def table(self, name: str) -> TableInfo | None:
        return self.metadata.tables.get(name)

    def locate(self, table: str, key: str) -> TabletAssignment | None:
        """The tablet whose [start, end) holds ``key``, or None (unknown table or a gap)."""
        starts = self._starts.get(table)
        if not starts:
            return None
        i = bisect_right(starts, key) - 1
        if i < 0:
            return None
        tablet = self._tablets[table][i]
        if tablet.end is not None and key >= tablet.end:
            return None
        return tablet

    def group(
        self, table: str, items: Iterable[tuple[int, str]]
    ) -> tuple[dict[int, tuple[TabletAssignment, list[int]]], list[int]]:
        """Split (index, stored key) pairs per tablet, keeping their order.

        Returns ``{tablet position: (tablet, [indexes])}`` and the indexes of keys that
        no tablet serves in this version (a gap while metadata changes).
        """
        groups: dict[int, tuple[TabletAssignment, list[int]]] = {}
        unrouted: list[int] = []
        starts = self._starts.get(table) or []
        assigned = self._tablets.get(table) or []
        for index, key in items:
            i = bisect_right(starts, key) - 1
            tablet = assigned[i] if i >= 0 else None
            if tablet is None or (tablet.end is not None and key >= tablet.end):
                unrouted.append(index)
                continue
            entry = groups.get(i)
            if entry is None:
                groups[i] = (tablet, [index])
            else:
                entry[1].append(index)
        return groups, unrouted


class MetadataCache:
    """The process-wide metadata cache of a client server."""

    def __init__(self) -> None:
        self.current: RoutingTable | None = None
        self.fetches = 0  # completed fetches from the master; lets waiters share one
        self.fetched_at = 0.0
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def _loop_lock(self) -> asyncio.Lock:
        # asyncio.Lock binds to the loop it is first used on; Daphne runs one loop, tests
        # run one per test, so make a new lock when the loop changes.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def get(self) -> RoutingTable:
        """The current routing table, fetched from the master on first use."""
        if self.current is None:
            return await self.refresh()
        return self.current

    def adopt(self, metadata: Metadata | None) -> RoutingTable | None:
        """Adopt ``metadata`` if it is newer than ours; return the current table."""
        if metadata is not None and (
            self.current is None or metadata.version > self.current.version
        ):
            self.current = RoutingTable.build(metadata)
        return self.current

    async def refresh(self, *, min_interval_s: float = 0.0) -> RoutingTable:
        """Fetch the master's metadata (single-flight) and adopt it if newer.

        Callers that waited while another one fetched reuse that fetch. With
        ``min_interval_s``, a fetch completed that recently is considered fresh enough
        (used when a tablet is unreachable, so a dead server does not make every
        request hit the master).
        """
        seen = self.fetches
        async with self._loop_lock():
            fresh = time.monotonic() - self.fetched_at < min_interval_s
            if self.current is not None and (self.fetches != seen or fresh):
                return self.current
            metadata = await internal_client.master_metadata()
            self.fetches += 1
            self.fetched_at = time.monotonic()
            self.adopt(metadata)
        assert self.current is not None
        return self.current


metadata_cache: ProcessLocal[MetadataCache] = ProcessLocal(MetadataCache)

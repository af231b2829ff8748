"""Key-access counts per owned range and minute, for the master's key-access heatmap.

Loaded by the tablet server role: the internal API records each read, scan and write
call here (``access_record``), the master's dashboard reads the last hour through
``GET /internal/v1/key-access`` (after Cloud Bigtable's Key Visualizer: key ranges down,
time across). Cheap on purpose: a client server sends one call per tablet range, so a
call is counted once, under the range holding its first key (one bisect over a cached
list of owned ranges, refreshed every ``RANGES_TTL_S``), with its number of keys:
~5.5 µs per call measured here, against ~1 ms of CPU for the cheapest call.

Counts live in this process's memory (an hour of minutes, pruned as they age): a
restart starts the picture afresh, which a heatmap can afford. Minutes are wall-clock
(Unix time // 60): the chart is read by people against their clocks; nothing depends on it.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections.abc import Callable

from distdb import protocol
from tablet_app.models import OwnedRange

KEEP_MINUTES = 60
RANGES_TTL_S = 2.0

Span = tuple[str, str | None]


class KeyAccessLog:
    """Counts per (minute, table, range): [reads, writes]."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock, self._monotonic = clock, monotonic
        self._lock = threading.Lock()  # the internal API's worker threads record at once
        self._counts: dict[tuple[int, str, str, str | None], list[int]] = {}
        self._ranges: dict[str, tuple[list[str], list[Span]]] = {}
        self._ranges_at = float("-inf")

    def record(self, table: str, key: str, keys: int, *, write: bool) -> None:
        span = self._span(table, key)
        if span is None or keys <= 0:
            return  # not ours (the call was answered "outdated"): nothing served
        minute = int(self._clock() // 60)
        slot = (minute, table, *span)
        with self._lock:
            counts = self._counts.get(slot)
            if counts is None:
                counts = self._counts[slot] = [0, 0]
                self._prune(minute)
            counts[1 if write else 0] += keys

    def buckets(self) -> list[protocol.KeyAccessBucket]:
        """The last hour's counts, oldest minute first."""
        with self._lock:
            self._prune(int(self._clock() // 60))
            items = sorted(self._counts.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2]))
        return [
            protocol.KeyAccessBucket(
                minute=m, table=t, start=s, end=e, reads=counts[0], writes=counts[1]
            )
            for (m, t, s, e), counts in items
        ]

    def _prune(self, minute: int) -> None:
        for slot in [s for s in self._counts if s[0] <= minute - KEEP_MINUTES]:
            del self._counts[slot]

    def _span(self, table: str, key: str) -> Span | None:
        now = self._monotonic()
        if now - self._ranges_at > RANGES_TTL_S:
            ranges: dict[str, tuple[list[str], list[Span]]] = {}
            for t, start, end in OwnedRange.objects.order_by("table", "start_key").values_list(
                "table", "start_key", "end_key"
            ):
                starts, spans = ranges.setdefault(t, ([], []))
                starts.append(start)
                spans.append((start, end))
            self._ranges, self._ranges_at = ranges, now
        found = self._ranges.get(table)
        if not found:
            return None
        i = bisect_right(found[0], key) - 1
        if i < 0:
            return None
        span = found[1][i]
        return span if span[1] is None or key < span[1] else None


key_access = KeyAccessLog()


def access_record(table: str, key: str, keys: int, *, write: bool) -> None:
    """Count one served call of ``keys`` keys starting at ``key`` (stored key)."""
    key_access.record(table, key, keys, write=write)


def access_recent() -> protocol.KeyAccess:
    return protocol.KeyAccess(buckets=key_access.buckets())

"""The client server's metrics and readiness check.

Loaded by the client server role. Live counters: routing retries by reason and the
``outdated`` answers behind them (``services.engine``), circuit-breaker rejections
(``breaker``). At scrape time: the cached metadata version and each tablet server's
breaker state, read from this process's memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from distdb.metrics import Counter, ScrapeCollector

ROUTING_RETRIES = Counter(
    "distdb_routing_retries",
    "Keys sent again by the routing engine, by reason (outdated, range_frozen, unreachable).",
    ["reason"],
)
OUTDATED_ANSWERS = Counter(
    "distdb_routing_outdated_answers",
    "Keys a tablet server answered `outdated` for (this client server's metadata was old).",
)
BREAKER_REJECTED = Counter(
    "distdb_breaker_rejected_calls",
    "Calls to a tablet server failed fast because its circuit breaker was open.",
    ["server"],
)
BREAKER_OPENED = Counter(
    "distdb_breaker_opened",
    "Times a tablet server's circuit breaker opened (it timed out or a probe failed).",
    ["server"],
)

_retries = {r: ROUTING_RETRIES.labels(r) for r in ("outdated", "range_frozen", "unreachable")}


def retries_observe(reasons: Iterable[str]) -> None:
    """Count re-sent keys by the error code that sent them back (hook in the engine)."""
    for reason in reasons:
        counter = _retries.get(reason)
        if counter is not None:
            counter.inc()
        if reason == "outdated":
            OUTDATED_ANSWERS.inc()


class ClientCollector(ScrapeCollector):
    max_age_s = 0.0  # memory only: always fresh

    def families(self) -> Iterable[Any]:
        from .breaker import breakers
        from .metadata_cache import metadata_cache

        current = metadata_cache.get().current
        yield GaugeMetricFamily(
            "distdb_metadata_version",
            "The routing metadata version this client server routes with (0: none yet).",
            value=current.version if current else 0,
        )
        state = GaugeMetricFamily(
            "distdb_breaker_open",
            "1 while the circuit breaker for a tablet server is open (its keys fail fast).",
            labels=["server"],
        )
        for server, breaker in sorted(breakers.get().items()):
            state.add_metric([server], 0 if breaker.state == "closed" else 1)
        yield state


async def metadata_ready() -> None:
    """Readiness check: routing metadata is loaded (fetched from the master if not yet)."""
    from .metadata_cache import metadata_cache

    cache = metadata_cache.get()
    if cache.current is None:
        await asyncio.wait_for(cache.refresh(), 1.5)

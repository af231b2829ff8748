"""The routing engine: run per-key work on the tablets that own the keys (DESIGN §3).

Used by every key-addressed service of the client server. ``route_keys`` splits the keys
per tablet with the cached metadata, calls the tablets concurrently, keeps the final
answers and re-routes ONLY the keys that came back ``outdated`` (after adopting the newer
metadata the tablet sent, or fetching the master's) or ``range_frozen`` (a move is
committing; it lasts a moment). Retries are bounded by ``DISTDB_ROUTING_MAX_TRIES`` and the
overall ``DISTDB_ROUTING_DEADLINE_S``, with jittered exponential backoff; a key whose
retries run out gets a retryable error, it is never dropped.

A tablet server that cannot be reached fails only the keys it owns. When the connection
was never made (the request cannot have been applied) the metadata is refreshed once,
and the keys are re-sent only if they moved elsewhere; a timeout is never re-sent, as the
write may have been applied.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from pydantic import ValidationError

from distdb.errors import (
    DistdbError,
    LeaderUnavailable,
    Outdated,
    RangeFrozen,
    TabletUnavailable,
)
from distdb.protocol import Metadata, TabletAssignment

from ..internal_client import is_not_sent
from ..metadata_cache import RoutingTable, metadata_cache
from ..metrics import retries_observe

log = logging.getLogger(__name__)

# "Wait, then try again": a range being moved, or a leader that cannot serve right now
# (its lease ended: a failover may be under way, or a write is still being replicated).
WAIT_CODES = frozenset({"range_frozen", "leader_unavailable"})
RETRY_CODES = frozenset({"outdated"}) | WAIT_CODES
BACKOFF_BASE_S = 0.02
BACKOFF_CAP_S = 0.5
# A dead tablet makes each request re-check the master at most this often.
UNREACHABLE_REFRESH_S = 1.0


@dataclass
class Batch:
    """What one tablet call did with the keys (indexes into the request) it was sent."""

    done: dict[int, Any] = field(default_factory=dict)  # final answers, DistdbError included
    retry: dict[int, DistdbError] = field(default_factory=dict)  # outdated / range_frozen
    unreachable: dict[int, DistdbError] = field(default_factory=dict)  # never sent
    metadata: Metadata | None = None  # the newest metadata a tablet sent back

    def merge(self, other: Batch) -> None:
        self.done.update(other.done)
        self.retry.update(other.retry)
        self.unreachable.update(other.unreachable)
        self.metadata = newest(self.metadata, other.metadata)

    @classmethod
    def failed(cls, exc: DistdbError, indexes: Sequence[int]) -> Batch:
        """A whole call failed: classify its error for all of its keys."""
        batch = cls()
        if exc.code in RETRY_CODES:
            batch.retry = dict.fromkeys(indexes, exc)
            batch.metadata = metadata_in(exc)
        elif is_not_sent(exc):
            batch.unreachable = dict.fromkeys(indexes, exc)
        else:
            batch.done = dict.fromkeys(indexes, exc)
        return batch


# send(tablet, metadata version, indexes, timeout) -> Batch
Send = Callable[[TabletAssignment, int, list[int], float], Awaitable[Batch]]


def newest(a: Metadata | None, b: Metadata | None) -> Metadata | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b.version > a.version else a


def metadata_in(exc: DistdbError) -> Metadata | None:
    raw = exc.detail.get("metadata") if isinstance(exc.detail, dict) else None
    if raw is None:
        return None
    try:
        return Metadata.model_validate(raw)
    except ValidationError:
        return None


def backoff_s(attempt: int) -> float:
    """Equal-jitter exponential backoff: half fixed, half random, capped."""
    # int ** int is typed Any (a negative exponent gives a float), hence the annotation.
    step: float = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
    return step / 2 + random.uniform(0, step / 2)


def call_timeout_s(deadline: float) -> float:
    """One tablet call's timeout: the configured one, cut to what is left of the deadline."""
    left = deadline - asyncio.get_running_loop().time()
    return max(0.05, min(settings.DISTDB_TABLET_TIMEOUT_S, left))


async def master_reroute(
    routing: RoutingTable, table: str, *, unreachable: bool = False
) -> RoutingTable:
    """The master's metadata when ours did not help; ours while the master cannot answer.

    For an ``unreachable`` tablet a fetch done in the last ``UNREACHABLE_REFRESH_S`` is
    reused, so that a dead server does not send every request on to the master.
    """
    try:
        return await metadata_cache.get().refresh(
            min_interval_s=UNREACHABLE_REFRESH_S if unreachable else 0.0
        )
    except DistdbError:  # the master is down or refused: keep routing with ours
        log.warning("master unavailable while re-routing %s", table)
        return routing


def exhausted(error: DistdbError, tries: int) -> DistdbError:
    """The retryable error a key gets when its retries ran out."""
    if error.code == "range_frozen":
        return RangeFrozen(f"the key range was still frozen after {tries} tries")
    if error.code == "leader_unavailable":
        return LeaderUnavailable(f"the range's leader could not serve it after {tries} tries")
    return TabletUnavailable(f"could not reach the tablet serving this key after {tries} tries")


async def _guarded(
    send: Send, tablet: TabletAssignment, version: int, indexes: list[int], timeout_s: float
) -> Batch:
    try:
        return await send(tablet, version, indexes, timeout_s)
    except DistdbError as exc:
        return Batch.failed(exc, indexes)


async def route_keys(table: str, keys: Sequence[str], send: Send) -> list[Any]:
    """Run ``send`` for every stored key on its tablet; ``result[i]`` answers ``keys[i]``.

    A result is whatever ``send`` reported as done for that key, or a ``DistdbError``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.DISTDB_ROUTING_DEADLINE_S
    max_tries = settings.DISTDB_ROUTING_MAX_TRIES
    cache = metadata_cache.get()
    results: list[Any] = [None] * len(keys)
    pending = list(range(len(keys)))
    routing = await cache.get()
    attempt = 0
    while pending:
        attempt += 1
        groups, unrouted = routing.group(table, ((i, keys[i]) for i in pending))
        outcome = Batch()
        for i in unrouted:  # a gap in this version: the metadata is changing
            outcome.retry[i] = Outdated("no tablet serves this key in this metadata version")
        timeout_s = call_timeout_s(deadline)
        calls = [
            _guarded(send, tablet, routing.version, indexes, timeout_s)
            for tablet, indexes in groups.values()
        ]
        # One tablet (every point read): awaited here, without gather's task per call.
        batches = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
        for batch in batches:
            outcome.merge(batch)
        for i, value in outcome.done.items():
            results[i] = value
        if not outcome.retry and not outcome.unreachable:
            break

        before = routing.version
        routing = cache.adopt(outcome.metadata) or routing
        outdated = any(e.code == "outdated" for e in outcome.retry.values())
        frozen_again = attempt >= 2 and any(e.code in WAIT_CODES for e in outcome.retry.values())
        if (outdated and routing.version == before) or outcome.unreachable or frozen_again:
            # The tablet knew no newer version, is dead, or stays frozen (the move may have
            # committed while the source could not hear of it): ask the master, at most
            # once a second unless the tablet said "outdated".
            routing = await master_reroute(routing, table, unreachable=not outdated)
        moved = routing.version > before
        retry = dict(outcome.retry)
        for i, exc in outcome.unreachable.items():
            if moved:
                retry[i] = exc  # its keys may live elsewhere now
            else:
                results[i] = exc
        pending = sorted(retry)
        if not pending:
            break
        retries_observe(e.code if e.code in RETRY_CODES else "unreachable" for e in retry.values())
        # Keys that moved go straight to their new tablet; anything else waits a little.
        frozen = any(e.code in WAIT_CODES for e in retry.values())
        delay = 0.0 if moved and not frozen else backoff_s(attempt)
        if attempt >= max_tries or loop.time() + delay >= deadline:
            for i in pending:
                results[i] = exhausted(retry[i], attempt)
            log.warning("%d key(s) of %s failed after %d tries", len(pending), table, attempt)
            break
        if delay:
            await asyncio.sleep(delay)
    return results

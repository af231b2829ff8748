"""Coalesce concurrent reads on the client server, per tablet server (issue #12).

Loaded by the client server role (``services.rows`` sends every read through it). As
Bigtable's and HBase's clients batch: while ``DISTDB_READ_COALESCE_IN_FLIGHT`` read calls
to one tablet server are in flight, further reads for that server wait in a queue; when a
call returns, everything queued for the same table and metadata version goes out as ONE
internal multi-key read (at most ``MAX_KEYS`` keys). A read that finds a free slot is
sent at once: there is no timer, so a lone request waits for nothing (no latency at low
load), and under load one tablet round trip carries many callers' keys.

Each caller gets exactly its own answer: its found rows, its ``outdated`` keys (with the
metadata the tablet sent, which the routing engine adopts per caller) and, when the
whole call fails, its own copy of the error. An error the tablet *answered* for a
merged call (``range_frozen``: one caller's key is in a range being moved) may concern
only some of the callers, so each caller's keys are then sent again on their own; a call
that could not reach the server (unavailable, timeout) fails every caller's keys alike.
Nothing here changes what the tablet decides or how ``outdated``/``range_frozen`` are
retried: that stays in ``services.engine``.
"""

from __future__ import annotations

import asyncio
import copy
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from django.conf import settings

from distdb.errors import DistdbError, TabletUnavailable
from distdb.protocol import ReadRequest, ReadTextResponse, TabletAssignment

from .internal_client import tablet_read

MAX_KEYS = 1000  # keys per merged call: well under the tablet's body limit
# Reads of more keys than this are big enough to pay for their own call: they go straight
# to the tablet server (measured: merging 100-key reads cost batch_read throughput).
MERGE_UP_TO_KEYS = 16

# (url, server, request, timeout) -> the tablet's answer
Call = Callable[[str, str, ReadRequest, float], Awaitable[ReadTextResponse]]


@dataclass(eq=False)
class _Waiter:
    request: ReadRequest
    timeout_s: float
    future: asyncio.Future[ReadTextResponse]


@dataclass(eq=False)
class _Lane:
    """One tablet server: its calls in flight and the reads queued behind them."""

    url: str
    server: str
    in_flight: int = 0
    queue: list[_Waiter] = field(default_factory=list)


class ReadCoalescer:
    """Reads per tablet server, merged while a call to that server is in flight."""

    def __init__(self, call: Call = tablet_read, *, in_flight: int = 1) -> None:
        self.call, self.max_in_flight = call, in_flight
        self.lanes: dict[str, _Lane] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # internal calls sent (tests, diagnostics)

    async def read(
        self, tablet: TabletAssignment, request: ReadRequest, timeout_s: float
    ) -> ReadTextResponse:
        """The tablet's answer to ``request`` (rows, outdated and metadata for its keys)."""
        if len(request.keys) > MERGE_UP_TO_KEYS:
            self.calls += 1
            return await self.call(tablet.url, tablet.server, request, timeout_s)
        lane = self.lanes.get(tablet.url)
        if lane is None:
            lane = self.lanes[tablet.url] = _Lane(tablet.url, tablet.server)
        if lane.in_flight < self.max_in_flight and not lane.queue:
            lane.in_flight += 1
            try:
                return await self._send(lane, request, timeout_s)
            finally:
                lane.in_flight -= 1
                self._flush(lane)
        waiter = _Waiter(request, timeout_s, asyncio.get_running_loop().create_future())
        lane.queue.append(waiter)
        return await waiter.future

    async def _send(self, lane: _Lane, request: ReadRequest, timeout_s: float) -> ReadTextResponse:
        self.calls += 1
        return await self.call(lane.url, lane.server, request, timeout_s)

    def _flush(self, lane: _Lane) -> None:
        """Send what is queued, merged per (table, version), while slots are free."""
        while lane.queue and lane.in_flight < self.max_in_flight:
            group = self._take(lane)
            if not group:
                continue
            lane.in_flight += 1
            task = asyncio.create_task(self._send_group(lane, group))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _take(self, lane: _Lane) -> list[_Waiter]:
        """The first queued read's (table, version) group, up to MAX_KEYS keys."""
        first = lane.queue[0].request
        group: list[_Waiter] = []
        keys = 0
        rest: list[_Waiter] = []
        for waiter in lane.queue:
            r = waiter.request
            if waiter.future.done():  # its caller gave up (cancelled): nothing to send
                continue
            same = (r.table, r.meta_version, r.cells) == (
                first.table,
                first.meta_version,
                first.cells,
            )
            if same and (not group or keys + len(r.keys) <= MAX_KEYS):
                group.append(waiter)
                keys += len(r.keys)
            else:
                rest.append(waiter)
        lane.queue = rest
        return group

    async def _send_group(self, lane: _Lane, group: list[_Waiter]) -> None:
        try:
            if len(group) == 1:
                await self._answer_one(lane, group[0])
                return
            first = group[0].request
            keys = list(dict.fromkeys(k for w in group for k in w.request.keys))
            merged = ReadRequest(
                table=first.table, meta_version=first.meta_version, keys=keys, cells=first.cells
            )
            timeout_s = min(w.timeout_s for w in group)
            try:
                answer = await self._send(lane, merged, timeout_s)
            except TabletUnavailable as exc:  # the server, not a key: every caller alike
                for w in group:
                    _fail(w, exc)
                return
            except DistdbError:
                # Answered for the merged call (range_frozen: a key in a moving range) -
                # it may concern only some callers: each one's keys again, on their own.
                await asyncio.gather(*(self._answer_one(lane, w) for w in group))
                return
            except Exception as exc:  # a bug: each caller sees it rather than hanging
                for w in group:
                    _fail(w, exc)
                return
            for w in group:
                if not w.future.done():
                    w.future.set_result(split(answer, w.request.keys))
        finally:
            lane.in_flight -= 1
            self._flush(lane)

    async def _answer_one(self, lane: _Lane, waiter: _Waiter) -> None:
        try:
            answer = await self._send(lane, waiter.request, waiter.timeout_s)
        except Exception as exc:
            _fail(waiter, exc)
            return
        if not waiter.future.done():
            waiter.future.set_result(answer)


def _fail(waiter: _Waiter, exc: Exception) -> None:
    if not waiter.future.done():
        # Its own copy: callers annotate errors (key, not_sent) as they handle them.
        waiter.future.set_exception(copy.copy(exc))


def split(answer: ReadTextResponse, keys: list[str]) -> ReadTextResponse:
    """The part of a merged answer that concerns ``keys`` (in the merged answer's order)."""
    wanted = set(keys)
    rows = [row for row in answer.rows if row[0] in wanted]
    outdated = [key for key in answer.outdated if key in wanted]
    return ReadTextResponse.model_construct(
        rows=rows, outdated=outdated, metadata=answer.metadata if outdated else None
    )


_coalescers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReadCoalescer] = (
    weakref.WeakKeyDictionary()
)


def coalescer() -> ReadCoalescer | None:
    """The running event loop's coalescer, or None when coalescing is off (setting 0)."""
    in_flight: int = settings.DISTDB_READ_COALESCE_IN_FLIGHT
    if in_flight <= 0:
        return None
    loop = asyncio.get_running_loop()
    found = _coalescers.get(loop)
    if found is None:
        found = _coalescers[loop] = ReadCoalescer(in_flight=in_flight)
    return found


__all__ = ["MAX_KEYS", "MERGE_UP_TO_KEYS", "ReadCoalescer", "coalescer", "split"]

"""A circuit breaker per tablet server: fail fast on a server that stopped answering.

Loaded by the client server role; ``internal_client.tablet_call`` consults it. A tablet
server that accepts connections but does not answer (paused, swapping, wedged) would
otherwise cost every request for its keys the full call timeout (5 s). So:

* **closed** (normal): calls go through. A call that times out opens the breaker.
  Other failures do not: a refused connection or an error answer is already fast.
* **open**: calls fail at once with ``tablet_unavailable`` (503, ``Retry-After``,
  ``detail.reason = "circuit_open"``), marked never-sent so the routing engine may send
  the keys elsewhere if the metadata says they moved. Once ``open_s`` has passed, the
  next call starts ONE probe in the background (``GET /healthz`` with a short timeout)
  and still fails fast: no user request waits on a probe.
* A probe that answers closes the breaker; one that fails keeps it open for another
  ``open_s``. A call sent before the breaker opened that succeeds closes it too.
* The master's heartbeat state informs it: every ``DISTDB_BREAKER_MASTER_STATES_S`` the
  client server asks the master which tablet servers it considers down (their link went
  silent), in the background. A server newly reported down is probed at once, and its
  breaker opens if the probe gets no answer — so a dead host costs no timeout at all.
  The master's word alone opens nothing: a server whose link is down may still serve.

One sick server stays local (DESIGN §4, invariant 5): each server has its own breaker,
and only the keys it owns fail fast. State lives in this process's memory (each client
server process learns for itself; no coordination is needed for a hint).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

from django.conf import settings

from distdb.errors import DistdbError, TabletUnavailable

from .metrics import BREAKER_OPENED, BREAKER_REJECTED
from .process_local import ProcessLocal

log = logging.getLogger(__name__)
Probe = Callable[[str], Awaitable[bool]]  # (base URL) -> whether the server answered


class Breaker:
    """The breaker of one tablet server."""

    def __init__(
        self,
        server: str,
        url: str,
        *,
        open_s: float,
        probe: Probe,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server, self.url = server, url
        self.open_s = open_s
        self._probe = probe
        self._clock = clock
        self.state = "closed"  # closed | open
        self.retry_at = 0.0  # when a probe may start (open only)
        self._probing: asyncio.Task[None] | None = None

    def check(self) -> None:
        """Before a call: return if it may go, raise the fast failure if not."""
        if self.state == "closed":
            return
        now = self._clock()
        if now >= self.retry_at and (self._probing is None or self._probing.done()):
            self._probing = asyncio.get_running_loop().create_task(self._run_probe())
        BREAKER_REJECTED.labels(self.server).inc()
        err = TabletUnavailable(
            f"{self.server} is not answering (it timed out); failing fast until it does",
            server=self.server,
            reason="circuit_open",
        )
        err.retry_after_s = max(1, math.ceil(self.retry_at - now))
        # Never sent: the same mark internal_client puts on a connection never made.
        err.not_sent = True  # type: ignore[attr-defined]
        raise err

    def failed(self, exc: DistdbError) -> None:
        """After a call failed: a timeout opens the breaker."""
        if exc.detail.get("reason") == "timeout":
            self._open()

    def succeeded(self) -> None:
        self.state = "closed"

    def suspect(self) -> None:
        """The master says this server is down: probe it now; no answer opens the breaker."""
        if self.state == "closed" and (self._probing is None or self._probing.done()):
            self._probing = asyncio.get_running_loop().create_task(self._run_probe())

    def _open(self) -> None:
        if self.state == "closed":
            BREAKER_OPENED.labels(self.server).inc()
        self.state = "open"
        self.retry_at = self._clock() + self.open_s

    async def _run_probe(self) -> None:
        self.retry_at = self._clock() + self.open_s  # no second probe meanwhile
        try:
            answered = await self._probe(self.url)
        except Exception:  # noqa: BLE001 - a probe that blew up did not get an answer
            answered = False
        if answered:
            self.succeeded()
        else:
            self._open()


States = Callable[[], Awaitable[frozenset[str]]]  # the servers the master considers down


class Breakers(dict[str, Breaker]):
    """Every tablet server's breaker in this process, made on first call, and what the
    master last said about the servers' heartbeats."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self.master_down: frozenset[str] = frozenset()
        self._states_at = float("-inf")
        self._states_task: asyncio.Task[None] | None = None

    def get_for(self, server: str, url: str, probe: Probe) -> Breaker:
        breaker = self.get(server)
        if breaker is None or breaker.url != url:
            breaker = self[server] = Breaker(
                server, url, open_s=settings.DISTDB_BREAKER_OPEN_S, probe=probe
            )
            if server in self.master_down:
                breaker.suspect()
        return breaker

    def consult_master(self, states: States) -> None:
        """Refresh the master's view in the background when it is due (never waits)."""
        every = settings.DISTDB_BREAKER_MASTER_STATES_S
        if not every or self._clock() - self._states_at < every:
            return
        if self._states_task is None or self._states_task.done():
            self._states_at = self._clock()  # at the start: one refresh at a time
            self._states_task = asyncio.get_running_loop().create_task(self._refresh(states))

    async def _refresh(self, states: States) -> None:
        try:
            down = await states()
        except DistdbError as exc:  # the master is away: keep what we knew
            log.info("could not ask the master for server states: %s", exc.message)
            return
        for server in down - self.master_down:  # newly down: probe each one now
            breaker = self.get(server)
            if breaker is not None:
                breaker.suspect()
        self.master_down = down


breakers: ProcessLocal[Breakers] = ProcessLocal(Breakers)

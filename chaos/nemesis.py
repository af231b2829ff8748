"""The nemesis: faults injected into a running local cluster, chosen by a seeded RNG.

Each fault is a start action and a heal action some seconds later; several may be active
at once (at most ``max_active``). Every fault is recorded with its start and end on the
workload's clock, so the report can mark it on the latency plot and a failing seed can be
replayed: the choices depend only on the seed (the timing of the system under test does
not feed back into the RNG).

Faults (``NEMESES``):

* ``kill``: SIGKILL one process (master server, worker, beat, a tablet server or its link,
  a client server, Redis), restart it after a pause;
* ``pause``: SIGSTOP one process, SIGCONT it later (a long GC, a stalled VM);
* ``db_lock``: hold one node's SQLite write lock (``BEGIN IMMEDIATE``) for seconds, as a
  slow disk or a long transaction would;
* ``move``: force data to move — drain a random tablet server, or stop draining it, then
  rebalance now (every move runs the whole copy/catch-up/freeze/commit protocol);
* ``rebalance``: trigger a rebalance run as the beat or an operator would;
* ``partition``: cut the network between hosts (each host is a network namespace): one
  host from all others, or the hosts split in two at random; packets are dropped, not
  refused, so connections hang until their timeouts (``distdb.cluster.netns``);
* ``clock``: step one node's wall clock forward or back by seconds to minutes, as a bad
  NTP step would (monotonic clocks run on; ``chaos/native/clockshift.c``);
* ``disk``: a tablet server loses its disk — SIGKILL it, delete its database, give it a
  new empty one and restart it (replicated runs only: ``rf`` >= 2 survives one lost disk
  at a time, so this fault starts only when no other fault is active and every range has
  all its copies, and nothing else starts until it has ended).
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

log = logging.getLogger("chaos.nemesis")
NEMESES = ("kill", "pause", "db_lock", "move", "rebalance", "partition", "clock", "disk")
REPLICATED_ONLY = ("disk",)  # faults only a replicated cluster is meant to survive
NEEDS_PLACEMENT = ("partition", "clock")  # need namespaces / the clock shifter to run
CLOCK_STEP_S = (5.0, 300.0)  # how far a clock is stepped, either way


class Controls(Protocol):
    """What the nemesis needs from the cluster launcher."""

    def process_names(self) -> list[str]: ...
    def kill(self, name: str) -> None: ...
    def restart(self, name: str) -> None: ...
    def pause(self, name: str) -> None: ...
    def resume(self, name: str) -> None: ...
    def database_path(self, node_id: str) -> Path | None: ...
    def master_manage(self, *args: str, timeout_s: float = 120) -> tuple[int, str]: ...
    def tablet_ids(self) -> list[str]: ...
    def hosts(self) -> list[str]: ...
    def partition(self, side: list[str]) -> None: ...
    def heal_partitions(self) -> None: ...
    def node_ids(self) -> list[str]: ...
    def clock_step(self, node_id: str, offset_s: float) -> None: ...
    def wipe(self, node_id: str) -> None: ...
    def start_node(self, node_id: str) -> None: ...
    def fully_replicated(self) -> bool: ...


@dataclass
class Fault:
    kind: str
    target: str
    start: float
    end: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("kind", "target", "start", "end", "note")}


@dataclass
class Nemesis:
    """Runs random faults against ``controls`` until told to stop, then heals everything."""

    controls: Controls
    rng: random.Random
    now: Callable[[], float]
    kinds: tuple[str, ...] = NEMESES
    # Moves are what the safety rules are about: they are drawn three times as often.
    weights: dict[str, int] = field(default_factory=lambda: {"move": 3})
    interval_s: tuple[float, float] = (0.5, 3.0)  # between fault starts
    fault_s: tuple[float, float] = (1.0, 8.0)  # how long a fault lasts
    max_active: int = 2
    inline: bool = False  # run each fault to its end before the next (tests, replays by hand)
    faults: list[Fault] = field(default_factory=list)
    moves_triggered: int = 0
    _active: list[threading.Thread] = field(default_factory=list)
    _busy: set[str] = field(default_factory=set)  # targets with a fault on them now
    _draining: str | None = None  # the server the move nemesis drained last
    _alone: bool = False  # a fault that must run alone (``disk``) is running
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.rng.uniform(*self.interval_s)):
            # Draw every choice before looking at what is running, so the RNG's sequence
            # (and so the schedule a seed replays) does not depend on timing.
            kind = self.rng.choices(self.kinds, [self.weights.get(k, 1) for k in self.kinds])[0]
            targets = self._targets(kind)
            target = targets[self.rng.randrange(len(targets))] if targets else None
            duration = self.rng.uniform(*self.fault_s)
            variant = self.rng.random() < 0.5
            aux = self.rng.random()  # seeds a fault's own further choices (which hosts...)
            self._active = [t for t in self._active if t.is_alive()]
            if target is None or len(self._active) >= self.max_active:
                continue
            if not self._active:
                self._alone = False
            if self._alone:
                continue
            if kind == "disk":
                # Alone, on a fully replicated cluster: let the running faults end and the
                # repairs finish first (waiting does not touch the RNG: replays hold).
                for thread in self._active:
                    thread.join()
                self._active = []
                if not self._wait_fully_replicated(stop):
                    continue
                self._alone = True
            exclusive = kind in ("kill", "pause", "db_lock", "partition", "clock", "disk")
            with self._lock:
                if exclusive and target in self._busy:
                    continue
                if exclusive:
                    self._busy.add(target)
            if self.inline:
                self._one(kind, target, duration, variant, aux)
                continue
            thread = threading.Thread(
                target=self._one,
                args=(kind, target, duration, variant, aux),
                name=f"nemesis-{kind}",
            )
            thread.start()
            self._active.append(thread)
        for thread in self._active:
            thread.join()

    def _wait_fully_replicated(self, stop: threading.Event, within_s: float = 30.0) -> bool:
        deadline = time.monotonic() + within_s
        while not self.controls.fully_replicated():
            if time.monotonic() > deadline or stop.is_set():
                return False
            time.sleep(1.0)
        return True

    def _targets(self, kind: str) -> list[str]:
        if kind in ("kill", "pause"):
            return sorted(self.controls.process_names())
        if kind == "db_lock":
            return ["master", *sorted(self.controls.tablet_ids())]
        if kind in ("move", "disk"):
            return sorted(self.controls.tablet_ids())
        if kind == "partition":
            return ["network"]  # one partition at a time: healing undoes every cut
        if kind == "clock":
            return sorted(self.controls.node_ids())
        return ["master"]

    def _one(self, kind: str, target: str, duration: float, variant: bool, aux: float) -> None:
        fault = Fault(kind, target, self.now())
        with self._lock:
            self.faults.append(fault)
        try:
            getattr(self, f"_{kind}")(target, duration, variant, fault, random.Random(aux))
        except Exception as exc:  # noqa: BLE001 - a fault that failed is recorded, not fatal
            fault.note = f"{fault.note} error: {type(exc).__name__}: {exc}".strip()
            log.warning("nemesis %s on %s: %s", kind, target, exc)
        finally:
            fault.end = self.now()
            with self._lock:
                self._busy.discard(target)

    def _kill(
        self, target: str, duration: float, variant: bool, fault: Fault, rng: random.Random
    ) -> None:
        self.controls.kill(target)
        time.sleep(duration)
        self.controls.restart(target)

    def _disk(
        self, target: str, duration: float, variant: bool, fault: Fault, rng: random.Random
    ) -> None:
        """Lose ``target``'s disk; it comes back empty after ``duration`` (``variant``: at
        once, within its lease, before the master could fail it over)."""
        self.controls.wipe(target)
        fault.note = "back at once" if variant else f"back after {duration:.1f} s"
        if not variant:
            time.sleep(duration)
        self.controls.start_node(target)

    def _pause(
        self, target: str, duration: float, variant: bool, fault: Fault, rng: random.Random
    ) -> None:
        self.controls.pause(target)
        try:
            time.sleep(duration)
        finally:
            self.controls.resume(target)

    def _db_lock(
        self, target: str, duration: float, variant: bool, fault: Fault, rng: random.Random
    ) -> None:
        path = self.controls.database_path(target)
        if path is None:
            fault.note = "not SQLite: skipped"
            return
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            time.sleep(duration)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    def _partition(
        self, target: str, duration: float, variant: bool, fault: Fault, rng: random.Random
    ) -> None:
        """Isolate one host (``variant``), or split the hosts in two at random."""
        hosts = sorted(self.controls.hosts())
        if variant:
            side = [hosts[rng.randrange(len(hosts))]]
        else:
            side = sorted(rng.sample(hosts, rng.randint(1, len(hosts) - 1)))
        others = [h for h in hosts if h not in side]
        fault.note = f"{'+'.join(side)} | {'+'.join(others)}"
        self.controls.partition(side)
        try:
            time.sleep(duration)
        finally:
            self.controls.heal_partitions()

    def _clock(
        self, target: str, duration: float, variant: bool, fault: Fault, rng: random.Random
    ) -> None:
        step = rng.uniform(*CLOCK_STEP_S) * (1 if variant else -1)
        fault.note = f"wall clock {step:+.0f} s"
        self.controls.clock_step(target, step)
        try:
            time.sleep(duration)
        finally:
            self.controls.clock_step(target, 0.0)

    def _move(
        self, target: str, duration: float, variant: bool, fault: Fault, rng: random.Random
    ) -> None:
        """Drain ``target`` (everything it holds moves), or bring the drained server back
        (half of the data moves back): every move fault moves data."""
        with self._lock:
            undrain, self._draining = self._draining, None if self._draining else target
        if undrain:
            self.controls.master_manage("drain", undrain, "--undo")
            fault.note = f"undrain {undrain}; "
        else:
            self.controls.master_manage("drain", target)
            fault.note = "drain; "
        self._rebalance(target, duration, variant, fault, rng)

    def _rebalance(
        self, target: str, duration: float, variant: bool, fault: Fault, rng: random.Random
    ) -> None:
        rc, out = self.controls.master_manage("rebalance", "--no-progress", "--json")
        moved, failed = _moves(out)
        fault.note += f"{moved} moves succeeded, {failed} failed" + (
            "" if rc == 0 else f" (rc {rc})"
        )
        with self._lock:
            self.moves_triggered += moved


def _moves(out: str) -> tuple[int, int]:
    """(succeeded, failed) moves in ``rebalance --json``'s report (its last line)."""
    try:
        report = orjson.loads(out.strip().splitlines()[-1])
    except (orjson.JSONDecodeError, IndexError):
        return 0, 0
    outcomes = [m.get("outcome") for m in report.get("moves") or []]
    return outcomes.count("succeeded"), outcomes.count("failed")
